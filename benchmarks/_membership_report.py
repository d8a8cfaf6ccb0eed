"""Medians, meshlite/serf ratios, the markdown table and the JSON file of the benchmark.

Theory of operation
-------------------
Each run of ``bench_membership_vs_serf.py`` is one dict of measurements (``None`` where a
phase did not complete in its time bound).  :func:`summarise` takes, per (N, system), the
median of each metric over the runs that produced it and counts the runs that did not; the
ratio is meshlite's median over serf's (above 1 means meshlite is slower/costlier).
"""

from __future__ import annotations

import json
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _gossip_systems import GossipSystem

__all__ = ["METRICS", "machine_info", "print_table", "summarise", "write_json"]

# (key in a run's dict, column title, format)
METRICS: list[tuple[str, str, str]] = [
    ("join_s", "join s", "{:.2f}"),
    ("detect_s", "detect s", "{:.2f}"),
    ("false_failures_quiet", "false fails (quiet)", "{:g}"),
    ("false_failures_total", "false fails (run)", "{:g}"),
    ("cpu_s_per_member_min", "CPU s/member/min", "{:.3f}"),
    ("bytes_per_member_s", "B/s/member", "{:.0f}"),
    ("udp_bytes_per_member_s", "UDP B/s", "{:.0f}"),
    ("tcp_bytes_per_member_s", "TCP B/s", "{:.0f}"),
    ("rss_mib_median", "RSS MiB", "{:.1f}"),
    ("startup_s", "start-up s", "{:.2f}"),
    ("join_after_ready_s", "join after ready s", "{:.2f}"),
    ("suspects_quiet", "suspect events (quiet)", "{:g}"),
]
_COMPLETION = ("join_s", "detect_s")


def summarise(
    runs: Sequence[dict[str, Any]], systems: list[str], sizes: list[int]
) -> dict[str, Any]:
    """``{"N": {"system": {metric: median, "runs": k, "incomplete": {...}}, "ratio": {...}}}``."""
    out: dict[str, Any] = {}
    for n in sizes:
        per_n: dict[str, Any] = {}
        for system in systems:
            mine = [r for r in runs if r["n"] == n and r["system"] == system]
            per_n[system] = _medians(mine)
        if "serf" in per_n and "meshlite" in per_n:
            per_n["ratio"] = _ratios(per_n["meshlite"], per_n["serf"])
        out[str(n)] = per_n
    return out


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    medians: dict[str, Any] = {"runs": len(runs)}
    for key, _title, _fmt in METRICS:
        values = [r[key] for r in runs if r.get(key) is not None]
        medians[key] = statistics.median(values) if values else None
    medians["incomplete"] = {k: sum(r.get(k) is None for r in runs) for k in _COMPLETION}
    medians["errors"] = [r["error"] for r in runs if "error" in r]
    return medians


def _ratios(mesh: dict[str, Any], serf: dict[str, Any]) -> dict[str, float | None]:
    ratios: dict[str, float | None] = {}
    for key, _title, _fmt in METRICS:
        a, b = mesh.get(key), serf.get(key)
        ratios[key] = a / b if a is not None and b not in (None, 0) else None
    return ratios


_TABLE = ["join_s", "detect_s", "false_failures_quiet", "cpu_s_per_member_min",
          "bytes_per_member_s", "rss_mib_median", "startup_s"]  # fmt: skip


def print_table(summary: dict[str, Any], systems: list[str], sizes: list[int]) -> None:
    titles = {k: (t, f) for k, t, f in METRICS}
    print("| N | system | " + " | ".join(titles[k][0] for k in _TABLE) + " | runs (incomplete) |")
    print("|---|---|" + "---:|" * len(_TABLE) + "---|")
    for n in sizes:
        per_n = summary[str(n)]
        for system in systems:
            row = per_n[system]
            cells = [_cell(row.get(k), titles[k][1]) for k in _TABLE]
            bad = sum(row["incomplete"].values())
            print(f"| {n} | {system} | " + " | ".join(cells) + f" | {row['runs']} ({bad}) |")
        if "ratio" in per_n:
            cells = [_cell(per_n["ratio"].get(k), "{:.2f}x") for k in _TABLE]
            print(f"| {n} | meshlite/serf | " + " | ".join(cells) + " | |")


def _cell(value: object, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


def machine_info(systems: list[GossipSystem]) -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {s.name: s.version() for s in systems},
    }


def write_json(out_dir: Path, stamp: str, payload: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"membership_vs_serf-{stamp}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    return path
