"""Plot convergence and failure detection against N, next to the log(N) expectation.

    python benchmarks/plot_scale.py --membership benchmarks/results/membership_vs_serf-*.json \\
        --sim benchmarks/results/sim_convergence.json --out docs/scale.png

Left: real processes on this machine (``bench_membership_vs_serf.py``): for each N, the
seconds until every member saw a SIGKILLed member dead (failure detection) and until
every member saw a newcomer (join dissemination, from the newcomer's ready line), for
meshlite and Serf, medians over the runs found.  Right: the simulator
(``bench_sim_convergence.py --json``): gossip rounds for one new member to reach every
peer.  Each meshlite series gets the least-squares fit ``a + b * log2(N)`` drawn dashed:
SWIM's suspicion timeout grows with log N (memberlist scales it by ``log10(N)``) and
infection-style gossip reaches everyone in O(log N) rounds, so points on that curve are
the expected shape, and points bending above it would not be.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--membership", type=Path, nargs="*", default=[])
    parser.add_argument("--sim", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/scale.png"))
    args = parser.parse_args()

    fig, (real, sim) = plt.subplots(1, 2, figsize=(12, 4.8))
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

    if args.sim is not None:
        rows = json.loads(args.sim.read_text())["rows"]
        points = [(int(r["n"]), float(r["one_join_rounds"])) for r in rows]
        ns, ys = zip(*points, strict=True)
        sim.plot(ns, ys, "-o", color="tab:blue", label="meshlite (simulated): one join")
        draw_fit(sim, points, "tab:blue")
        sim.plot(ns, [math.log2(n) for n in ns], ":", color="black", label="log2 N")
    sim.set_xscale("log", base=2)
    sim.set_xlabel("peers N (deterministic simulation, LAN timing)")
    sim.set_ylabel("gossip rounds until every peer knows")
    sim.set_title("Simulation: dissemination of one piece of news")
    sim.legend(fontsize=8)
    sim.grid(True, alpha=0.3)

    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
