"""A/B of replicated KV writes: the servers of this tree against those of another revision.

    python benchmarks/ab_kv_writes.py --base REV [--writers 16] [--repeats 6]
        [--duration-s 5] [--warmup-s 1]

On this 2-core machine the same code gives writes per second that vary by about ±20 %
from one fresh cluster to the next, so comparing two separate ``bench_kv_writes.py`` runs
cannot show a 10-20 % change.  This alternates the two versions instead: every repeat
starts a fresh cluster of three ``meshlite agent --server`` processes running ``--base``
(checked out with ``git worktree`` into a temporary directory and put first on the
servers' ``PYTHONPATH``), measures it, then does the same with this working tree's
servers.  The load is ``bench_kv_writes.py``'s meshlite load (a non-server mesh in this
process, running this tree's code for both, ``--writers`` closed-loop writers).

Printed per writer count: every run, the medians of writes per second, p50 latency and
the servers' CPU per write, and head/base ratios.  The worktree is removed at the end,
whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _kv_cluster import MeshliteServers
from _kv_load import LoadShape
from bench_kv_writes import _measure_meshlite

ROOT = Path(__file__).resolve().parent.parent


def worktree(rev: str, where: Path) -> None:
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(where), rev],
        check=True,
        capture_output=True,
        text=True,
    )


def one_run(tree: Path | None, shape: LoadShape) -> tuple[float, float, float]:
    """(writes/s, p50 ms, servers' CPU ms per write) of a fresh cluster of ``tree``."""
    if tree is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = str(tree)
    try:
        with MeshliteServers() as servers:
            (result,) = asyncio.run(_measure_meshlite(servers, [shape]))
    finally:
        os.environ.pop("PYTHONPATH", None)
    assert result.samples is not None
    before, after = result.samples
    cpu_s = sum(b - a for a, b in zip(before, after, strict=True))
    per_write_ms = 1000 * cpu_s / result.ops if result.ops else float("nan")
    return result.ops_per_s, result.p50_ms, per_write_ms


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="git revision whose servers are the baseline")
    ap.add_argument("--writers", default="16", help="comma-separated writer counts")
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--duration-s", type=float, default=5.0)
    ap.add_argument("--warmup-s", type=float, default=1.0)
    args = ap.parse_args()
    try:
        writers = [int(w) for w in args.writers.split(",")]
    except ValueError:
        ap.error(f"--writers must be comma-separated integers, not {args.writers!r}")
    if min(writers) < 1 or args.repeats < 1 or args.duration_s <= 0 or args.warmup_s < 0:
        ap.error("--writers, --repeats and --duration-s must be positive, --warmup-s >= 0")
    with tempfile.TemporaryDirectory(prefix="ab-kv-") as tmp:
        base = Path(tmp) / "base"
        try:
            worktree(args.base, base)
        except subprocess.CalledProcessError as exc:
            print(
                f"ab_kv_writes: cannot check out {args.base!r}: {exc.stderr.strip()}",
                file=sys.stderr,
            )
            return 2
        try:
            runs: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
            for rep in range(args.repeats):
                for w in writers:
                    shape = LoadShape(writers=w, duration_s=args.duration_s, warmup_s=args.warmup_s)
                    for label, tree in (("base", base), ("head", None)):
                        got = one_run(tree, shape)
                        runs.setdefault((label, w), []).append(got)
                        print(
                            f"repeat {rep + 1} writers {w} {label}: {got[0]:,.0f} writes/s,"
                            f" p50 {got[1]:.2f} ms, servers {got[2]:.2f} ms CPU per write",
                            flush=True,
                        )
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                check=False,
                capture_output=True,
            )
    print(f"\nbase {args.base}, head the working tree; medians of {args.repeats} repeats:")
    print("| writers | version | writes/s | p50 ms | servers' CPU ms per write |")
    print("|---:|---|---:|---:|---:|")
    for w in writers:
        med = {
            label: [statistics.median(x[i] for x in runs[(label, w)]) for i in range(3)]
            for label in ("base", "head")
        }
        for label in ("base", "head"):
            ops, p50, cpu = med[label]
            print(f"| {w} | {label} | {ops:,.0f} | {p50:.2f} | {cpu:.2f} |")
        (bo, bp, bc), (ho, hp, hc) = med["base"], med["head"]
        print(f"| {w} | head/base | {ho / bo:.2f}x | {hp / bp:.2f}x | {hc / bc:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
