"""In-process KV reads on a server: ``mesh.kv.local`` and ``mesh.kv.get`` against a dict.

    python benchmarks/bench_kv_local_reads.py [--keys 10000] [--calls 200000]
        [--async-calls 20000] [--repeats 5] [--quick]

One process, one single-server mesh (``Mesh(server=True, bootstrap_expect=1)``, in-memory
Raft storage, loopback) holding ``--keys`` keys with 128-byte values written through
``mesh.kv.put``.  Then, in the same run:

* ``dict[key]``: a plain dict lookup of the same keys — the baseline;
* ``mesh.kv.local(key)``: the synchronous stale read of this server's replica;
* ``await mesh.kv.get(key, consistency="stale")``, ``await mesh.kv.get(key)`` (default:
  the leader answers) and ``consistency="consistent"`` (ReadIndex: trivial with one
  voter), each timed inside the event loop around the ``await``;
* ``await`` of a no-op coroutine: what any async call costs at least.

Each call is timed on its own with ``perf_counter_ns`` (the clock's own overhead,
measured by timing nothing the same way, is subtracted); keys are visited round-robin.
Prints p50 and p99 per case, median of ``--repeats``, and the ratio to the dict p50.
``--quick``: 200 keys, 2,000 calls, 1 repeat.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
from anyio.from_thread import start_blocking_portal

import meshlite

READY_TIMEOUT_S = 30.0  # a single server elects itself after one election timeout (~1 s)
WRITERS = 64  # concurrent puts while filling the store


def _overhead_ns(n: int) -> float:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        t0 = clock()
        t1 = clock()
        samples.append(t1 - t0)
    return statistics.median(samples)


def time_sync(fn: Callable[[str], object], keys: list[str], calls: int) -> tuple[float, float]:
    """(p50, p99) in ns of ``fn(key)``, call by call, clock overhead subtracted."""
    clock = time.perf_counter_ns
    base = _overhead_ns(min(calls, 100_000))
    n = len(keys)
    samples = []
    for i in range(calls):
        key = keys[i % n]
        t0 = clock()
        fn(key)
        t1 = clock()
        samples.append(t1 - t0 - base)
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


async def time_async(
    fn: Callable[[str], Awaitable[object]], keys: list[str], calls: int
) -> tuple[float, float]:
    clock = time.perf_counter_ns
    base = _overhead_ns(min(calls, 100_000))
    n = len(keys)
    samples = []
    for i in range(calls):
        key = keys[i % n]
        t0 = clock()
        await fn(key)
        t1 = clock()
        samples.append(t1 - t0 - base)
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


async def fill(mesh: meshlite.Mesh, keys: list[str], value: bytes) -> float:
    """Wait for leadership, then put every key; returns the seconds the puts took."""
    with anyio.fail_after(READY_TIMEOUT_S):
        while True:
            try:
                if await mesh.kv.put("bench/ready", b"1"):
                    break
            except meshlite.MeshliteError:
                await anyio.sleep(0.1)
    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for w in range(WRITERS):

            async def put_slice(w: int = w) -> None:
                for key in keys[w::WRITERS]:
                    await mesh.kv.put(key, value)

            tg.start_soon(put_slice)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--async-calls", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke)")
    args = ap.parse_args()
    if args.quick:
        args.keys, args.calls, args.async_calls, args.repeats = 200, 2000, 2000, 1
    print("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    keys = [f"bench/k{i:05d}" for i in range(args.keys)]
    value = bytes(range(128))
    plain = dict.fromkeys(keys, value)
    results: dict[str, list[tuple[float, float]]] = {}
    with start_blocking_portal() as portal:
        mesh = meshlite.Mesh(
            "kvreads", "127.0.0.1:0", server=True, bootstrap_expect=1, profile="local"
        )
        with portal.wrap_async_context_manager(mesh):
            fill_s = portal.call(fill, mesh, keys, value)
            assert mesh.kv.local(keys[-1]) is not None, "the last key is missing"
            kv = mesh.kv

            async def noop(_key: str) -> None:
                return None

            async def stale(key: str) -> object:
                return await kv.get(key, consistency="stale")

            async def consistent(key: str) -> object:
                return await kv.get(key, consistency="consistent")

            async_cases: dict[str, tuple[Callable[[str], Awaitable[object]], int]] = {
                "await noop()": (noop, args.async_calls),
                'await kv.get(key, consistency="stale")': (stale, args.async_calls),
                "await kv.get(key)  (default)": (kv.get, args.async_calls),
                'await kv.get(key, consistency="consistent")': (
                    consistent,
                    args.async_calls // 4 or 1,
                ),
            }
            for _ in range(args.repeats):
                results.setdefault("dict[key]", []).append(
                    time_sync(plain.__getitem__, keys, args.calls)
                )
                results.setdefault("kv.local(key)", []).append(
                    time_sync(kv.local, keys, args.calls)
                )
                for label, (fn, calls) in async_cases.items():
                    results.setdefault(label, []).append(portal.call(time_async, fn, keys, calls))
    print(
        f"{args.keys} keys (128-byte values) put in {fill_s:.2f} s by {WRITERS} writers;"
        f" medians of {args.repeats} repeat(s)"
    )
    base = statistics.median(p for p, _ in results["dict[key]"])
    for label, samples in results.items():
        p50 = statistics.median(p for p, _ in samples)
        p99 = statistics.median(q for _, q in samples)
        ratio = p50 / base if base > 0 else float("nan")
        print(
            f"{label:46} p50 {p50 / 1000:9.3f} us   p99 {p99 / 1000:9.3f} us"
            f"   x{ratio:8.1f} of dict p50"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
