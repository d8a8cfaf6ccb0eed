"""Failover: how long writes stop when the Raft leader is SIGKILLed (3 servers, loopback).

    python benchmarks/bench_failover.py [--rounds 10] [--interval-s 0.01] [--deadline-s 1]
        [--settle-s 2] [--out-dir benchmarks/results] [--keep-logs] [--quick]

Three ``meshlite agent --server --bootstrap-expect 3 --data-dir DIR`` processes (default
LAN gossip timing, default Raft timing, encrypted, each also serving the HTTP API on its
own port) and this process as the client: an embedded non-server ``meshlite.Mesh``
joined to them, with one writer doing ``await mesh.kv.put(key, seq)`` every
``--interval-s`` (each put bounded by ``--deadline-s``; a put that misses it is
abandoned and the next one starts), and a watcher sampling ``mesh.leader()`` every 5 ms.
All times are ``time.monotonic()`` in this process.

Each round: wait until the cluster is steady (a leader known, the three servers alive,
no failed write in the last second, at least ``--settle-s`` after the last restart);
SIGKILL the leader's process group (the leader as the client sees it); measure

* **writes back**: from the kill to the completion of the first successful put that
  *started* after the kill (a put in flight at the kill is not counted, even if it
  succeeds: it may have committed before the kill);
* **leader known by the client**: from the kill to ``mesh.leader()`` naming another
  server (this rides on gossip: the new leader announces itself in its member meta);
* **elected (servers)**: from the kill to the first survivor whose
  ``GET /v1/status/leader`` names a new leader (polled every 20 ms from a thread);

then restart the killed server on its port and data dir.  Afterwards every key is read
back, and any acknowledged write whose value is missing is counted (it must be 0).
Prints each round and median / p90 / max.  ``--quick``: 2 rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import attrs
from _kv_cluster import CLUSTER_LABEL, MeshliteServers, meshlite_binary

import meshlite
from meshlite._core.raft import RaftConfig

ROOT = Path(__file__).resolve().parent.parent
KEYS = 100  # the writer cycles over this many keys
STEADY_TIMEOUT_S = 90.0  # start-up (elections, Python start) or recovery after a restart
RECOVER_TIMEOUT_S = 30.0  # a failover that takes longer is reported as failed
LEADER_WATCH_S = 0.005
HTTP_POLL_S = 0.02


@attrs.define
class Client:
    """What the writer and the leader watcher saw."""

    records: list[tuple[float, float, bool]] = attrs.Factory(list)  # start, end, ok
    errors: dict[str, int] = attrs.Factory(dict)
    acked: dict[str, int] = attrs.Factory(dict)  # key -> highest acknowledged seq
    leaders: list[tuple[float, str | None]] = attrs.Factory(list)
    stop: bool = False


async def writer(mesh: meshlite.Mesh, c: Client, interval_s: float, deadline_s: float) -> None:
    seq = 0
    while not c.stop:
        seq += 1
        key = f"failover/k{seq % KEYS:03d}"
        start = time.monotonic()
        ok = False
        try:
            with anyio.fail_after(deadline_s):
                ok = await mesh.kv.put(key, str(seq).encode())
        except Exception as exc:  # every failure counts, by type
            name = type(exc).__name__
            c.errors[name] = c.errors.get(name, 0) + 1
        c.records.append((start, time.monotonic(), ok))
        if ok:
            c.acked[key] = seq
        await anyio.sleep(max(0.0, start + interval_s - time.monotonic()))


async def watch_leader(mesh: meshlite.Mesh, c: Client) -> None:
    last: object = object()
    while not c.stop:
        member = mesh.leader()
        name = None if member is None else member.name
        if name != last:
            c.leaders.append((time.monotonic(), name))
            last = name
        await anyio.sleep(LEADER_WATCH_S)


async def steady(mesh: meshlite.Mesh, servers: MeshliteServers, c: Client, since: float) -> str:
    """Wait until the cluster is steady (module docstring); returns the leader's name."""
    deadline = time.monotonic() + STEADY_TIMEOUT_S
    while time.monotonic() < deadline:
        servers.check_alive()
        now = time.monotonic()
        leader = mesh.leader()
        alive = {m.name for m in mesh.members() if m.server and m.status == "alive"}
        recent = [r for r in c.records if r[1] > now - 1.0]
        if (
            leader is not None
            and alive >= set(servers.names)
            and now - since >= 0
            and recent
            and all(ok for _, _, ok in recent)
        ):
            return str(leader.name)
        await anyio.sleep(0.05)
    raise servers.failure(f"the cluster was not steady within {STEADY_TIMEOUT_S:.0f} s")


def poll_elected(
    servers: MeshliteServers, survivors: list[int], before: str, done: threading.Event
) -> float | None:
    """First time a survivor's ``/v1/status/leader`` names a leader other than ``before``."""
    while not done.is_set():
        for i in survivors:
            leader = servers.http_leader(i, timeout_s=0.5)
            if leader not in (None, "", before):
                return time.monotonic()
        done.wait(HTTP_POLL_S)
    return None


async def one_round(
    mesh: meshlite.Mesh, servers: MeshliteServers, c: Client, settle_until: float
) -> dict[str, Any]:
    old = await steady(mesh, servers, c, settle_until)
    i = servers.index(old)
    survivors = [j for j in range(servers.size) if j != i]
    before = servers.http_leader(survivors[0]) or ""
    done = threading.Event()
    t_kill = servers.members[i].kill()
    elected = asyncio.ensure_future(
        asyncio.to_thread(poll_elected, servers, survivors, before, done)
    )
    back = None
    deadline = t_kill + RECOVER_TIMEOUT_S
    while back is None and time.monotonic() < deadline:
        back = next((e for s, e, ok in reversed(c.records) if ok and s >= t_kill), None)
        await anyio.sleep(0.005)
    done.set()
    t_elected = await elected

    def learned() -> float | None:
        return next((t for t, name in c.leaders if t >= t_kill and name not in (None, old)), None)

    # Writes may come back before the client's gossip view names the new leader (a client
    # that cannot reach the old leader asks another server at once): keep watching.
    while learned() is None and time.monotonic() < deadline:  # noqa: ASYNC110 (polled list)
        await anyio.sleep(0.005)
    known = learned()
    gap = [r for r in c.records if r[0] >= t_kill and (back is None or r[1] <= back)]
    servers.restart(i)
    return {
        "killed": old,
        "writes_back_s": None if back is None else back - t_kill,
        "leader_known_s": None if known is None else known - t_kill,
        "elected_s": None if t_elected is None else t_elected - t_kill,
        "failed_puts": sum(1 for _, _, ok in gap if not ok),
    }


async def verify(mesh: meshlite.Mesh, c: Client) -> int:
    """Acknowledged writes missing after everything: keys whose value is below the ack."""
    missing = 0
    # A copy: the writer may still see its last put acknowledged while we read.
    for key, seq in list(c.acked.items()):
        entry = await mesh.kv.get(key)
        if entry is None or int(entry.value) < seq:
            missing += 1
    return missing


async def run(args: argparse.Namespace, servers: MeshliteServers) -> dict[str, Any]:
    mesh = meshlite.Mesh(
        "failover-client", "127.0.0.1:0", join=servers.join, key=servers.key, cluster=CLUSTER_LABEL
    )
    rounds: list[dict[str, Any]] = []
    c = Client()
    async with mesh, anyio.create_task_group() as tg:
        tg.start_soon(writer, mesh, c, args.interval_s, args.deadline_s)
        tg.start_soon(watch_leader, mesh, c)
        settle_until = 0.0
        try:
            for r in range(args.rounds):
                result = await one_round(mesh, servers, c, settle_until)
                settle_until = time.monotonic() + args.settle_s
                rounds.append(result)
                print(
                    f"  round {r + 1}: killed {result['killed']}:"
                    f" writes back {_s(result['writes_back_s'])},"
                    f" leader known {_s(result['leader_known_s'])},"
                    f" elected {_s(result['elected_s'])}, {result['failed_puts']} failed puts",
                    flush=True,
                )
            await steady(mesh, servers, c, settle_until)
        finally:
            c.stop = True
        missing = await verify(mesh, c)
    ok = sum(1 for r in c.records if r[2])
    return {
        "rounds": rounds,
        "missing_acked": missing,
        "puts_ok": ok,
        "puts": len(c.records),
        "errors": c.errors,
    }


def _s(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f} s"


def _stats(values: list[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):.3f} | {p90:.3f} | {ordered[-1]:.3f}"


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    rounds = result["rounds"]
    print(f"\n{len(rounds)} failovers; seconds from SIGKILL of the leader:")
    print("| measure | median | p90 | max | rounds without |")
    print("|---|---:|---:|---:|---:|")
    for key, label in (
        ("writes_back_s", "writes succeed again"),
        ("leader_known_s", "new leader known by the client"),
        ("elected_s", "new leader elected (survivors' /v1/status/leader)"),
    ):
        values = [r[key] for r in rounds if r[key] is not None]
        print(f"| {label} | {_stats(values)} | {len(rounds) - len(values)} |")
    failed = statistics.median(r["failed_puts"] for r in rounds) if rounds else 0
    print(
        f"failed puts during the gaps: median {failed:g} (each bounded by --deadline-s"
        f" {args.deadline_s:g}); errors by type: {result['errors']}"
    )
    print(
        f"puts: {result['puts_ok']} acknowledged of {result['puts']};"
        f" acknowledged writes missing afterwards: {result['missing_acked']}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--interval-s", type=float, default=0.01)
    ap.add_argument("--deadline-s", type=float, default=1.0)
    ap.add_argument("--settle-s", type=float, default=2.0)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--keep-logs", action="store_true")
    ap.add_argument("--quick", action="store_true", help="2 rounds (smoke)")
    args = ap.parse_args()
    if args.quick:
        args.rounds = 2
    print("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    if meshlite_binary() is None:
        print("skipped: the meshlite script is not installed beside this Python")
        return 0
    cfg = RaftConfig()
    lo = cfg.election_timeout_s
    print(
        f"Raft timing: tick {cfg.tick_s:g} s, election timeout {lo:.2f}-{2 * lo:.2f} s"
        f" ({cfg.election_ticks}-{2 * cfg.election_ticks} ticks), heartbeat every"
        f" {cfg.heartbeat_ticks} tick(s); pre-vote {cfg.pre_vote}, check-quorum {cfg.check_quorum}"
    )
    logs = args.out_dir / "logs" if args.keep_logs else None
    with MeshliteServers(keep_logs=logs, http=True) as servers:
        result = asyncio.run(run(args, servers))
    report(result, args)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.out_dir / f"failover-{stamp}.json"
    out.write_text(json.dumps({"argv": sys.argv, **result}, indent=1))
    print(f"raw results: {out}")
    complete = all(r["writes_back_s"] is not None for r in result["rounds"])
    return 0 if complete and result["missing_acked"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
