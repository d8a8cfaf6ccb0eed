"""A chaos run from start to verdict: bed up, faults one after another, checks, summary.

Theory of operation
-------------------
:func:`run` builds the namespaces (``netns.lan``), starts the :class:`~chaos.bed.Bed`,
then for each fault kind of the :class:`Plan` (a fixed list, or kinds drawn from a
seeded RNG until a duration has passed) picks its targets (:func:`make_fault`: aimed
at the Raft leader from ``/v1/status/leader``, at the host whose session holds the
lock, or at random), injects it, keeps it ``duration_s``, heals it, and waits — at most
``reconverge_timeout_s`` — until every observer has seen the whole mesh for
``stable_s`` (a mesh that looks whole for a moment after a heal often is not: a
suspicion from the fault expires, a stale rumour lands).  Faults never overlap.  After
the last one the workloads stop, one ``?consistent`` read takes every key's final
value, every process is killed and the namespaces go (even when something fails on
the way).

:func:`evaluate` then runs every checker (``checkers.py``) on what was recorded and
returns a :class:`Verdict` with a JSON-ready summary: faults by kind, operations,
linearizability per key, acknowledged writes lost, false deaths, discovery misses,
lock overlaps, reconvergence times (median, max) and each agent's peak RSS (VmHWM,
the largest over its restarts).  Everything is bounded: each fault by its duration and
the reconvergence timeout, each wait by a deadline, the run by its plan.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
from netns import lan

from .bed import Bed, BedConfig, Death, Observation, last_broken, whole_since
from .checkers import (
    Hold,
    KvOp,
    check_deaths,
    check_discovery,
    check_kv,
    check_leaders,
    check_locks,
    final_ops,
    holds_from,
    kv_ops,
    leaders_by_term,
)
from .faults import (
    KINDS,
    NETEM_KINDS,
    ChaosUnavailableError,
    Crash,
    Fault,
    FaultWindow,
    Loss,
    Partition,
    Pause,
    delay_fault,
    delay_mechanism,
    hold,
    iptables_unavailable,
)

# Deaths and missing instances right after a heal are excused for this long when the
# fault explains them (checkers.check_deaths): a suspicion started at the very end of
# a fault may expire this long after it — the lan profile's longest suspicion timeout
# (suspicion_max_timeout_mult 6 x suspicion_mult 4 x max(1, log10 5) x 1 s = 24 s) —
# plus time to spread the verdict.
SETTLE_S = 30.0
AIMS = ("leader", "holder", "random")


@attrs.define
class Plan:
    """What to inject: ``kinds`` in order — or, when ``kinds`` is empty, kinds drawn
    from ``draw_from`` until ``run_for_s`` has passed — each for ``duration_s(kind,
    rng)`` seconds, aimed by ``aim(kind, rng)`` (see :func:`make_fault`)."""

    kinds: list[str]
    duration_s: Callable[[str, random.Random], float]
    gap_s: Callable[[random.Random], float] = lambda rng: 1.0
    reconverge_timeout_s: float = 90.0
    stable_s: float = 5.0
    loss_probability: Callable[[random.Random], float] = lambda rng: 0.3
    aim: Callable[[str, random.Random], str] = lambda kind, rng: rng.choice(AIMS)
    warmup_s: float = 3.0
    cooldown_s: float = 3.0
    run_for_s: float = 0.0
    draw_from: tuple[str, ...] = KINDS
    max_faults: int = 10_000


@attrs.frozen
class Injected:
    """A fault as it happened; ``reconverge_s``: the driver's live measure (None: the
    mesh was not whole for ``stable_s`` within ``reconverge_timeout_s`` of the heal)."""

    window: FaultWindow
    reconverge_s: float | None
    leader_before: str | None
    leader_after: str | None
    aim: str = "random"
    aimed_at: str | None = None  # the leader or holder the aim found (None: random)


@attrs.define
class Recording:
    """Everything a run recorded, for :func:`evaluate`."""

    names: list[str]
    faults: list[Injected] = attrs.Factory(list)
    skipped: dict[str, str] = attrs.Factory(dict)
    delay_via: str | None = None  # netem, nfqueue, or None (not needed, or none works)
    ops: list[KvOp] = attrs.Factory(list)
    holds: list[Hold] = attrs.Factory(list)
    deaths: list[Death] = attrs.Factory(list)
    observations: list[Observation] = attrs.Factory(list)
    rss_kib: dict[str, int] = attrs.Factory(dict)
    startup_s: float = 0.0
    whole_at: float = 0.0  # when the mesh was first whole (monotonic)
    quiet_at: float = 0.0  # when the workloads were told to stop
    run_s: float = 0.0
    errors: list[str] = attrs.Factory(list)
    logs: dict[str, list[str]] = attrs.Factory(dict)  # every agent's lines, all lives


def make_fault(
    bed: Bed, kind: str, rng: random.Random, loss: float, aim: str, delay_via: str = "netem"
) -> tuple[Fault, int | None]:
    """``kind`` with its targets (see the ``faults`` module doc for the shapes), and the
    host ``aim`` resolved to (None: unknown, or ``random``); delay and reorder run by
    ``delay_via`` (``faults.delay_mechanism``).

    ``aim`` picks the host the fault is about, where there is one: ``leader`` (the Raft
    leader), ``holder`` (the host whose session holds the lock: a paused or cut-off
    holder), or ``random``; when the aimed-at host is not known, a random one."""
    n, servers = len(bed.hosts), bed.cfg.servers
    everyone = list(range(n))
    clients = everyone[servers:]
    leader = bed.leader()
    aimed = {"leader": leader, "holder": bed.lock_holder() if aim == "holder" else None}

    def pick(pool: Sequence[int]) -> int:
        wanted = aimed.get(aim)
        return wanted if wanted is not None and wanted in pool else rng.choice(list(pool))

    def build() -> Fault:
        if kind == "partition_one":
            one = pick(everyone)
            return Partition(bed, kind, [[one], [i for i in everyone if i != one]])
        if kind == "partition_minority" or (kind == "partition_majority" and len(clients) < 2):
            side = [pick(range(servers))]
            if clients:  # the holder, when it is a client
                side.append(pick(clients))
            return Partition(
                bed, "partition_minority", [side, [i for i in everyone if i not in side]]
            )
        if kind == "partition_majority":
            old = leader if leader is not None else rng.randrange(servers)
            side = [old, *clients]
            return Partition(bed, kind, [side, [i for i in everyone if i not in side]])
        if kind == "asymmetric":
            a = pick(everyone)
            b = rng.choice([i for i in everyone if i != a])
            return Partition(bed, kind, [[a], [b]])
        if kind == "loss":
            return Loss(bed, pick(everyone), loss)
        if kind in NETEM_KINDS:
            return delay_fault(bed, kind, pick(everyone), delay_via)
        if kind == "pause":
            return Pause(bed, pick(everyone))
        if kind == "crash":
            return Crash(bed, pick(everyone))
        raise ValueError(f"unknown fault kind {kind!r}; known: {KINDS}")

    return build(), aimed.get(aim)


def _name(bed: Bed, index: int | None) -> str | None:
    return None if index is None else bed.names[index]


def _wait_whole(bed: Bed, since: float, plan: Plan) -> float | None:
    """Seconds from ``since`` until the mesh was whole again for good — whole in every
    poll of the last ``plan.stable_s`` — or None past ``plan.reconverge_timeout_s``.

    Stability matters: right after a heal the mesh often looks whole for a moment, then
    a suspicion started during the fault expires, or a stale "dead" rumour arrives, and
    a member is dead again until it refutes (or, if its refutation is lost, until a
    push/pull or reconnect: up to 30 s on ``lan``)."""
    deadline = time.monotonic() + plan.reconverge_timeout_s
    while time.monotonic() < deadline:
        bed.sample_rss()
        now = time.monotonic()
        at = whole_since(bed.observations(), bed.names, since, now)
        if at is not None and now - at >= plan.stable_s:
            return at - since
        time.sleep(0.5)
    return None


def inject_one(
    bed: Bed, kind: str, rng: random.Random, plan: Plan, delay_via: str = "netem"
) -> Injected:
    leader_before = _name(bed, bed.leader())
    aim = plan.aim(kind, rng)
    fault, aimed = make_fault(bed, kind, rng, plan.loss_probability(rng), aim, delay_via)
    window = hold(fault, plan.duration_s(kind, rng))
    reconverge = _wait_whole(bed, window.end, plan)
    after = _name(bed, bed.leader())
    return Injected(window, reconverge, leader_before, after, aim, _name(bed, aimed))


def run(
    hosts_n: int,
    seed: int,
    plan: Plan,
    cfg: BedConfig | None = None,
    workdir: Path | None = None,
    log: Callable[[str], None] = lambda line: None,
    delay_via: str = "auto",
) -> Recording:
    """Build the bed, run ``plan``, record (see the module doc).  Delay and reorder run
    by netem where the kernel has it, else in user space through NFQUEUE (``delay_via``:
    ``auto``, ``netem`` or ``nfqueue``; ``faults.delay_mechanism``); they are skipped,
    with the reason for each mechanism, only where none works.  Raises
    ``netns.NetnsUnavailableError`` when namespaces cannot be built,
    ``ChaosUnavailableError`` when iptables cannot filter inside them."""
    rng = random.Random(seed)
    began = time.monotonic()
    rec = Recording([f"h{i}" for i in range(hosts_n)])
    with lan(hosts_n) as hosts, tempfile.TemporaryDirectory(dir=workdir) as tmp:
        reason = iptables_unavailable(hosts[0])
        if reason is not None:
            raise ChaosUnavailableError(reason)
        drawable = list(plan.draw_from)
        if any(k in NETEM_KINDS for k in [*plan.kinds, *drawable]):
            mechanism, why_not = delay_mechanism(hosts[0], delay_via)
            rec.delay_via = mechanism
            if mechanism is None:
                reason = "; ".join(f"{name}: {why}" for name, why in why_not.items())
                for kind in NETEM_KINDS:
                    if kind in [*plan.kinds, *drawable]:
                        rec.skipped[kind] = f"no delay mechanism works here ({reason})"
                drawable = [k for k in drawable if k not in NETEM_KINDS]
            else:
                log(
                    f"delay/reorder by {mechanism}"
                    + "".join(f" ({name} unavailable: {why})" for name, why in why_not.items())
                )
        fixed = [k for k in plan.kinds if k not in rec.skipped]
        bed = Bed(hosts, Path(tmp), seed, cfg or BedConfig())
        try:
            rec.startup_s = bed.start()
            rec.whole_at = time.monotonic()
            log(f"bed up in {rec.startup_s:.1f}s; leader {_name(bed, bed.leader())}")
            time.sleep(plan.warmup_s)
            for n in range(plan.max_faults):
                if plan.kinds and n >= len(fixed):
                    break
                if not plan.kinds and time.monotonic() - rec.whole_at >= plan.run_for_s:
                    break
                if not plan.kinds and not drawable:  # every kind asked for was skipped
                    break
                kind = fixed[n] if plan.kinds else rng.choice(drawable)
                injected = inject_one(bed, kind, rng, plan, rec.delay_via or "netem")
                rec.faults.append(injected)
                w = injected.window
                took = "never" if injected.reconverge_s is None else f"{injected.reconverge_s:.1f}s"
                log(
                    f"[{n + 1}] {kind} ({w.detail}; aimed at the {injected.aim}: "
                    f"{injected.aimed_at}) {w.end - w.start:.1f}s; "
                    f"leader {injected.leader_before} -> {injected.leader_after}; "
                    f"whole again after {took}"
                )
                time.sleep(plan.gap_s(rng))
            time.sleep(plan.cooldown_s)
            _finish(bed, rec)
        finally:
            rec.deaths = bed.deaths()
            rec.observations = bed.observations()
            bed.close()
            rec.rss_kib = {a.name: a.peak_rss_kib for a in bed.agents}
            rec.logs = {
                a.name: [line for life in a.lives for line in life.lines] for a in bed.agents
            }
            rec.errors += agent_errors(rec.logs)
            for worker in bed.workers:
                rec.errors += [f"{worker.name}: {line}" for line in worker.other[-20:]]
    rec.run_s = time.monotonic() - began
    return rec


def agent_errors(logs: dict[str, list[str]]) -> list[str]:
    """Lines no agent should print under faults: errors, and anything not a JSON log
    record (a traceback)."""
    out = []
    for name, lines in logs.items():
        for line in lines:
            if not line.strip():
                continue
            if not line.startswith("{") or '"@level":"error"' in line:
                out.append(f"{name}: {line[:300]}")
    return out[:50]


def _finish(bed: Bed, rec: Recording) -> None:
    rec.quiet_at = time.monotonic()
    if not bed.quiesce():
        rec.errors.append("a worker did not stop its workload in time")
    ops = kv_ops(r for w in bed.workers for r in [*w.of("inv"), *w.of("op")])
    final = bed.final_reads()
    if final is None:
        rec.errors.append("the final ?consistent read never succeeded")
    else:
        call, ret, values = final
        ops += final_ops(call, ret, values, {op.key for op in ops})
    rec.ops = ops
    rec.holds = holds_from(r for w in bed.workers for r in w.of("hold"))
    bed.stop_workers()


@attrs.frozen
class Verdict:
    summary: dict[str, Any]
    problems: list[str]


def _untils(rec: Recording) -> list[float]:
    """Each fault's judging horizon: the next fault's start, or the end of the workload."""
    starts = [f.window.start for f in rec.faults[1:]]
    return [*starts, rec.quiet_at or (rec.faults[-1].window.end if rec.faults else 0.0)]


def reconvergence(rec: Recording) -> list[float | None]:
    """Per fault, seconds from its heal until the mesh was whole for good before the
    next fault (``bed.whole_since``); None if it was not whole when the next began."""
    out: list[float | None] = []
    for f, until in zip(rec.faults, _untils(rec), strict=True):
        at = whole_since(rec.observations, rec.names, f.window.end, until)
        out.append(None if at is None else at - f.window.end)
    return out


def evaluate(
    rec: Recording, check_timeout_s: float = 60.0, plan_bound_s: float | None = None
) -> Verdict:
    """Run every checker on ``rec``; ``problems`` lists what must not happen."""
    windows = [f.window for f in rec.faults]
    kv = check_kv(rec.ops, timeout_s=check_timeout_s)
    locks = check_locks(rec.holds)
    false_deaths = check_deaths(rec.deaths, windows, SETTLE_S)
    whole = reconvergence(rec)
    settled = [
        w.end + r if r is not None else max(w.end + SETTLE_S, until)
        for w, r, until in zip(windows, whole, _untils(rec), strict=True)
    ]
    missing = check_discovery(
        rec.observations, rec.names, windows, settled, rec.deaths, SETTLE_S, since=rec.whole_at
    )
    reconverge = [r for r in whole if r is not None]
    by_kind: dict[str, int] = {}
    for f in rec.faults:
        by_kind[f.window.kind] = by_kind.get(f.window.kind, 0) + 1
    problems = list(rec.errors)
    if kv.strict.verdict.value != "ok":
        problems.append(f"KV history (writes, CAS, consistent reads): {kv.strict.explain()}")
    if kv.lost:
        problems.append(f"{len(kv.lost)} acknowledged writes lost: {list(kv.lost[:5])}")
    if locks.overlaps or locks.fencing:
        problems.append(f"locks: {[*locks.overlaps[:5], *locks.fencing[:5]]}")
    if false_deaths:
        problems.append(f"{len(false_deaths)} false deaths: {false_deaths[:5]}")
    two_leaders = check_leaders(rec.logs)
    if two_leaders:
        problems.append(f"two leaders in one term: {two_leaders[:5]}")
    if missing:
        problems.append(f"{len(missing)} discovery misses: {missing[:5]}")
    never = [f.window for f in rec.faults if f.reconverge_s is None]
    if never:
        problems.append(
            f"the mesh was not whole for good within the bound after: {[str(w) for w in never]}"
        )
    summary = {
        "hosts": len(rec.names),
        "run_s": round(rec.run_s, 1),
        "startup_s": round(rec.startup_s, 1),
        "faults_by_kind": by_kind,
        "faults_skipped": rec.skipped,
        "delay_mechanism": rec.delay_via,
        "faults": [
            {
                "kind": f.window.kind,
                "detail": f.window.detail,
                "start_s": round(f.window.start - rec.faults[0].window.start, 1)
                if rec.faults
                else 0,
                "duration_s": round(f.window.end - f.window.start, 1),
                "window_monotonic": [round(f.window.start, 3), round(f.window.end, 3)],
                "aim": f.aim,
                "aimed_at": f.aimed_at,
                "leader_before": f.leader_before,
                "leader_after": f.leader_after,
                "reconverge_s": None if r is None else round(r, 2),
                "last_broken": last_broken(rec.observations, rec.names, f.window.end, until),
            }
            for f, r, until in zip(rec.faults, whole, _untils(rec), strict=True)
        ],
        "kv": kv.summary(),
        "locks": locks.summary(),
        "leader_terms": len(leaders_by_term(rec.logs)),
        "terms_with_two_leaders": len(two_leaders),
        "deaths": len(rec.deaths),
        "death_list": [[d.observer, d.member, round(d.at, 3)] for d in rec.deaths],
        "false_deaths": len(false_deaths),
        "false_death_details": [attrs.asdict(d) for d in false_deaths[:20]],
        "discovery_polls": sum(1 for o in rec.observations if o.svc is not None),
        "discovery_misses": len(missing),
        "discovery_miss_details": [attrs.asdict(m) for m in missing[:20]],
        "reconverge_s": {
            "median": round(statistics.median(reconverge), 2) if reconverge else None,
            "max": round(max(reconverge), 2) if reconverge else None,
            "bound_s": plan_bound_s,
            "exceeded_bound": len(never),
            "not_whole_when_next_fault_began": sum(1 for r in whole if r is None),
        },
        "peak_rss_mib": {k: round(v / 1024, 1) for k, v in rec.rss_kib.items()},
        "errors": rec.errors[:20],
        "problems": len(problems),
    }
    return Verdict(summary, problems)
