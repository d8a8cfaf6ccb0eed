"""What the chaos runs must never show, checked on recorded data only (no processes).

Theory of operation
-------------------
The bed records histories; these pure functions judge them, so each can be shown to
catch a forged violation (``test_checkers.py``) without building a single namespace.

**KV** (:func:`check_kv`).  Every put, read and CAS the workers made, with invocation
and completion times on the machine-wide monotonic clock, becomes a
``meshlite.testing.linearizability`` operation: ``ok`` ones complete, ``info`` ones
(outcome unknown) incomplete, ``fail`` ones (certainly not applied) dropped.  After the
last heal one ``?consistent`` recursive read of every key is added as a read of each
key.  Two histories are checked:

* *strict* — writes, CAS, ``?consistent`` reads and the final reads.  It must be
  linearizable: meshlite documents writes and ``?consistent`` reads as linearizable.
* *full* — the strict history plus the reads in Consul's ``default`` mode, which
  meshlite documents as "fresh unless a deposed leader has not noticed yet": the
  leader answers from its state without asking a quorum.  When the full history is not
  linearizable, :func:`default_read_staleness` finds the smallest ``delta`` of a
  ladder for which it becomes linearizable once each default read may take effect up
  to ``delta`` before its invocation (a read "as of delta ago"): how stale they were.

*No acknowledged write lost* (:func:`lost_writes`), checked apart from the search so
that it holds even if the search runs out of budget: for every write or CAS answered
``true``, the key's final value must be that write's value or the value of a write
(acknowledged or of unknown outcome) that did not complete before it was invoked —
one that may have been applied after it.  Values are unique, so a value names its write.

**Locks** (:func:`check_locks`).  docs/kv.md promises that an invalidated session's
locks cannot be acquired for ``lock_delay_s`` ("the lock delay keeps the key free for
that long so two processes never act as leader at once"), and offers ``LockIndex`` as a
fencing token.  The contenders use exactly that: each *acts* as the holder only at
instants ``t < t_c + lease_s`` with ``t_c`` the invocation time of its latest
confirmation (an ``?acquire`` answered true, or a ``?consistent`` read naming its
session), and ``lease_s < lock_delay_s``.  Then a holder H whose last confirmation was
linearized at ``tau >= t_c`` loses the lock at ``sigma > tau`` either by releasing it
(after its last act) or by invalidation, after which no one acquires before
``sigma + lock_delay_s > t_c + lease_s``: past H's last act.  (meshlite measures the
delay from the invalidating entry's time stamp, taken when the leader proposed it,
which precedes ``sigma`` by the commit latency: the margin ``lock_delay_s - lease_s``,
1 s here, must cover it.)  So the property checked is:
**the holds' act spans ``[first act, last act]`` of different acquisitions never
overlap** (a paused or partitioned holder included: it checks its lease before every
act, whatever it still believes), and **``LockIndex`` is constant within a hold and
strictly increases from one hold to the next** in act order.  A violation means the
lock service granted the lock while the lock delay should have kept it free, or a
``?consistent`` read was stale.

**Leaders** (:func:`check_leaders`).  Raft's election safety: at most one server wins
an election per term, so no two servers accept writes in the same term.  Every agent
logs ``raft: leadership acquired for term N`` when it becomes leader; across all agents
and all their lives (a restart keeps its term on disk), no ``N`` may appear for two.

**Membership** (:func:`check_deaths`).  Every ``event=dead`` line an agent logged is a
death of ``member`` seen by ``observer``.  It is excused only by a fault window
(``faults.FaultWindow``), from the fault's start to ``settle_s`` after its heal, and
only if the fault cut the pair apart (either direction) or impaired either host
(paused, crashed, lossy, delayed) — or if, earlier in that window, a host the fault cut
from the member (or an impaired host) had declared it dead: memberlist lets such a
"dead" rumour, once it can travel (the heal does not reach every host in the same
instant; an asymmetric link), mark the member dead at others too until it refutes.
After the heal the excuse lasts ``settle_s`` because a suspicion started during the
fault may expire up to the longest suspicion timeout later.  Suspicions are not
deaths and are always tolerated.  Anything else — a healthy host declared dead by a
host that could reach it, with no such rumour to blame — is a false death.

**Discovery** (:func:`check_discovery`).  Every observer poll of
``/v1/health/service/chaos?passing`` made once the mesh was first whole must list every
host's instance, except where a fault excuses the pair as above, from the fault's start
until ``settle_s`` after its heal or until the mesh was whole again, whichever is later
(plus ``grace_s``).

**Reconvergence** is measured, not excused (``scenario.reconvergence``, with
``bed.whole_since``): the time from each heal until every observer saw every member
alive and every instance passing in every poll until the next fault.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from meshlite.testing.linearizability import (
    CheckResult,
    Operation,
    Verdict,
    cas,
    check,
    read,
    write,
)

from .bed import Death, Observation
from .faults import FaultWindow

# Log timestamps have millisecond resolution: orders of events closer than this are moot.
CLOCK_S = 0.01
STALENESS_LADDER_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 120.0)


# ----------------------------------------------------------------------------- KV


@attrs.frozen
class KvOp:
    """One recorded KV operation; ``status`` is ``ok``, ``info`` (unknown) or ``fail``."""

    id: str
    client: str
    kind: str  # read | write | cas
    key: str
    call: float
    ret: float | None
    status: str
    mode: str | None = None  # reads: default | consistent | final
    value: str | None = None
    expected: str | None = None
    result: Any = None


def kv_ops(records: Iterable[Mapping[str, Any]]) -> list[KvOp]:
    """The worker's ``inv`` and ``op`` lines as operations (an ``inv`` never completed
    is of unknown outcome)."""
    invoked: dict[str, Mapping[str, Any]] = {}
    done: dict[str, Mapping[str, Any]] = {}
    for rec in records:
        (done if rec.get("t") == "op" else invoked)[str(rec["id"])] = rec
    out = []
    for op_id, rec in {**invoked, **done}.items():
        status = str(rec.get("status", "info"))
        out.append(
            KvOp(
                op_id,
                str(rec["client"]),
                str(rec["kind"]),
                str(rec["key"]),
                float(rec["call"]),
                float(rec["ret"]) if status == "ok" and rec.get("ret") is not None else None,
                status,
                rec.get("mode"),
                rec.get("value"),
                rec.get("expected"),
                rec.get("result"),
            )
        )
    return sorted(out, key=lambda o: o.call)


def final_ops(
    call: float, ret: float, values: Mapping[str, str], keys: Iterable[str]
) -> list[KvOp]:
    """One ``?consistent`` recursive read after the heal, as a read of every key."""
    return [
        KvOp(f"final-{k}", "final", "read", k, call, ret, "ok", "final", result=values.get(k))
        for k in sorted(set(keys) | set(values))
    ]


def to_operation(op: KvOp, shift_default_s: float = 0.0) -> Operation | None:
    if op.status == "fail":
        return None
    if op.kind == "read":
        if op.status != "ok":
            return None
        call = op.call - shift_default_s if op.mode == "default" else op.call
        return read(op.key, op.result, call, op.ret)
    if op.kind == "write":
        return write(op.key, op.value, op.call, op.ret)
    ok = bool(op.result) if op.ret is not None else None
    return cas(op.key, op.expected, op.value, ok, op.call, op.ret)


def history(ops: Iterable[KvOp], *, defaults: bool, shift_s: float = 0.0) -> list[Operation]:
    out = []
    for op in ops:
        if op.kind == "read" and op.mode == "default" and not defaults:
            continue
        converted = to_operation(op, shift_s)
        if converted is not None:
            out.append(converted)
    return out


def lost_writes(ops: Sequence[KvOp]) -> list[str]:
    """Acknowledged writes whose key's final value cannot follow them (module doc)."""
    finals = {op.key: op.result for op in ops if op.mode == "final"}
    writers: dict[tuple[str, str], KvOp] = {}
    for op in ops:
        refused = op.kind == "cas" and op.status == "ok" and not op.result  # wrote nothing
        if op.kind in ("write", "cas") and op.status != "fail" and not refused:
            writers[(op.key, str(op.value))] = op
    problems = []
    for op in ops:
        acked = op.status == "ok" and (op.kind == "write" or (op.kind == "cas" and op.result))
        if not acked or op.key not in finals:
            continue
        final = finals[op.key]
        if final == op.value:
            continue
        later = writers.get((op.key, final)) if final is not None else None
        if later is None:
            problems.append(f"{op.key}: acknowledged {op.value!r} ({op.id}), final {final!r}")
        elif later.ret is not None and later.ret < op.call:
            problems.append(
                f"{op.key}: acknowledged {op.value!r} ({op.id}) was lost; the final value "
                f"{final!r} ({later.id}) completed before it started"
            )
    return problems


def default_read_staleness(ops: Sequence[KvOp], timeout_s: float) -> float | None:
    """The smallest ``delta`` of the ladder making the full history linearizable, None
    if none does (or the search ran out of budget)."""
    full = check(history(ops, defaults=True), timeout_s=timeout_s)
    if full.ok:
        return 0.0
    bad = {k for k, v in full.per_key.items() if v is not Verdict.OK}
    subset = [op for op in ops if op.key in bad]
    for delta in STALENESS_LADDER_S:
        if check(history(subset, defaults=True, shift_s=delta), timeout_s=timeout_s).ok:
            return delta
    return None


@attrs.frozen
class KvReport:
    operations: int
    by_status: Mapping[str, int]
    keys: int
    strict: CheckResult
    full: CheckResult
    lost: tuple[str, ...]
    staleness_s: float | None

    def summary(self) -> dict[str, Any]:
        return {
            "operations": self.operations,
            "by_status": dict(self.by_status),
            "keys": self.keys,
            "strict_linearizable": self.strict.verdict.value,
            "strict_per_key": {k: v.value for k, v in sorted(self.strict.per_key.items())},
            "with_default_reads_linearizable": self.full.verdict.value,
            "with_default_reads_per_key": {
                k: v.value for k, v in sorted(self.full.per_key.items())
            },
            "default_read_staleness_s": self.staleness_s,
            "acknowledged_writes_lost": len(self.lost),
            "lost": list(self.lost[:20]),
            "strict_explain": "" if self.strict.ok else self.strict.explain()[:4000],
        }


def check_kv(ops: Sequence[KvOp], timeout_s: float = 60.0) -> KvReport:
    by_status: dict[str, int] = {}
    for op in ops:
        label = f"{op.kind}:{op.mode or op.kind}:{op.status}"
        by_status[label] = by_status.get(label, 0) + 1
    strict = check(history(ops, defaults=False), timeout_s=timeout_s)
    full = check(history(ops, defaults=True), timeout_s=timeout_s)
    staleness = 0.0 if full.ok else default_read_staleness(ops, timeout_s)
    return KvReport(
        len(ops),
        by_status,
        len({op.key for op in ops}),
        strict,
        full,
        tuple(lost_writes(ops)),
        staleness,
    )


# ----------------------------------------------------------------------------- locks


@attrs.frozen
class Hold:
    """One acquisition by contender ``who``: its acts span ``[first_act, last_act]``."""

    who: str
    session: str
    acquired: float
    first_act: float | None
    last_act: float | None
    acts: int
    lock_indexes: tuple[int, ...]
    end: str


def holds_from(records: Iterable[Mapping[str, Any]]) -> list[Hold]:
    return [
        Hold(
            str(r["who"]),
            str(r["session"]),
            float(r["acquired"]),
            r.get("first_act"),
            r.get("last_act"),
            int(r.get("acts", 0)),
            tuple(int(i) for i in r.get("lock_indexes", ())),
            str(r.get("end", "")),
        )
        for r in records
    ]


@attrs.frozen
class LockReport:
    holds: int
    acts: int
    by_end: Mapping[str, int]
    overlaps: tuple[str, ...]
    fencing: tuple[str, ...]

    def summary(self) -> dict[str, Any]:
        return {
            "holds": self.holds,
            "acts": self.acts,
            "by_end": dict(self.by_end),
            "overlapping_holds": len(self.overlaps),
            "fencing_violations": len(self.fencing),
            "details": [*self.overlaps[:10], *self.fencing[:10]],
        }


def check_locks(holds: Sequence[Hold]) -> LockReport:
    """No two acquisitions' act spans overlap; ``LockIndex`` fences (module doc)."""
    acting = sorted(
        (h for h in holds if h.first_act is not None and h.last_act is not None),
        key=lambda h: (h.first_act, h.last_act),
    )
    overlaps = []
    latest: Hold | None = None  # the span reaching furthest so far
    for h in acting:
        assert h.first_act is not None and h.last_act is not None
        if latest is not None and latest.last_act is not None and h.first_act <= latest.last_act:
            overlaps.append(
                f"{latest.who} acted until {latest.last_act:.3f} (LockIndex "
                f"{list(latest.lock_indexes)}) but {h.who} acted from {h.first_act:.3f} "
                f"(LockIndex {list(h.lock_indexes)})"
            )
        if latest is None or latest.last_act is None or h.last_act > latest.last_act:
            latest = h
    fencing = [
        f"{h.who}'s hold from {h.first_act:.3f} saw LockIndex change: {list(h.lock_indexes)}"
        for h in acting
        if len(h.lock_indexes) > 1
    ]
    fenced = [h for h in acting if h.lock_indexes]
    for a, b in itertools.pairwise(fenced):
        if not a.lock_indexes[-1] < b.lock_indexes[0]:
            fencing.append(
                f"LockIndex went from {a.lock_indexes[-1]} ({a.who}) to "
                f"{b.lock_indexes[0]} ({b.who}, acting from {b.first_act:.3f})"
            )
    by_end: dict[str, int] = {}
    for h in holds:
        by_end[h.end] = by_end.get(h.end, 0) + 1
    return LockReport(
        len(holds), sum(h.acts for h in holds), by_end, tuple(overlaps), tuple(fencing)
    )


# ----------------------------------------------------------------------------- membership


def _declared_dead(deaths: Sequence[Death], f: FaultWindow, settle_s: float) -> dict[str, float]:
    """Members that a host ``f`` cut them from (or an impaired one) declared dead during
    ``f`` or its settling, with the first such time: where a legitimate "dead" rumour
    about them came from."""
    out: dict[str, float] = {}
    for d in deaths:
        if f.start <= d.at <= f.end + settle_s and _pair_excused(f, d.observer, d.member):
            out[d.member] = min(d.at, out.get(d.member, d.at))
    return out


def _pair_excused(f: FaultWindow, observer: str, member: str) -> bool:
    return f.cut(observer, member) or bool({observer, member} & f.impaired)


def _excused(
    f: FaultWindow, rumours: Mapping[str, float], observer: str, member: str, at: float
) -> bool:
    """``f`` explains ``observer`` missing ``member`` at ``at`` (inside its window)."""
    first = rumours.get(member)
    return _pair_excused(f, observer, member) or (first is not None and first <= at + CLOCK_S)


def check_deaths(
    deaths: Sequence[Death], faults: Sequence[FaultWindow], settle_s: float
) -> list[Death]:
    """The deaths no fault window excuses (module doc): false deaths."""
    rumours = [_declared_dead(deaths, f, settle_s) for f in faults]
    return [
        d
        for d in deaths
        if not any(
            f.start <= d.at <= f.end + settle_s and _excused(f, r, d.observer, d.member, d.at)
            for f, r in zip(faults, rumours, strict=True)
        )
    ]


# ----------------------------------------------------------------------------- discovery


@attrs.frozen
class Missing:
    """``observer``'s poll during ``[call, ret]`` did not list ``member``'s instance."""

    observer: str
    member: str
    call: float
    ret: float


def check_discovery(
    observations: Sequence[Observation],
    names: Sequence[str],
    faults: Sequence[FaultWindow],
    settled: Sequence[float],
    deaths: Sequence[Death],
    settle_s: float,
    *,
    since: float,
    grace_s: float = 2.0,
) -> list[Missing]:
    """Instances missing from a poll that no fault window excuses (module doc).

    Polls that started before ``since`` (the mesh first whole) are not judged.
    ``settled[i]``: when the mesh was whole again after ``faults[i]`` (its heal plus the
    bound, if it never was)."""
    rumours = [_declared_dead(deaths, f, settle_s) for f in faults]
    out = []
    for o in observations:
        if o.svc is None or o.call < since:
            continue
        for member in names:
            if member in o.svc:
                continue
            if not any(
                o.ret >= f.start
                and o.call <= max(whole, f.end + settle_s) + grace_s
                and _excused(f, r, o.who, member, o.ret)
                for f, whole, r in zip(faults, settled, rumours, strict=True)
            ):
                out.append(Missing(o.who, member, o.call, o.ret))
    return out


# ----------------------------------------------------------------------------- leaders

_LEADERSHIP = re.compile(r"raft: leadership acquired for term (\d+)")


def leaders_by_term(logs: Mapping[str, Sequence[str]]) -> dict[int, set[str]]:
    """Term -> the agents that logged winning it (module doc)."""
    out: dict[int, set[str]] = {}
    for name, lines in logs.items():
        for line in lines:
            m = _LEADERSHIP.search(line)
            if m is not None:
                out.setdefault(int(m.group(1)), set()).add(name)
    return out


def check_leaders(logs: Mapping[str, Sequence[str]]) -> list[str]:
    """Terms that more than one agent led: each one a violation of election safety."""
    return [
        f"term {term}: led by {sorted(names)}"
        for term, names in sorted(leaders_by_term(logs).items())
        if len(names) > 1
    ]
