"""Gossip membership, side by side in one run: meshlite agent vs HashiCorp Serf.

Theory of operation
-------------------
For each cluster size N, repeat and system (interleaved, so background load hits both
alike), one run starts N members as separate processes on 127.0.0.1 (distinct ports, LAN
timing defaults, encrypted) and measures, from the members' own log lines as the harness
reads them (``_gossip_harness.py``; parsers in ``_gossip_systems.py``):

1. warm-up: a seed, then N-2 members joining it one after another, until each sees all;
2. join convergence: the N-th member starts last; the time from its spawn until the last of
   the others logs it as joined (process start-up included; ``startup_s`` says how much);
3. a quiet window (``--quiet-s``): CPU seconds per member per minute (``/proc/PID/stat``),
   bytes sent per member per second (UDP+TCP on ``lo``, iptables owner-gid counters), and
   false failures: failed/dead events about members nobody killed;
4. failure detection: SIGKILL one member; the time until every other logs it failed/dead.

Medians over ``--repeats`` and meshlite/serf ratios are printed as a markdown table and
written as JSON to ``benchmarks/results/``.  Every wait is bounded; every child process
group is killed in ``finally``; the iptables chain is removed in ``finally``.

    .venv/bin/python benchmarks/bench_membership_vs_serf.py --sizes 10,30,60 --quiet-s 60
    .venv/bin/python benchmarks/bench_membership_vs_serf.py --smoke --systems meshlite
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from _gossip_harness import ByteCounters, Cluster, cpu_seconds, rss_mib
from _gossip_systems import SYSTEMS, GossipSystem, Kind, Spec
from _kv_cluster import port_free
from _membership_report import machine_info, print_table, summarise, write_json

HERE = Path(__file__).resolve().parent
# Bounds on each phase.  Serf/memberlist LAN suspicion at N=60 starts at
# 6 * 4 * log10(60) * 1 s ~ 43 s before confirmations shrink it, hence 120 s to detect.
WARM_TIMEOUT_BASE_S = 30.0
WARM_TIMEOUT_PER_MEMBER_S = 1.0
JOIN_TIMEOUT_S = 60.0
DETECT_TIMEOUT_S = 120.0
# Gossip ports come from 20000-29999, below Linux's ephemeral range (32768+), one block
# of 200 per run: N gossip ports, then serf's RPC ports at +100.
PORT_FIRST = 20000
PORT_LAST = 29800
PORT_BLOCK = 200
RPC_OFFSET = 100
# One group id per member slot, for the traffic counters; offset by our pid so two
# harnesses on one machine do not share counters.
GID_BASE = 60000 + (os.getpid() % 50) * 100


def _specs(n: int, run_no: int, with_gids: bool) -> list[Spec]:
    blocks = (PORT_LAST - PORT_FIRST) // PORT_BLOCK
    for attempt in range(blocks):  # bounded: every block at most once
        base = PORT_FIRST + ((run_no + attempt) % blocks) * PORT_BLOCK
        ports = [base + i for i in range(n)] + [base + RPC_OFFSET + i for i in range(n)]
        if all(port_free(p) for p in ports):
            gids = [GID_BASE + i if with_gids else None for i in range(n)]
            return [Spec(f"m{i:02d}", base + i, base + RPC_OFFSET + i, gids[i]) for i in range(n)]
    raise RuntimeError(f"no free block of {n} ports in {PORT_FIRST}-{PORT_LAST}")


# ------------------------------------------------------------------------------ phases


def _warm_up(cluster: Cluster, specs: list[Spec]) -> dict[str, Any]:
    """Start the seed and then each member in turn (waiting for each to be ready)."""
    t0 = time.monotonic()
    seed = specs[0]
    not_ready = []
    for spec in specs:
        cluster.spawn(spec, None if spec is seed else seed)
        if not cluster.wait_ready(spec.name):
            not_ready.append(spec.name)
    k = len(specs)
    timeout_s = WARM_TIMEOUT_BASE_S + WARM_TIMEOUT_PER_MEMBER_S * k
    ok = cluster.wait_for(lambda: len(cluster.join_pairs) >= k * (k - 1), timeout_s)
    return {
        "warm_converged": ok,
        "warm_s": round(time.monotonic() - t0, 3),
        "warm_pairs_seen": len(cluster.join_pairs),
        "warm_pairs_expected": k * (k - 1),
        "not_ready": not_ready,
    }


def _measure_join(cluster: Cluster, specs: list[Spec]) -> dict[str, Any]:
    new, others = specs[-1], {s.name for s in specs[:-1]}
    t0 = cluster.spawn(new, specs[0])
    ok = cluster.wait_for(
        lambda: cluster.seen_by_all({Kind.JOIN}, new.name, others, t0), JOIN_TIMEOUT_S
    )
    seen = cluster.first_seen({Kind.JOIN}, new.name, others, t0)
    # ... and the newcomer's own view: every other member joined.
    cluster.wait_for(lambda: _sees_all(cluster, new.name, others, t0), 10.0)
    own = [min(cluster.first_seen({Kind.JOIN}, o, {new.name}, t0).values(), default=None)
           for o in others]  # fmt: skip
    member = cluster.members[new.name]
    last = max(seen.values()) if ok else None
    return {
        "join_s": _since(last, t0),
        "join_first_s": _since(min(seen.values()), t0) if seen else None,
        "join_seen_by": len(seen),
        "join_after_ready_s": _since(last, member.ready_s) if member.ready_s else None,
        "startup_s": _since(member.ready_s, t0),
        "newcomer_sees_all_s": None if None in own else _since(max(own), t0),  # type: ignore[type-var]
    }


def _sees_all(cluster: Cluster, observer: str, others: set[str], since_s: float) -> bool:
    return all(observer in cluster.first_seen({Kind.JOIN}, o, {observer}, since_s) for o in others)


def _measure_quiet(
    cluster: Cluster, specs: list[Spec], quiet_s: float, counters: ByteCounters
) -> dict[str, Any]:
    pids = {s.name: cluster.members[s.name].proc.pid for s in specs}
    cpu0 = {n: cpu_seconds(p) for n, p in pids.items()}
    bytes0, t0 = counters.read(), time.monotonic()
    time.sleep(quiet_s)
    bytes1, t1 = counters.read(), time.monotonic()
    cpu1 = {n: cpu_seconds(p) for n, p in pids.items()}
    rss = [r for p in pids.values() if (r := rss_mib(p)) is not None]
    elapsed_s, n = t1 - t0, len(specs)
    cpu = [cpu1[m] - cpu0[m] for m in pids if cpu0[m] is not None and cpu1[m] is not None]  # type: ignore[operator]
    out: dict[str, Any] = {
        "quiet_start": t0,
        "quiet_end": t1,
        "quiet_s": round(elapsed_s, 3),
        "cpu_s_per_member_min": sum(cpu) / n / (elapsed_s / 60) if cpu else None,
        "cpu_s_max_member_min": max(cpu) / (elapsed_s / 60) if cpu else None,
        "rss_mib_median": sorted(rss)[len(rss) // 2] if rss else None,
    }
    for proto in ("udp", "tcp"):
        sent = sum(bytes1.get(s.gid, {}).get(proto, 0) - bytes0.get(s.gid, {}).get(proto, 0)
                   for s in specs if s.gid is not None)  # fmt: skip
        out[f"{proto}_bytes_per_member_s"] = sent / n / elapsed_s if counters.enabled else None
    if counters.enabled:
        out["bytes_per_member_s"] = out["udp_bytes_per_member_s"] + out["tcp_bytes_per_member_s"]
    else:
        out["bytes_per_member_s"] = None
    return out


def _measure_failure(cluster: Cluster, specs: list[Spec]) -> dict[str, Any]:
    victim = specs[1]  # neither the seed nor the newcomer
    others = {s.name for s in specs if s is not victim}
    t0 = cluster.kill(victim.name)
    ok = cluster.wait_for(
        lambda: cluster.seen_by_all({Kind.FAILED}, victim.name, others, t0), DETECT_TIMEOUT_S
    )
    seen = cluster.first_seen({Kind.FAILED}, victim.name, others, t0)
    suspected = cluster.first_seen({Kind.SUSPECT}, victim.name, others, t0)
    return {
        "victim": victim.name,
        "kill_at": t0,
        "detect_s": _since(max(seen.values()), t0) if ok else None,
        "detect_first_s": _since(min(seen.values()), t0) if seen else None,
        "detect_seen_by": len(seen),
        "suspect_first_s": _since(min(suspected.values()), t0) if suspected else None,
    }


def _since(t: float | None, t0: float) -> float | None:
    return None if t is None else round(t - t0, 3)


def _false_events(cluster: Cluster, result: dict[str, Any]) -> dict[str, Any]:
    """Failed/dead (and suspect) sightings about members that were never killed."""
    victim = result.get("victim")
    q0, q1 = result.get("quiet_start", 0.0), result.get("quiet_end", 0.0)
    fails = [o for o in cluster.sightings({Kind.FAILED}, 0.0, float("inf")) if o.member != victim]
    sus = [o for o in cluster.sightings({Kind.SUSPECT}, q0, q1) if o.member != victim]
    return {
        "false_failures_quiet": sum(q0 <= o.at_s <= q1 for o in fails),
        "false_failures_total": len(fails),
        "false_failed_members": sorted({o.member for o in fails}),
        "suspects_quiet": len(sus),
    }


def run_once(
    system: GossipSystem, n: int, quiet_s: float, counters: ByteCounters, run_no: int,
    log_dir: Path,
) -> dict[str, Any]:  # fmt: skip
    specs = _specs(n, run_no, counters.enabled)
    counters.clear()
    for spec in specs:
        if spec.gid is not None:
            counters.track(spec.gid)
    key = base64.b64encode(os.urandom(32)).decode()
    cluster = Cluster(system, key, log_dir)
    result: dict[str, Any] = {"system": system.name, "n": n, "first_port": specs[0].port}
    try:
        result.update(_warm_up(cluster, specs[:-1]))
        result.update(_measure_join(cluster, specs))
        result.update(_measure_quiet(cluster, specs, quiet_s, counters))
        result.update(_measure_failure(cluster, specs))
        result["exited"] = {m: rc for m, rc in cluster.exited().items() if m != result["victim"]}
    except Exception as exc:  # recorded, and the other runs go on
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        cluster.close()
    result.update(_false_events(cluster, result))
    return result


# ------------------------------------------------------------------------------ main


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--systems", default="serf,meshlite", help="comma list: serf,meshlite")
    p.add_argument("--sizes", default="10,30,60", help="comma list of cluster sizes N")
    p.add_argument("--quiet-s", type=float, default=300.0, help="quiet window (default 300)")
    p.add_argument("--repeats", type=int, default=3, help="runs per (N, system); medians")
    smoke_help = "N=5, quiet 10 s, 1 repeat (overrides those flags); skip systems not installed"
    p.add_argument("--smoke", action="store_true", help=smoke_help)
    p.add_argument("--out-dir", type=Path, default=HERE / "results", help="JSON and logs here")
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.quiet_s, args.repeats = "5", 10.0, 1
    args.size_list = [int(x) for x in args.sizes.split(",") if x]
    if any(n < 3 for n in args.size_list):
        p.error("--sizes: each N must be >= 3 (a seed, a victim and a newcomer)")
    return args


def _systems(args: argparse.Namespace) -> list[GossipSystem]:
    chosen: list[GossipSystem] = []
    for name in (s.strip() for s in args.systems.split(",") if s.strip()):
        if name not in SYSTEMS:
            raise SystemExit(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")
        system = SYSTEMS[name]()
        why = system.unavailable()
        if why is None:
            chosen.append(system)
        elif args.smoke:
            print(f"skipping {name}: {why}", file=sys.stderr)
        else:
            raise SystemExit(f"{name}: {why}")
    return chosen


def _run_all(
    args: argparse.Namespace, systems: list[GossipSystem], stamp: str
) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    with ByteCounters() as counters:
        if not counters.enabled:
            print(f"byte counters off: {counters.reason}", file=sys.stderr)
        for n in args.size_list:
            for rep in range(args.repeats):
                for system in systems:
                    log_dir = args.out_dir / "logs" / stamp / f"{system.name}-n{n}-r{rep}"
                    print(f"# {system.name} N={n} repeat {rep + 1}/{args.repeats} ...",
                          file=sys.stderr, flush=True)  # fmt: skip
                    result = run_once(system, n, args.quiet_s, counters, len(runs), log_dir)
                    result.update(repeat=rep, logs=str(log_dir))
                    print(f"  {_brief(result)}", file=sys.stderr, flush=True)
                    runs.append(result)
    return runs


def _brief(r: dict[str, Any]) -> str:
    keys = ("join_s", "detect_s", "false_failures_quiet", "cpu_s_per_member_min",
            "bytes_per_member_s", "error")  # fmt: skip
    return " ".join(f"{k}={_fmt(r.get(k))}" for k in keys if k in r)


def _fmt(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so every `finally` runs
    systems = _systems(args)
    if not systems:
        print("no system to run", file=sys.stderr)
        return 1
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    runs = _run_all(args, systems, stamp)
    summary = summarise(runs, [s.name for s in systems], args.size_list)
    print_table(summary, [s.name for s in systems], args.size_list)
    info = machine_info(systems)
    path = write_json(args.out_dir, stamp, {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": info, "summary": summary, "runs": runs,
    })  # fmt: skip
    print(f"\nwrote {path}", file=sys.stderr)
    return 1 if any("error" in r for r in runs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
