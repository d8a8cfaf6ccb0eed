"""KV over HTTP: ``meshlite agent --dev`` beside a single-member etcd, one load generator.

    python benchmarks/bench_kv_http.py [--duration-s 2] [--warmup-s 0.5] [--repeats 3]
        [--concurrency 1,16,64] [--sizes 128,4096] [--keys 1000] [--wakeups 50]
        [--client raw|httpx] [--etcd-disk] [--no-etcd] [--smoke] [--json PATH]

Two servers run as subprocesses on loopback (``_kv_cluster.Member``: own process group,
log file, always killed): ``meshlite agent --dev`` (one Raft server, in memory; its HTTP
API on a free port) and Debian's etcd as one member (``_kv_cluster.EtcdCluster(size=1)``;
its data directory on tmpfs unless ``--etcd-disk``, so that neither pays for fsync —
meshlite's ``--dev`` keeps nothing on disk).  This process is the load generator for
both, the same code: asyncio, ``concurrency`` tasks, each with its own keep-alive
connection, doing one request at a time in a closed loop.  The connection is
``_http_client.RawConnection`` by default (requests prepared in advance, answers parsed
by hand: microseconds of Python per request, so the servers are measured) or, with
``--client httpx``, an ``httpx.AsyncClient`` per task (a real client library; on two
cores it saturates first, so it measures itself as much as the servers).  The requests
are each system's own KV API over HTTP/1.1:

* meshlite: ``PUT /v1/kv/bench/kNNNN`` (the value as the body) and ``GET`` of the same
  path (Consul's JSON entry, base64 value);
* etcd: ``POST /v3/kv/put`` and ``POST /v3/kv/range`` on its v3 JSON gateway (base64 key
  and value in a JSON body, bodies prepared in advance).

Keys are drawn uniformly from ``--keys`` names (filled before any read); ``mix`` is 50%
gets, 50% puts.  Each cell (operation × value size × concurrency) runs ``--repeats`` times,
the systems alternating which goes first, over a ``--duration-s`` window after a
``--warmup-s``; throughput counts the requests that started and ended in the window.  The
table prints the median ops/s, p50/p99 latency, the server's CPU use over the window
(``/proc``: a share of one core), and the meshlite/etcd ratio.

Blocking-query wake-up: a ``GET /v1/kv/watch?index=I&wait=10s`` is held; a ``PUT`` of
the key is sent; the wake-up is from sending the put to the blocked read's answer
arriving (``--wakeups`` times; p50 and p90).  Beside it, etcd's nearest equivalent:
a ``/v3/watch`` stream on the gateway, from sending the put to the event arriving.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The sibling modules, importable once their directory is on the path.
from _http_client import Call, Connection, HttpxConnection, RawConnection
from _kv_cluster import etcd_binary
from _kv_http_systems import (
    HOST,
    Etcd,
    Meshlite,
    System,
    cpu_s,
    etcd_wakeups,
    meshlite_wakeups,
)

OPS = ("put", "get", "mix")
CLIENTS: dict[str, type[Connection]] = {"raw": RawConnection, "httpx": HttpxConnection}
FILL_CONNECTIONS = 16  # connections that write every key before a value size's cells


async def _send(conn: Connection, request: Call) -> None:
    status, body = await conn.send(request)
    if not request.ok(status, body):
        raise OSError(f"{request.method} {request.path}: {status} {body[:200]!r}")


# ------------------------------------------------------------------------------ load


@attrs.frozen
class Cell:
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu: float  # server CPU seconds per window second (1.0 = one core)


async def fill(system: System, keys: int, value: bytes) -> None:
    puts, _gets = system.calls(keys, value)
    conns = [RawConnection(HOST, system.port) for _ in range(FILL_CONNECTIONS)]

    async def writer(w: int) -> None:
        for request in puts[w::FILL_CONNECTIONS]:
            await _send(conns[w], request)

    try:
        await asyncio.gather(*(writer(w) for w in range(FILL_CONNECTIONS)))
    finally:
        for conn in conns:
            await conn.aclose()


async def run_cell(system: System, op: str, concurrency: int, value: bytes,
                   args: argparse.Namespace, seed: int) -> Cell:  # fmt: skip
    puts, gets = system.calls(args.keys, value)
    latencies: list[float] = []
    counted = errors = 0
    clock = time.perf_counter
    t0 = clock() + args.warmup_s
    t1 = t0 + args.duration_s

    async def worker(w: int, conn: Connection) -> None:
        nonlocal counted, errors
        rng = random.Random(seed * 7919 + w)
        while (start := clock()) < t1:
            i = rng.randrange(args.keys)
            write = op == "put" or (op == "mix" and rng.random() < 0.5)
            try:
                await _send(conn, puts[i] if write else gets[i])
            except (OSError, httpx.HTTPError):
                errors += start >= t0
                await asyncio.sleep(0.01)
                continue
            end = clock()
            if start >= t0:
                latencies.append(end - start)
                counted += end <= t1

    async def cpu_at(when: float, out: list[float]) -> None:
        await asyncio.sleep(max(0.0, when - clock()))
        out.append(cpu_s(system.pid))

    cpu: list[float] = []
    conns = [CLIENTS[args.client](HOST, system.port) for _ in range(concurrency)]
    try:
        await asyncio.gather(
            cpu_at(t0, cpu), cpu_at(t1, cpu), *(worker(w, c) for w, c in enumerate(conns))
        )
    finally:
        for conn in conns:
            await conn.aclose()
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1000 if latencies \
            else float("nan")  # fmt: skip

    return Cell(counted / args.duration_s, pct(0.5), pct(0.99), errors,
                (cpu[1] - cpu[0]) / args.duration_s)  # fmt: skip


# ------------------------------------------------------------------------------ report


def _fmt(cell: Cell | None) -> str:
    if cell is None:
        return f"{'-':>10} {'-':>7} {'-':>7} {'-':>5}"
    return (f"{cell.ops_per_s:>10,.0f} {cell.p50_ms:>7.2f} {cell.p99_ms:>7.2f} "
            f"{cell.server_cpu:>5.2f}")  # fmt: skip


def _median(cells: list[Cell]) -> Cell:
    def med(f: str) -> float:
        return float(statistics.median(getattr(c, f) for c in cells))

    return Cell(med("ops_per_s"), med("p50_ms"), med("p99_ms"), sum(c.errors for c in cells),
                med("server_cpu"))  # fmt: skip


def _pcts(values: list[float]) -> str:
    if not values:
        return "n/a"
    s = sorted(values)
    p90 = s[min(len(s) - 1, int(len(s) * 0.9))]
    return f"p50 {statistics.median(s):6.2f} ms   p90 {p90:6.2f} ms   (n={len(s)})"


async def measure(systems: list[System], args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"cells": [], "wakeup_ms": {}}
    header = (f"{'op':<4} {'value':>6} {'conc':>4} | " + " | ".join(
        f"{s.name + ' ops/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'cpu':>5}" for s in systems
    ) + (" | meshlite/etcd" if len(systems) == 2 else ""))  # fmt: skip
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        value = random.Random(size).randbytes(size)
        for system in systems:
            await fill(system, args.keys, value)
        for op in OPS:
            for conc in args.concurrency:
                runs: dict[str, list[Cell]] = {s.name: [] for s in systems}
                for r in range(args.repeats):
                    for system in systems if r % 2 == 0 else systems[::-1]:
                        cell = await run_cell(system, op, conc, value, args, seed=r)
                        runs[system.name].append(cell)
                cells = {name: _median(cs) for name, cs in runs.items()}
                line = f"{op:<4} {size:>6} {conc:>4} | " + " | ".join(
                    _fmt(cells[s.name]) for s in systems
                )
                if len(systems) == 2 and cells["etcd"].ops_per_s > 0:
                    line += f" | {cells['meshlite'].ops_per_s / cells['etcd'].ops_per_s:>6.2f}x"
                print(line, flush=True)
                shape = {"op": op, "value_bytes": size, "concurrency": conc}
                results["cells"].append({**shape, **{k: attrs.asdict(v) for k, v in cells.items()}})
    print()
    for system in systems:
        if isinstance(system, Meshlite):
            wake = await meshlite_wakeups(system, args.wakeups)
            what = "meshlite blocking query (GET ?index) woken by a PUT"
        else:
            wake = await etcd_wakeups(system, args.wakeups)
            what = "etcd /v3/watch event after a put (gateway stream)"
        results["wakeup_ms"][system.name] = wake
        print(f"{what:<54} {_pcts(wake)}")
    return results


# ------------------------------------------------------------------------------ main


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration-s", type=float, default=2.0)
    p.add_argument("--warmup-s", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--concurrency", type=_ints, default=[1, 16, 64])
    p.add_argument("--sizes", type=_ints, default=[128, 4096])
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--wakeups", type=int, default=50)
    p.add_argument("--client", choices=sorted(CLIENTS), default="raw",
                   help="the load generator's HTTP client (see the module docstring)")  # fmt: skip
    p.add_argument("--no-etcd", action="store_true", help="meshlite only")
    p.add_argument("--etcd-disk", action="store_true", help="etcd's data on disk (fsync)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--smoke", action="store_true", help="tiny parameters, for the tests")
    args = p.parse_args(argv)
    if args.smoke:
        args.duration_s, args.warmup_s, args.repeats = 0.3, 0.1, 1
        args.concurrency, args.sizes, args.keys, args.wakeups = [1, 4], [128], 20, 3
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    use_etcd = not args.no_etcd
    if use_etcd and etcd_binary() is None:
        print("etcd not found (apt-get install -y etcd-server); use --no-etcd", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="kvbench-http-") as tmp:
        meshlite = Meshlite(Path(tmp))
        etcd = Etcd(args.etcd_disk) if use_etcd else None
        try:
            meshlite.start()
            if etcd is not None:
                etcd.start()
            systems: list[System] = [meshlite] + ([etcd] if etcd is not None else [])
            where = "disk (fsync)" if args.etcd_disk else "tmpfs"
            print(f"KV over HTTP, {sys.platform}, {os.cpu_count()} CPUs; meshlite agent --dev "
                  f"(in memory)" + (f" vs {etcd.cluster.version()}, 1 member, data on {where}"
                                    if etcd else ""))  # fmt: skip
            client = "raw asyncio HTTP/1.1" if args.client == "raw" else \
                f"httpx {httpx.__version__}"  # fmt: skip
            print(f"load: {client}, one keep-alive connection per task; {args.keys} keys; "
                  f"median of {args.repeats} x {args.duration_s:g} s (+{args.warmup_s:g} s "
                  "warm-up); cpu = server CPU in cores; wake-ups through httpx")  # fmt: skip
            print()
            results = asyncio.run(measure(systems, args))
        finally:
            meshlite.member.stop()
            if etcd is not None:
                etcd.cluster.close()
    if args.json is not None:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         **results}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
