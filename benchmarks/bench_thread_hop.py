"""The cost of one hop to a worker thread and back: anyio.to_thread vs meshlite's SerialThread.

    python benchmarks/bench_thread_hop.py [--hops 5000] [--repeats 5] [--backend asyncio]

A Raft server hands every ``Ready``'s sqlite save to a thread (``_raft_node``), so under
write load it makes hundreds of these hops a second per server.  Each repeat times
``--hops`` sequential ``await``s of a job that does nothing, first through
``anyio.to_thread.run_sync`` (the baseline), then through ``SerialThread.run``, in the same
process; printed are the medians over repeats of wall time and CPU time (this process,
both threads) per hop, and the SerialThread/anyio ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.to_thread

from meshlite._serial_thread import SerialThread


def nothing() -> None:
    return None


async def timed(hop: Callable[[], Awaitable[None]], hops: int) -> tuple[float, float]:
    """Wall and CPU microseconds per hop."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(hops):
        await hop()
    return 1e6 * (time.perf_counter() - wall) / hops, 1e6 * (time.process_time() - cpu) / hops


async def main(hops: int, repeats: int) -> None:
    worker = SerialThread("bench-serial")
    runs: dict[str, list[tuple[float, float]]] = {"anyio.to_thread": [], "SerialThread": []}
    try:
        for _ in range(repeats):  # interleaved, so drift in the machine hits both alike
            runs["anyio.to_thread"].append(
                await timed(lambda: anyio.to_thread.run_sync(nothing), hops)
            )
            runs["SerialThread"].append(await timed(lambda: worker.run(nothing), hops))
    finally:
        worker.close()
    med = {
        name: (statistics.median(w for w, _ in r), statistics.median(c for _, c in r))
        for name, r in runs.items()
    }
    print(f"{hops} hops x {repeats} repeats; medians per hop:")
    print("| way | wall us | CPU us |")
    print("|---|---:|---:|")
    for name, (wall, cpu) in med.items():
        print(f"| {name} | {wall:.1f} | {cpu:.1f} |")
    base, ours = med["anyio.to_thread"], med["SerialThread"]
    print(f"| SerialThread / anyio | {ours[0] / base[0]:.2f}x | {ours[1] / base[1]:.2f}x |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hops", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    args = ap.parse_args()
    if args.hops < 1 or args.repeats < 1:
        ap.error("--hops and --repeats must be at least 1")
    anyio.run(main, args.hops, args.repeats, backend=args.backend)
