"""Long chaos runs: random faults on namespaced hosts, the CI suite's checkers, a summary.

    sudo python benchmarks/chaos.py --duration-s 1800 --hosts 5 --seed S
        [--fault-min-s 5] [--fault-max-s 30] [--gap-max-s 10] [--kinds K,K,...]
        [--out-dir benchmarks/results] [--keep-logs] [--delay-via auto|netem|nfqueue]

Theory of operation
-------------------
The bed of ``tests/chaos`` (``tests/chaos/bed.py``): ``--hosts`` network namespaces on a
private bridge (10.200.0.x; nothing is routed to or from this namespace), each running
``meshlite agent`` (the first three ``--server --bootstrap-expect 3 --data-dir``, the
others clients; ``lan`` profile, encrypted) and a worker driving its agent's HTTP API:
KV puts, default and ``?consistent`` reads and CAS on a few keys, three lock
contenders, membership and discovery observers.  For ``--duration-s`` a seeded RNG
draws a fault kind (partitions of one host, a minority, a majority, asymmetric, packet
loss, delay/reordering — by netem where the kernel has ``sch_netem``, else by
``tests/chaos/nfq_delay.py`` in user space through NFQUEUE (``--delay-via`` forces one;
the summary's ``delay_mechanism`` says which ran) — SIGSTOP, SIGKILL and restart),
aims it at the leader, the lock holder or a random host, keeps it 5-30 s, heals it,
waits until the mesh is whole again (at most 90 s), pauses 1-10 s, and draws again.
Then the workloads stop, every key is read back, every process and namespace goes, and
the checkers of ``tests/chaos/checkers.py`` judge the recording.

Printed and written to ``--out-dir/chaos-<UTC time>.json``: faults by kind, operations
recorded, linearizability per key (writes + CAS + consistent reads; and with default
reads, with how stale they were), acknowledged writes lost (must be 0), lock overlaps,
false deaths, discovery misses, time to reconverge after each heal (median / max) and
each agent's peak RSS (VmHWM, largest over restarts).  ``--keep-logs`` (or any problem)
also writes every agent's log there.  Exit status 1 if any checker found a problem.
Needs root (namespaces, iptables); the seed fixes the plan's choices, not the timing.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # before benchmarks/: `chaos` is tests/chaos

from chaos.bed import BedConfig  # noqa: E402
from chaos.faults import DELAY_MECHANISMS, KINDS, ChaosUnavailableError  # noqa: E402
from chaos.scenario import Plan, evaluate, run  # noqa: E402
from netns import NetnsUnavailableError  # noqa: E402

RECONVERGE_BOUND_S = 90.0  # as tests/chaos/test_chaos.py, which says why


def plan_from(args: argparse.Namespace) -> Plan:
    lo, hi = args.fault_min_s, args.fault_max_s
    return Plan(
        kinds=[],
        duration_s=lambda kind, rng: rng.uniform(lo, hi),
        gap_s=lambda rng: rng.uniform(1.0, args.gap_max_s),
        reconverge_timeout_s=RECONVERGE_BOUND_S,
        loss_probability=lambda rng: rng.uniform(0.1, 0.4),
        run_for_s=args.duration_s,
        draw_from=tuple(args.kinds),
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--duration-s", type=float, default=1800.0, help="draw faults until this much time"
    )
    ap.add_argument("--hosts", type=int, default=5)
    ap.add_argument("--seed", type=int, default=random.SystemRandom().randrange(1 << 31))
    ap.add_argument("--fault-min-s", type=float, default=5.0)
    ap.add_argument("--fault-max-s", type=float, default=30.0)
    ap.add_argument("--gap-max-s", type=float, default=10.0)
    ap.add_argument("--kinds", type=lambda s: s.split(","), default=list(KINDS))
    ap.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--keep-logs", action="store_true")
    ap.add_argument(
        "--delay-via",
        choices=("auto", *DELAY_MECHANISMS),
        default="auto",
        help="delay/reorder by netem, by the NFQUEUE injector, or netem where it works",
    )
    args = ap.parse_args()
    if unknown := set(args.kinds) - set(KINDS):
        ap.error(f"unknown fault kinds {sorted(unknown)}; known: {','.join(KINDS)}")
    if args.hosts < 3:
        ap.error("--hosts must be at least 3 (three servers)")
    command = " ".join([Path(sys.executable).name, *sys.argv])
    print(f"command: {command}  (seed {args.seed})", flush=True)
    began = time.monotonic()
    try:
        rec = run(
            args.hosts,
            args.seed,
            plan_from(args),
            # workers stop by themselves past this: after the last fault and the checks
            BedConfig(max_lifetime_s=args.duration_s + 900.0),
            log=lambda line: print(f"{time.monotonic() - began:7.1f}s {line}", flush=True),
            delay_via=args.delay_via,
        )
    except (NetnsUnavailableError, ChaosUnavailableError) as exc:
        print(f"skipped: {exc}")
        return 0
    verdict = evaluate(rec, check_timeout_s=300.0, plan_bound_s=RECONVERGE_BOUND_S)
    summary = {"command": command, "seed": args.seed, **verdict.summary}
    report(summary, verdict.problems)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.out_dir / f"chaos-{stamp}.json"
    out.write_text(json.dumps({**summary, "problem_list": verdict.problems}, indent=1))
    print(f"summary: {out}")
    if args.keep_logs or verdict.problems:
        logs = args.out_dir / f"chaos-{stamp}-logs"
        logs.mkdir(exist_ok=True)
        for name, lines in rec.logs.items():
            (logs / f"{name}.log").write_text("\n".join(lines) + "\n")
        print(f"agent logs: {logs}")
    return 1 if verdict.problems else 0


def report(s: dict[str, object], problems: list[str]) -> None:
    kv = s["kv"]
    locks = s["locks"]
    assert isinstance(kv, dict)
    assert isinstance(locks, dict)
    strict = kv["strict_per_key"]
    full = kv["with_default_reads_per_key"]
    assert isinstance(strict, dict)
    assert isinstance(full, dict)
    lines = [
        "",
        f"run {s['run_s']} s on {s['hosts']} hosts (bed up in {s['startup_s']} s)",
        f"faults injected by kind: {s['faults_by_kind']}",
        f"faults skipped: {s['faults_skipped'] or 'none'}",
        f"delay/reorder by: {s['delay_mechanism'] or 'not injected'}",
        f"operations recorded: {kv['operations']} ({kv['by_status']})",
        f"histories checked: {kv['keys']} keys; writes+CAS+consistent reads linearizable: "
        f"{kv['strict_linearizable']} (per key: {_count(strict)})",
        f"  with default reads: {kv['with_default_reads_linearizable']} (per key: "
        f"{_count(full)}); default reads stale by at most {kv['default_read_staleness_s']} s",
        f"acknowledged writes lost: {kv['acknowledged_writes_lost']}",
        f"locks: {locks['holds']} holds, {locks['acts']} acts, ends {locks['by_end']}; "
        f"overlapping holds {locks['overlapping_holds']}, fencing violations "
        f"{locks['fencing_violations']}",
        f"terms with a leader: {s['leader_terms']}; with two: {s['terms_with_two_leaders']}",
        f"deaths logged: {s['deaths']}; false deaths: {s['false_deaths']}",
        f"discovery polls: {s['discovery_polls']}; misses: {s['discovery_misses']}",
        f"time to reconverge after a heal: {s['reconverge_s']}",
        f"peak RSS per agent (MiB): {s['peak_rss_mib']}",
        f"problems: {len(problems)}",
        *[f"  - {p[:500]}" for p in problems],
    ]
    print("\n".join(lines))


def _count(per_key: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for verdict in per_key.values():
        out[verdict] = out.get(verdict, 0) + 1
    return out


if __name__ == "__main__":
    sys.exit(main())
