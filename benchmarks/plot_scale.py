"""Plot convergence and failure detection against N, next to the log(N) expectation.

    python benchmarks/plot_scale.py --membership benchmarks/results/membership_vs_serf-*.json \\
        --sim benchmarks/results/sim_convergence.json \\
        --model benchmarks/results/swim_model.json --out docs/scale.png

Left: real processes on this machine (``bench_membership_vs_serf.py``): for each N, the
seconds until every member saw a SIGKILLed member dead (failure detection) and until
every member saw a newcomer (join dissemination, from the newcomer's ready line), for
meshlite and Serf, medians over the runs found.  Middle: the simulator
(``bench_sim_convergence.py --json``): gossip rounds for one new member to reach every
peer; with ``--model`` (``bench_swim_model.py --json``) also the protocol-level model
(``swim_model.py``) from 50 to 10,000+ peers, one join and one catalog record, and the
real core's numbers it was validated against.  Right (with ``--model``): seconds until
every peer declared a crashed one dead, real core in the simulator and model, beside the
Lifeguard floor ``probe_interval + min suspicion timeout`` (``4 * log10 N`` probe
intervals).  Each meshlite series gets the least-squares fit ``a + b * log2(N)`` drawn
dashed: SWIM's suspicion timeout grows with log N (memberlist scales it by ``log10(N)``)
and infection-style gossip reaches everyone in O(log N) rounds, so points on that curve
are the expected shape, and points bending above it would not be.

Needs matplotlib (``pip install -e '.[bench]'``); not used by the tests.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from meshlite._core.config import SwimConfig


def fit_log2(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares ``a + b * log2(n)`` through ``points``."""
    xs = [math.log2(n) for n, _ in points]
    ys = [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = 0.0 if sxx == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - b * mx, b


def membership_series(paths: list[Path]) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """(system, metric) -> [(N, median seconds)] over every run in ``paths``."""
    values: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for path in paths:
        for run in json.loads(path.read_text())["runs"]:
            for metric in ("detect_s", "join_after_ready_s"):
                if run.get(metric) is not None:
                    values[(run["system"], metric, int(run["n"]))].append(float(run[metric]))
    series: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for (system, metric, n), got in sorted(values.items()):
        series[(system, metric)].append((n, statistics.median(got)))
    return series


def draw_fit(ax: Any, points: list[tuple[int, float]], color: str) -> None:
    if len(points) < 2:
        return
    a, b = fit_log2(points)
    lo, hi = min(n for n, _ in points), max(n for n, _ in points)
    ns = [lo * (hi / lo) ** (i / 50) for i in range(51)]
    ax.plot(ns, [a + b * math.log2(n) for n in ns], "--", color=color, linewidth=1,
            label=f"fit {a:.2f} + {b:.2f}·log2 N")  # fmt: skip


MODEL_LABEL = "model (numpy), validated vs real core at N≤1000"
LAN = SwimConfig.lan()


def floor_s(n: float) -> float:
    """The earliest a crash can be declared: one failed probe, then Lifeguard's minimum
    suspicion timeout (``suspicion.py: suspicion_timeout_s``), LAN profile."""
    min_s = LAN.suspicion_mult * max(1.0, math.log10(n)) * LAN.probe_interval_s
    return LAN.probe_interval_s + min_s


def model_series(path: Path) -> dict[str, Any]:
    """From ``bench_swim_model.py --json``: model medians per N (validation and scale
    rows), the real-core medians per N, and the gossip interval."""
    data = json.loads(path.read_text())
    model: dict[int, dict[str, float]] = {}
    core: dict[int, dict[str, float]] = {}
    for row in data.get("validation", []):
        model[int(row["n"])] = row["model"]
        core[int(row["n"])] = row["core"]
    for row in data.get("rows", []):
        model[int(row["n"])] = row
    interval = next((r["gossip_interval_s"] for r in data.get("rows", [])), 0.2)
    return {"model": dict(sorted(model.items())), "core": dict(sorted(core.items())),
            "gossip_interval_s": interval}  # fmt: skip


def points_of(
    rows: dict[int, dict[str, float]], key: str, scale: float = 1.0
) -> list[tuple[int, float]]:
    return [(n, r[key] / scale) for n, r in rows.items() if r.get(key) is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--membership", type=Path, nargs="*", default=[])
    parser.add_argument("--sim", type=Path)
    parser.add_argument("--model", type=Path, help="bench_swim_model.py --json output")
    parser.add_argument("--out", type=Path, default=Path("docs/scale.png"))
    args = parser.parse_args()

    panels = 3 if args.model is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels, 5.2))
    real, sim = axes[0], axes[1]
    series = membership_series(args.membership)
    styles = {"meshlite": ("tab:blue", "o"), "serf": ("tab:gray", "s")}
    names = {"detect_s": "failure detected by all", "join_after_ready_s": "join seen by all"}
    for (system, metric), points in sorted(series.items()):
        color, marker = styles.get(system, ("tab:red", "x"))
        style = "-" if metric == "detect_s" else ":"
        ns, ys = zip(*points, strict=True)
        real.plot(ns, ys, style, marker=marker, color=color, label=f"{system}: {names[metric]}")
        if system == "meshlite" and metric == "detect_s":
            draw_fit(real, points, color)
    real.set_xscale("log", base=2)
    real.set_xlabel("members N (real processes, LAN timing, one machine)")
    real.set_ylabel("seconds")
    real.set_title("Real processes: failure detection and join dissemination")
    real.legend(fontsize=8)
    real.grid(True, alpha=0.3)

    all_ns: list[int] = []
    if args.sim is not None:
        rows = json.loads(args.sim.read_text())["rows"]
        points = [(int(r["n"]), float(r["one_join_rounds"])) for r in rows]
        ns, ys = zip(*points, strict=True)
        sim.plot(ns, ys, "-o", color="tab:blue", label="real core (simulated, polled): one join")
        draw_fit(sim, points, "tab:blue")
        all_ns += ns
    if args.model is not None:
        ms = model_series(args.model)
        g = ms["gossip_interval_s"]
        for key, what, color in (("join_all_s", "one join", "tab:orange"),
                                 ("user_all_s", "one catalog record", "tab:green")):  # fmt: skip
            core_pts = points_of(ms["core"], key, g)
            if core_pts:
                ns, ys = zip(*core_pts, strict=True)
                sim.plot(ns, ys, "s", color=color, markerfacecolor="none", markersize=8,
                         label=f"real core (simulated, event times): {what}")  # fmt: skip
            pts = points_of(ms["model"], key, g)
            ns, ys = zip(*pts, strict=True)
            sim.plot(ns, ys, "-D", color=color, markersize=5, label=f"{MODEL_LABEL}: {what}")
            draw_fit(sim, pts, color)
            all_ns += ns
    if all_ns:
        lo, hi = min(all_ns), max(all_ns)
        grid = [lo * (hi / lo) ** (i / 50) for i in range(51)]
        sim.plot(grid, [math.log2(n) for n in grid], ":", color="black", label="log2 N")
    sim.set_xscale("log", base=2)
    sim.set_xlabel("peers N (simulation and model, LAN timing)")
    sim.set_ylabel("gossip rounds (200 ms) until every peer knows")
    sim.set_title("Dissemination of one piece of news")
    sim.legend(fontsize=7)
    sim.grid(True, alpha=0.3)

    if args.model is not None:
        det = axes[2]
        ms = model_series(args.model)
        core_pts = points_of(ms["core"], "detect_all_s")
        if core_pts:
            ns, ys = zip(*core_pts, strict=True)
            det.plot(ns, ys, "s", color="tab:blue", markerfacecolor="none", markersize=8,
                     label="real core (simulated, event times)")  # fmt: skip
        real_pts = series.get(("meshlite", "detect_s"), [])
        if real_pts:
            ns, ys = zip(*real_pts, strict=True)
            det.plot(ns, ys, "o", color="tab:gray", label="meshlite: real processes (left)")
        pts = points_of(ms["model"], "detect_all_s")
        ns, ys = zip(*pts, strict=True)
        det.plot(ns, ys, "-D", color="tab:orange", markersize=5, label=MODEL_LABEL)
        draw_fit(det, pts, "tab:orange")
        first = points_of(ms["model"], "detect_first_s")
        fns, fys = zip(*first, strict=True)
        det.plot(fns, fys, ":D", color="tab:orange", markersize=3, alpha=0.7,
                 label="model: first peer to declare it dead")  # fmt: skip
        lo = min([n for n, _ in real_pts] + list(ns))
        hi = max(ns)
        grid = [lo * (hi / lo) ** (i / 50) for i in range(51)]
        det.plot(grid, [floor_s(n) for n in grid], ":", color="black",
                 label="probe interval + min suspicion (1 + 4·log10 N s)")  # fmt: skip
        det.set_xscale("log", base=2)
        det.set_xlabel("peers N (LAN profile)")
        det.set_ylabel("seconds until every peer declared it dead")
        det.set_title("Failure detection of one crashed peer")
        det.legend(fontsize=7)
        det.grid(True, alpha=0.3)

    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
