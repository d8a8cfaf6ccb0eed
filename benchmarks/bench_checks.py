"""CPU cost of many passing callable health checks in one process (meshlite._check_runner).

    python benchmarks/bench_checks.py [--checks 1000] [--interval-s 10] [--seconds 60]
                                      [--kind sync|async] [--backend asyncio|trio]
                                      [--spread] [--smoke]

The issue's budget: 1,000 passing callable checks at 10 s intervals cost under 5 % of one
core.  The process first idles on the same event loop for ``--seconds`` (the baseline),
then runs the checks: after every check has run once (the registration burst is not the
steady state), process CPU time (all threads: sync callables run on worker threads) is
sampled over windows of one interval for ``--seconds``.  Printed: CPU % of one core per
window (median and max), the baseline, the net cost, CPU per check run, and the net
median as a fraction of the 5 % budget.  By default all checks are added at once, so their
runs come in one burst per interval (the case of an agent loading its config); ``--spread``
adds them evenly over one interval, as services registered over time are, which costs
more per run (no batching of thread hand-offs and loop wake-ups).  ``--smoke`` is a few
seconds with small numbers.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable

import anyio

from meshlite._check_runner import CheckRunner
from meshlite._health import CallableCheck, Status

BUDGET_PCT = 5.0


def cpu_pct_windows(seconds: float, window_s: float) -> list[float]:
    """CPU % of one core in consecutive windows of ``window_s`` over ``seconds`` (sync)."""
    samples = []
    for _ in range(max(1, round(seconds / window_s))):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        time.sleep(window_s)  # only ever called from a worker thread, see measure()
        samples.append(100.0 * (time.process_time() - cpu0) / (time.perf_counter() - wall0))
    return samples


async def measure(seconds: float, window_s: float) -> list[float]:
    # Sampled from a thread that sleeps, so the sampling itself adds no loop wake-ups.
    return await anyio.to_thread.run_sync(cpu_pct_windows, seconds, window_s)


async def idle(seconds: float, window_s: float) -> list[float]:
    return await measure(seconds, window_s)


def make_check(kind: str, counter: itertools.count[int]) -> Callable[[], object]:
    if kind == "async":

        async def healthy_async() -> bool:
            next(counter)
            return True

        return healthy_async

    def healthy() -> bool:
        next(counter)
        return True

    return healthy


async def with_checks(args: argparse.Namespace) -> tuple[list[float], int, float]:
    counter = itertools.count()
    fn = make_check(args.kind, counter)
    changes: list[str] = []
    async with CheckRunner(lambda cid, s, o: changes.append(cid), lambda cid: None) as runner:
        for i in range(args.checks):
            runner.add(f"c{i}", CallableCheck(fn, interval_s=args.interval_s, timeout_s=5))
            if args.spread:
                await anyio.sleep(args.interval_s / args.checks)
        with anyio.fail_after(60):
            while len(changes) < args.checks:  # noqa: ASYNC110 - every check has run once
                await anyio.sleep(0.05)
        # Added at once, the runs come in one burst per interval: start the windows half an
        # interval later, so that no window boundary cuts a burst.
        await anyio.sleep(0 if args.spread else args.interval_s / 2)
        start_runs, start = next(counter), time.perf_counter()
        samples = await measure(args.seconds, args.interval_s)
        runs, wall = next(counter) - start_runs - 1, time.perf_counter() - start
        assert all(runner.state(c)[0] is Status.PASSING for c in runner.ids())
    return samples, runs, wall


def report(
    args: argparse.Namespace, base: list[float], load: list[float], runs: int, wall: float
) -> None:
    base_med, load_med = statistics.median(base), statistics.median(load)
    net = max(0.0, load_med - base_med)
    cpu_per_run_us = (
        (statistics.mean(load) - statistics.mean(base)) / 100 * wall / max(runs, 1) * 1e6
    )
    print(
        f"checks={args.checks} interval_s={args.interval_s:g} kind={args.kind} "
        f"backend={args.backend} spread={args.spread} seconds={args.seconds:g} "
        f"windows={len(load)}"
    )
    print(f"baseline (idle loop)   CPU % of one core: median {base_med:.3f}  max {max(base):.3f}")
    print(f"with checks            CPU % of one core: median {load_med:.3f}  max {max(load):.3f}")
    print(
        f"net cost of the checks CPU % of one core: {net:.3f}  "
        f"(budget {BUDGET_PCT:g} %: {net / BUDGET_PCT:.3f} of it)"
    )
    print(
        f"check runs: {runs} in {wall:.1f} s ({runs / wall:.1f}/s), "
        f"CPU per run: {cpu_per_run_us:.1f} us"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=1000)
    parser.add_argument("--interval-s", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--kind", choices=["sync", "async"], default="sync")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--spread", action="store_true", help="add checks over one interval")
    parser.add_argument("--smoke", action="store_true", help="a few seconds, small numbers")
    args = parser.parse_args()
    if args.smoke:
        args.checks, args.interval_s, args.seconds = 100, 0.5, 1.0
    base = anyio.run(idle, args.seconds, args.interval_s, backend=args.backend)
    load, runs, wall = anyio.run(with_checks, args, backend=args.backend)
    report(args, base, load, runs, wall)


if __name__ == "__main__":
    main()
