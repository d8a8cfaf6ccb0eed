"""Replicated KV write throughput: 3 meshlite servers against 3 etcd members, same load.

    python benchmarks/bench_kv_writes.py [--systems etcd,meshlite] [--writers 16]
        [--duration-s 10] [--warmup-s 2] [--repeats 3] [--keys 1000] [--value-bytes 128]
        [--out-dir benchmarks/results] [--keep-logs] [--quick]

Both clusters run on 127.0.0.1 with three members, each a separate process with its own
data dir (fsync on: both systems' defaults), started fresh for every repeat and killed
and removed afterwards (``_kv_cluster.py``).  The load (``_kv_load.py``) is the same for
both: ``--writers`` concurrent writers, each putting a ``--value-bytes`` value under one of
``--keys`` keys chosen at random, in a closed loop, for ``--duration-s`` seconds after a
``--warmup-s`` warm-up; it runs in this process, on asyncio.

* **etcd** (Debian ``etcd-server``): one keep-alive HTTP connection per writer to the
  leader's v3 JSON gateway, ``POST /v3/kv/put``.
* **meshlite**: three ``meshlite agent --server --bootstrap-expect 3 --data-dir DIR``
  (LAN timing, encrypted); this process embeds a non-server ``meshlite.Mesh`` joined to
  them, and every writer calls ``await mesh.kv.put(key, value)`` (forwarded over the
  encrypted mesh to the leader).

Repeats are interleaved (repeat 1: every system, then repeat 2 ...).  Printed: medians
over repeats of ops/s and p50/p99 latency, the CPU the servers and the load generator
used in the window (in cores: 1.0 = one core busy), and meshlite/etcd ratios.  Raw
results go to ``--out-dir`` as JSON.  ``--quick``: 1 repeat of 2 s at 4 writers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import attrs
from _kv_cluster import CLUSTER_LABEL, EtcdCluster, MeshliteServers, etcd_binary, meshlite_binary
from _kv_load import EtcdHttp, LoadResult, LoadShape, Put, run_load

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("etcd", "meshlite")
# Waiting for a fresh cluster to accept its first write: elections plus Python start-up.
READY_TIMEOUT_S = 60.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def unavailable(system: str) -> str | None:
    if system == "etcd" and etcd_binary() is None:
        return "etcd not installed (apt-get install -y etcd-server etcd-client)"
    if system == "meshlite" and meshlite_binary() is None:
        return "the meshlite script is not installed beside this Python"
    return None


async def _measure_etcd(cluster: EtcdCluster, shapes: list[LoadShape]) -> list[LoadResult]:
    leader = cluster.wait_leader(READY_TIMEOUT_S)
    port = cluster.client_ports[leader]
    pids = [m.proc.pid for m in cluster.members if m.proc is not None]
    results = []
    conns: list[EtcdHttp] = []

    async def make_put(_w: int) -> Put:
        conn = EtcdHttp("127.0.0.1", port)
        await conn.connect()
        conns.append(conn)
        return conn.put

    for shape in shapes:
        try:
            results.append(await run_load(make_put, shape, lambda: [cpu_seconds(p) for p in pids]))
        finally:
            for conn in conns:
                await conn.close()
            conns.clear()
    return results


async def _wait_writable(mesh: Any, servers: MeshliteServers) -> float:
    """Retry a put until one succeeds; returns the seconds it took."""
    t0 = time.monotonic()
    last: BaseException | None = None
    while time.monotonic() - t0 < READY_TIMEOUT_S:
        servers.check_alive()
        try:
            async with asyncio.timeout(5.0):
                if await mesh.kv.put("bench/ready", b"1"):
                    return time.monotonic() - t0
        except Exception as exc:  # not ready yet: retried, last one reported
            last = exc
        await asyncio.sleep(0.2)
    raise servers.failure(f"no meshlite write succeeded within {READY_TIMEOUT_S:.0f} s: {last!r}")


async def _measure_meshlite(servers: MeshliteServers, shapes: list[LoadShape]) -> list[LoadResult]:
    import meshlite

    pids = [m.proc.pid for m in servers.members if m.proc is not None]
    name = f"kvload-{os.getpid()}"
    mesh = meshlite.Mesh(
        name, "127.0.0.1:0", join=servers.join, key=servers.key, cluster=CLUSTER_LABEL
    )
    async with mesh:
        ready_s = await _wait_writable(mesh, servers)
        print(
            f"  meshlite: first write accepted {ready_s:.1f} s after the client joined", flush=True
        )

        async def make_put(_w: int) -> Put:
            async def put(key: str, value: bytes) -> None:
                if not await mesh.kv.put(key, value):
                    raise RuntimeError("put returned False")

            return put

        results = []
        for shape in shapes:
            results.append(await run_load(make_put, shape, lambda: [cpu_seconds(p) for p in pids]))
            servers.check_alive()
        return results


def run_system(system: str, shapes: list[LoadShape], logs: Path | None) -> list[LoadResult]:
    if system == "etcd":
        with EtcdCluster(keep_logs=logs) as etcd:
            return asyncio.run(_measure_etcd(etcd, shapes))
    with MeshliteServers(keep_logs=logs) as servers:
        return asyncio.run(_measure_meshlite(servers, shapes))


def _row(r: LoadResult) -> dict[str, Any]:
    row = attrs.asdict(r)
    if r.samples is not None:
        before, after = r.samples
        per_member = [(b - a) / r.window_s for a, b in zip(before, after, strict=True)]
        row["server_cores"] = sum(per_member)
        row["busiest_server_cores"] = max(per_member)
    row["loadgen_cores"] = r.loadgen_cpu_s / r.window_s
    return row


def summarize(runs: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, float]]:
    keys = (
        "ops_per_s",
        "p50_ms",
        "p99_ms",
        "server_cores",
        "busiest_server_cores",
        "loadgen_cores",
    )
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in runs:
        if "error" not in run:
            groups.setdefault((run["system"], run["writers"]), []).append(run)
    out = {}
    for group, rows in groups.items():
        med = {k: statistics.median(r.get(k, float("nan")) for r in rows) for k in keys}
        med["errors"] = sum(r["errors"] for r in rows)
        med["runs"] = len(rows)
        out[group] = med
    return out


def print_table(summary: dict[tuple[str, int], dict[str, float]], writers: list[int]) -> None:
    print(
        "| writers | system | ops/s | p50 ms | p99 ms | errors | servers, cores"
        " | busiest server, cores | load generator, cores | runs |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for w in writers:
        for system in SYSTEMS:
            m = summary.get((system, w))
            if m is None:
                continue
            print(
                f"| {w} | {system} | {m['ops_per_s']:,.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f}"
                f" | {m['errors']:.0f} | {m['server_cores']:.2f} | {m['busiest_server_cores']:.2f}"
                f" | {m['loadgen_cores']:.2f} | {m['runs']:.0f} |"
            )
        e, ml = summary.get(("etcd", w)), summary.get(("meshlite", w))
        if e and ml:
            print(
                f"| {w} | meshlite/etcd | {ml['ops_per_s'] / e['ops_per_s']:.2f}x"
                f" | {ml['p50_ms'] / e['p50_ms']:.2f}x | {ml['p99_ms'] / e['p99_ms']:.2f}x"
                " | | | | | |"
            )


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--systems", default="etcd,meshlite")
    ap.add_argument("--writers", default="16", help="comma-separated, e.g. 1,16,64")
    ap.add_argument("--duration-s", type=float, default=10.0)
    ap.add_argument("--warmup-s", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--value-bytes", type=int, default=128)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--keep-logs", action="store_true", help="copy member logs to OUT_DIR/logs")
    ap.add_argument("--quick", action="store_true", help="1 repeat, 2 s, 4 writers (smoke)")
    args = ap.parse_args()
    if args.quick:
        args.writers, args.duration_s, args.warmup_s, args.repeats = "4", 2.0, 0.5, 1
    return args


def main() -> int:
    args = parse_args()
    writers = [int(w) for w in args.writers.split(",")]
    systems = [s for s in args.systems.split(",") if s]
    for s in systems:
        if s not in SYSTEMS:
            sys.exit(f"unknown system {s!r}; expected some of {', '.join(SYSTEMS)}")
    print("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    print(
        f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()},"
        f" Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}"
    )
    for s in list(systems):
        why = unavailable(s)
        if why:
            print(f"{s}: skipped: {why}")
            systems.remove(s)
    shapes = [
        LoadShape(w, args.duration_s, args.warmup_s, args.keys, args.value_bytes) for w in writers
    ]
    logs = args.out_dir / "logs" if args.keep_logs else None
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for system in systems:
            print(f"repeat {repeat + 1}/{args.repeats}: {system} ...", flush=True)
            try:
                results = run_system(system, shapes, logs)
            except Exception as exc:  # reported, the other runs go on
                print(f"  {system} failed: {exc}", flush=True)
                runs.append({"system": system, "repeat": repeat, "writers": 0, "error": str(exc)})
                continue
            for r in results:
                runs.append({"system": system, "repeat": repeat, **_row(r)})
                print(
                    f"  {r.writers} writers: {r.ops_per_s:,.0f} ops/s, p50 {r.p50_ms:.2f} ms,"
                    f" p99 {r.p99_ms:.2f} ms, {r.errors} errors",
                    flush=True,
                )
    summary = summarize(runs)
    print(
        f"\nmedians of {args.repeats} repeat(s), {args.duration_s:g} s windows,"
        f" {args.keys} keys, {args.value_bytes}-byte values:"
    )
    print_table(summary, writers)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.out_dir / f"kv_writes-{stamp}.json"
    out.write_text(json.dumps({"argv": sys.argv, "runs": runs}, indent=1))
    print(f"raw results: {out}")
    failed = [r for r in runs if "error" in r]
    return 1 if failed and len(failed) == len(runs) else 0


if __name__ == "__main__":
    sys.exit(main())
