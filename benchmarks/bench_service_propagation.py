"""How fast a service's registration, health changes and deregistration reach every peer.

    .venv/bin/python benchmarks/bench_service_propagation.py [--peers 60] [--repeats 5]
        [--check-interval-s 5] [--check-timeout-s 1] [--poll-s 0.1] [--seed 1]
        [--out-dir DIR] [--smoke]

Theory of operation
-------------------
The issue's budget: a registration on one of 60 peers (separate processes, LAN defaults)
is in every peer's ``discover()`` within 1 s median; a health change within the check
interval + 1 s.

N peers (``_service_peer.py``) run as separate processes on 127.0.0.1, encrypted, with the
LAN profile (memberlist's ``DefaultLANConfig`` timings).  The seed starts first, then all
the others at once; the run begins when every peer reports N members alive.  Each peer
follows ``mesh.watch("bench-svc", passing_only=True)`` and prints the instance count with
``time.monotonic()`` whenever it yields.  One peer (the *owner*, not the seed) takes
commands on stdin and prints the monotonic time at which it ran each.  On Linux
``time.monotonic()`` is CLOCK_MONOTONIC, a single system-wide clock, so a time printed by
one process minus a time printed by another is a true interval; neither pipe latency nor
the harness's scheduling enters the numbers (the harness, ``_gossip_harness.Cluster``,
also stamps each line on arrival, in the per-peer logs).

Each repeat uses a fresh service id and runs four phases; each is timed from the owner's
stamp of the command to the first time each peer's watch yields the expected count:

1. ``register`` -> 1 passing instance (the check starts passing: ``initial_status``);
2. ``fail`` (the owner flips the flag its callable check returns) -> 0 passing.  The check
   notices at its next run, up to ``--check-interval-s`` later; ``owner`` is that moment
   (the owner's own watch), ``after owner`` the gossip that follows;
3. ``recover`` -> 1 passing again, likewise;
4. ``deregister`` -> 0.

Before each command the harness waits a random time (up to one check interval before a
health change, up to 1 s otherwise; ``--seed``), so commands fall at random points of the
check's and the gossip's schedules rather than always at the same one.  Per phase it
reports, over the repeats: the median of the per-repeat p50 across peers, the median and
the worst of the per-repeat *last* peer, and the budget.

Cross-checks (``--poll-s``, 0 turns them off): each peer also polls ``discover()`` and its
gossip counters.  A watch that yields well after a poll saw the change is counted (a
missed wake-up); a peer that sees a change more than ``STRAGGLER_S`` after the owner is
listed with how the news reached it: by a gossiped broadcast, or only by push/pull
anti-entropy (the epidemic's retransmits all missed it).  At the end every peer's
``Mesh.stats`` goes into the JSON.

Every wait is bounded (a phase by one size-scaled push/pull interval plus slack, beyond
which even anti-entropy has failed); a phase that times out is recorded with the peers
that missed it (and their last count); every peer's process group is killed in
``finally``.  JSON and per-peer logs go to ``--out-dir`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _gossip_harness import READY_TIMEOUT_S
from _gossip_systems import Spec
from _membership_report import machine_info
from _service_cluster import COMMAND_TIMEOUT_S, SERVICE, PeerCluster, ServicePeers
from bench_membership_vs_serf import _specs

from meshlite._core.config import SwimConfig
from meshlite._core.swim import push_pull_scale_s

HERE = Path(__file__).resolve().parent
MAX_PEERS = 100  # _specs hands out blocks of 200 ports, the upper half for serf's RPC
# Bounds.  Python start-up of N processes at once on two busy cores takes a while; the
# mesh then needs a few gossip rounds (LAN: 200 ms) plus push/pulls to converge.
START_TIMEOUT_PER_PEER_S = 0.5
JOIN_TIMEOUT_BASE_S = 30.0
JOIN_TIMEOUT_PER_PEER_S = 1.0
# A phase's bound: news that gossip fails to deliver (a peer missed by every retransmit)
# still arrives by push/pull anti-entropy within one (size-scaled) push/pull interval;
# a health phase adds one check interval + timeout.
ANTI_ENTROPY_SLACK_S = 10.0
# (phase, command, instance count every peer must see afterwards, health change?)
PHASES = [
    ("register", "register {id}", 1, False),
    ("fail", "fail", 0, True),
    ("recover", "recover", 1, True),
    ("deregister", "deregister {id}", 0, False),
]
REGISTER_BUDGET_S = 1.0
HEALTH_BUDGET_EXTRA_S = 1.0
# A watch wakes on the very change a discover() poll sees; later than the poll by more
# than a loop turn under load means the watch missed a wake-up.
WATCH_LATE_SLACK_S = 0.1
# A peer that sees a change this long after the owner did is reported with how the news
# reached it (gossip or push/pull); STAMP_SLACK_S covers the order of two lines' stamps.
STRAGGLER_S = 2.0
STAMP_SLACK_S = 0.05
# Counters from Mesh.stats summarised at the end: how catalog news travelled.
COUNTERS = ("user_delivered", "push_pulls", "push_pull_served",
            "drop_decode", "suspicions")  # fmt: skip


# ------------------------------------------------------------------------------ phases


def start_mesh(cluster: PeerCluster, specs: list[Spec]) -> dict[str, Any]:
    """The seed, then every other peer at once; wait until each sees all N alive."""
    t0 = time.monotonic()
    seed, n = specs[0], len(specs)
    cluster.spawn(seed, None)
    if not cluster.wait_ready(seed.name):
        raise RuntimeError(f"the seed {seed.name} did not start in {READY_TIMEOUT_S} s")
    for spec in specs[1:]:
        cluster.spawn(spec, seed)
    ready = cluster.wait_for(
        lambda: all(m.ready_s is not None for m in cluster.members.values()),
        READY_TIMEOUT_S + START_TIMEOUT_PER_PEER_S * n,
    )
    joined = cluster.wait_for(
        lambda: all(cluster.alive.get(s.name) == n for s in specs),
        JOIN_TIMEOUT_BASE_S + JOIN_TIMEOUT_PER_PEER_S * n,
    )
    lagging = {s.name: cluster.alive.get(s.name) for s in specs if cluster.alive.get(s.name) != n}
    if not (ready and joined):
        raise RuntimeError(f"mesh did not converge: peers not seeing {n} alive: {lagging}")
    return {"start_s": round(time.monotonic() - t0, 3)}


def run_phase(
    cluster: PeerCluster, owner: str, phase: tuple[str, str, int, bool], sid: str,
    timeout_s: float, poll_s: float,
) -> dict[str, Any]:  # fmt: skip
    name, template, target, _health = phase
    did = cluster.command(owner, template.format(id=sid))
    if did is None:
        return {"phase": name, "error": f"{owner} did not run {template!r}"}
    t0, peers = did[1], list(cluster.members)

    def seen_all(polled: bool) -> bool:
        return all(cluster.first_count(p, target, t0, polled) is not None for p in peers)

    cluster.wait_for(lambda: seen_all(False), timeout_s)
    if poll_s > 0:  # the polls trail the watches by up to one poll
        cluster.wait_for(lambda: seen_all(True), poll_s + COMMAND_TIMEOUT_S / 10)
    seen = {p: t for p in peers if (t := cluster.first_count(p, target, t0)) is not None}
    polled = {p: t for p in peers if (t := cluster.first_count(p, target, t0, True)) is not None}
    lat = sorted(t - t0 for t in seen.values())
    owner_t, complete = seen.get(owner), len(seen) == len(peers)
    return {
        "phase": name,
        "t0": t0,
        "seen_by": len(seen),
        "peers": len(peers),
        "p50_s": statistics.median(lat) if lat else None,
        "last_s": lat[-1] if complete else None,
        "first_s": lat[0] if lat else None,
        "owner_s": None if owner_t is None else owner_t - t0,
        "after_owner_s": max(seen.values()) - owner_t if owner_t and complete else None,
        "missing": {p: cluster.last_count(p) for p in peers if p not in seen},
        "discover_last_s": max(polled.values()) - t0 if len(polled) == len(peers) else None,
        "watch_late": watch_late(seen, polled),
        "stragglers": stragglers(cluster, seen, owner_t, poll_s),
    }


def watch_late(seen: dict[str, float], polled: dict[str, float]) -> dict[str, float]:
    """Peers whose watch yielded well after a discover() poll had shown the change."""
    both = seen.keys() & polled.keys()
    return {
        p: round(seen[p] - polled[p], 3) for p in both if seen[p] - polled[p] > WATCH_LATE_SLACK_S
    }


def stragglers(
    cluster: PeerCluster, seen: dict[str, float], owner_t: float | None, poll_s: float
) -> dict[str, Any]:
    """Peers that saw the change more than STRAGGLER_S after the owner, and how it reached
    them: "push/pull" if a full-state exchange happened on that peer as it saw it, else
    "gossip" if a catalog broadcast was delivered then, else "unknown" (also when the
    counters are not polled)."""
    if owner_t is None:
        return {}
    out = {}
    for peer, t in seen.items():
        if t - owner_t > STRAGGLER_S:
            before = cluster.counters_at(peer, t - STAMP_SLACK_S)
            after = cluster.counters_at(peer, t + poll_s + STAMP_SLACK_S)
            how = "unknown"
            if before is not None and after is not None:
                how = ("push/pull" if after[1] > before[1]
                       else "gossip" if after[0] > before[0] else "unknown")  # fmt: skip
            out[peer] = {"after_owner_s": round(t - owner_t, 3), "via": how}
    return out


def run_repeats(cluster: PeerCluster, owner: str, args: argparse.Namespace) -> list[Any]:
    rng = random.Random(args.seed)
    results = []
    gossip_timeout_s = ANTI_ENTROPY_SLACK_S + push_pull_scale_s(
        SwimConfig.lan().push_pull_interval_s, args.peers
    )
    health_timeout_s = gossip_timeout_s + args.check_interval_s + args.check_timeout_s
    for rep in range(args.repeats):
        sid = f"{SERVICE}-{rep}"
        for phase in PHASES:
            time.sleep(rng.uniform(0, args.check_interval_s if phase[3] else 1.0))
            timeout_s = health_timeout_s if phase[3] else gossip_timeout_s
            result = run_phase(cluster, owner, phase, sid, timeout_s, args.poll_s)
            result["repeat"] = rep
            results.append(result)
            print(f"  repeat {rep + 1}/{args.repeats} {_brief(result)}", file=sys.stderr)
    return results


def _brief(r: dict[str, Any]) -> str:
    keys = ("phase", "seen_by", "owner_s", "p50_s", "last_s", "error")
    return " ".join(f"{k}={_fmt(r[k], '{:.3f}')}" for k in keys if k in r)


def _fmt(value: object, fmt: str) -> str:
    if value is None:
        return "n/a"
    return fmt.format(value) if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------------ report


def summarise(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, _template, _target, health in PHASES:
        mine = [r for r in runs if r["phase"] == name]
        last = [r["last_s"] for r in mine if r.get("last_s") is not None]

        def median(key: str, mine: list[dict[str, Any]] = mine) -> float | None:
            values = [r[key] for r in mine if r.get(key) is not None]
            return statistics.median(values) if values else None

        budget = args.check_interval_s + HEALTH_BUDGET_EXTRA_S if health else None
        out[name] = {
            "runs": len(mine),
            "complete": len(last),
            "owner_s": median("owner_s"),
            "p50_s": median("p50_s"),
            "last_s": median("last_s"),
            "last_worst_s": max(last) if len(last) == len(mine) and last else None,
            "after_owner_s": median("after_owner_s"),
            "budget_s": REGISTER_BUDGET_S if name == "register" else budget,
        }
    return out


def print_table(summary: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"service propagation: {args.peers} peers (processes), LAN profile, encrypted; "
        f"check interval {args.check_interval_s:g} s; {args.repeats} repeat(s); "
        "seconds from the command (medians over repeats)"
    )
    print(
        "| phase | complete | owner sees it | p50 peer | last peer | last peer, worst "
        "| last peer after owner | budget | median within |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for name, row in summary.items():
        cells = [_fmt(row[k], "{:.3f}") for k in
                 ("owner_s", "p50_s", "last_s", "last_worst_s", "after_owner_s")]  # fmt: skip
        budget, last = row["budget_s"], row["last_s"]
        within = "-" if budget is None else "n/a" if last is None else _yes(last <= budget)
        print(
            f"| {name} | {row['complete']}/{row['runs']} | " + " | ".join(cells)
            + f" | {_fmt(budget, '{:.2f}')} | {within} |"
        )  # fmt: skip


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def print_checks(
    runs: list[dict[str, Any]], stats: dict[str, dict[str, int]], poll_s: float
) -> None:
    """The cross-checks: late watches, stragglers, the peers' counters (min/median/max)."""
    late = sum(len(r.get("watch_late", {})) for r in runs)
    pairs = sum(r.get("seen_by", 0) for r in runs)
    print(f"\nwatch yielded > {WATCH_LATE_SLACK_S:g} s after a discover() poll showed the "
          f"change: {late} of {pairs} (phase, peer) observations" if poll_s > 0
          else "\nno discover() cross-check (--poll-s 0)")  # fmt: skip
    slow = [v["via"] for r in runs for v in r.get("stragglers", {}).values()]
    print(f"peers seeing a change > {STRAGGLER_S:g} s after the owner: {len(slow)}"
          + (f" (reached by: {', '.join(sorted(slow))})" if slow else ""))  # fmt: skip
    for key in COUNTERS:
        values = sorted(v.get(key, 0) for v in stats.values())
        if values:
            print(f"{key} per peer: min {values[0]} median {statistics.median(values):g} "
                  f"max {values[-1]}")  # fmt: skip


def write_json(out_dir: Path, stamp: str, payload: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"service_propagation-{stamp}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    return path


# ------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peers", type=int, default=60, help="N processes (default 60)")
    p.add_argument("--repeats", type=int, default=5, help="register/fail/recover/deregister")
    p.add_argument("--check-interval-s", type=float, default=5.0, help="default 5 (LAN-like)")
    p.add_argument("--check-timeout-s", type=float, default=1.0)
    p.add_argument("--poll-s", type=float, default=0.1, help="discover() cross-check; 0 off")
    p.add_argument("--seed", type=int, default=1, help="for the pauses before commands")
    p.add_argument("--out-dir", type=Path, default=HERE / "results", help="JSON and logs here")
    p.add_argument("--smoke", action="store_true", help="N=5, 1 repeat, 0.5 s checks")
    args = p.parse_args(argv)
    if args.smoke:
        args.peers, args.repeats, args.check_interval_s, args.check_timeout_s = 5, 1, 0.5, 0.25
    if not 2 <= args.peers <= MAX_PEERS:
        p.error(f"--peers must be between 2 (a seed and an owner) and {MAX_PEERS}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so every `finally` runs
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    system = ServicePeers(args.check_interval_s, args.check_timeout_s, args.poll_s)
    specs = _specs(args.peers, os.getpid() % 50, with_gids=False)
    key = base64.b64encode(os.urandom(32)).decode()
    cluster = PeerCluster(system, key, args.out_dir / "logs" / f"service_propagation-{stamp}")
    owner = specs[1].name  # not the seed
    result: dict[str, Any] = {"runs": []}
    try:
        print(f"# starting {args.peers} peers ...", file=sys.stderr, flush=True)
        result.update(start_mesh(cluster, specs))
        print(f"# all joined after {result['start_s']:.1f} s", file=sys.stderr, flush=True)
        result["runs"] = run_repeats(cluster, owner, args)
        result["exited"] = cluster.exited()
        cluster.collect_stats()
    except Exception as exc:  # reported, with whatever was measured
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        cluster.close()
    result["peer_errors"] = cluster.errors[:50]
    summary = summarise(result["runs"], args)
    print_table(summary, args)
    print_checks(result["runs"], cluster.stats, args.poll_s)
    path = write_json(args.out_dir, stamp, {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine_info([system]), "summary": summary, "logs": str(cluster.log_dir),
        "stats": cluster.stats, **result,
    })  # fmt: skip
    print(f"\nwrote {path}", file=sys.stderr)
    for problem in ([result["error"]] if "error" in result else []) + cluster.errors[:10]:
        print(f"problem: {problem}", file=sys.stderr)
    incomplete = any(r.get("last_s") is None for r in result["runs"])
    return 1 if "error" in result or incomplete or result.get("exited") else 0


if __name__ == "__main__":
    raise SystemExit(main())
