"""The chaos checkers, checked: each one is fed a forged violation and must catch it.

No namespaces, no processes: ``checkers.py`` judges recorded data, so these run
anywhere in milliseconds.  Each checker gets a good history (must pass), the violation
it exists for (must be reported), and the near-misses a fault window excuses.
"""

from __future__ import annotations

from typing import Any

from meshlite.testing.linearizability import Verdict

from .bed import Death, Observation, whole_since
from .checkers import (
    Hold,
    KvOp,
    check_deaths,
    check_discovery,
    check_kv,
    check_leaders,
    check_locks,
    final_ops,
    kv_ops,
    lost_writes,
)
from .faults import FaultWindow, Partition

K = "chaos/e0000/k0"
NAMES = ["h0", "h1", "h2", "h3", "h4"]


def w(value: str, call: float, ret: float | None, status: str = "ok") -> KvOp:
    return KvOp(f"w-{value}", "c", "write", K, call, ret, status, value=value, result=True)


def r(seen: str | None, call: float, ret: float, mode: str = "consistent") -> KvOp:
    return KvOp(f"r-{call}", "c", "read", K, call, ret, "ok", mode, result=seen)


def final(value: str | None, at: float) -> list[KvOp]:
    return final_ops(at, at + 0.01, {} if value is None else {K: value}, [K])


# ----------------------------------------------------------------------------- KV


def test_a_clean_history_passes() -> None:
    ops = [w("a", 0, 1), r("a", 2, 3), w("b", 4, 5), r("b", 6, 7, "default"), *final("b", 8)]
    report = check_kv(ops)
    assert report.strict.ok and report.full.ok
    assert report.lost == () and report.staleness_s == 0.0


def test_a_stale_consistent_read_breaks_the_strict_history() -> None:
    ops = [w("a", 0, 1), w("b", 2, 3), r("a", 4, 5), *final("b", 6)]
    report = check_kv(ops)
    assert report.strict.verdict is Verdict.ILLEGAL
    assert report.strict.failed_key == K


def test_a_stale_default_read_is_measured_not_hidden() -> None:
    # "a" was overwritten at 3.0; a default read invoked at 3.8 still returns it.
    ops = [w("a", 0, 1), w("b", 2, 3), r("a", 3.8, 3.9, "default"), *final("b", 6)]
    report = check_kv(ops)
    assert report.strict.ok
    assert report.full.verdict is Verdict.ILLEGAL
    assert report.staleness_s == 1.0  # the smallest step of the ladder covering 0.8 s


def test_an_acknowledged_write_missing_at_the_end_is_lost() -> None:
    ops = [w("a", 0, 1), w("b", 2, 3), *final("a", 6)]
    assert lost_writes(ops) and "lost" in lost_writes(ops)[0]
    assert lost_writes([w("a", 0, 1), *final(None, 6)])  # the key vanished
    assert lost_writes([w("a", 0, 1), *final("zzz", 6)])  # a value nobody wrote
    assert not check_kv(ops).strict.ok  # linearizability sees it too


def test_a_later_write_of_unknown_outcome_may_win() -> None:
    ops = [w("a", 0, 1), w("b", 0.5, None, status="info"), *final("b", 6)]
    assert lost_writes(ops) == []
    assert check_kv(ops).strict.ok
    # ... but one that certainly failed may not:
    failed = [w("a", 0, 1), w("b", 2, None, status="fail"), *final("b", 6)]
    assert lost_writes(failed)


def test_a_refused_cas_cannot_explain_the_final_value() -> None:
    refused = KvOp("c-b", "c", "cas", K, 2, 3, "ok", None, "b", "zzz", False)
    assert lost_writes([w("a", 0, 1), refused, *final("b", 6)])


def test_worker_lines_become_operations() -> None:
    inv = {"t": "inv", "id": "h0-1", "client": "h0", "kind": "write", "key": K, "call": 1.0}
    done: dict[str, Any] = {**inv, "t": "op", "value": "h0-1", "status": "ok", "ret": 2.0}
    done["result"] = True
    lost_answer = {**inv, "id": "h0-2", "value": "h0-2", "call": 3.0}
    ops = {op.id: op for op in kv_ops([inv, done, lost_answer])}
    assert ops["h0-1"].ret == 2.0 and ops["h0-1"].status == "ok"
    assert ops["h0-2"].ret is None and ops["h0-2"].status == "info"  # never answered


def test_a_cas_that_swapped_twice_from_one_value_is_caught() -> None:
    def c(new: str, ok: bool, call: float) -> KvOp:
        return KvOp(f"c-{new}", "c", "cas", K, call, call + 1, "ok", None, new, "a", ok)

    ops = [w("a", 0, 1), c("b", True, 2), c("c", True, 4), *final("c", 6)]
    assert check_kv(ops).strict.verdict is Verdict.ILLEGAL


# ----------------------------------------------------------------------------- locks


def hold(who: str, first: float, last: float, index: int, end: str = "released") -> Hold:
    return Hold(who, f"s-{who}-{index}", first - 0.01, first, last, 10, (index,), end)


def test_handovers_in_order_pass() -> None:
    holds = [hold("a", 0, 1, 1), hold("b", 1.2, 2, 2), hold("a", 5, 6, 3, "lost")]
    report = check_locks(holds)
    assert report.overlaps == () and report.fencing == ()
    assert report.holds == 3 and report.by_end == {"released": 2, "lost": 1}


def test_overlapping_holds_are_caught() -> None:
    # a was paused while holding and kept acting after resuming; b got the lock meanwhile
    report = check_locks([hold("a", 0, 4, 1, "lost"), hold("b", 3.5, 5, 2)])
    assert len(report.overlaps) == 1 and "a acted until" in report.overlaps[0]
    # the overlap is found even when a short hold sits between the two
    report = check_locks([hold("a", 0, 10, 1), hold("b", 2, 3, 2), hold("c", 4, 5, 3)])
    assert len(report.overlaps) == 2


def test_lock_index_must_fence() -> None:
    assert check_locks([hold("a", 0, 1, 5), hold("b", 2, 3, 4)]).fencing
    assert check_locks([hold("a", 0, 1, 5), hold("b", 2, 3, 5)]).fencing  # not strictly up
    changed = Hold("a", "s", 0, 0.1, 1, 3, (5, 6), "released")
    assert check_locks([changed]).fencing


# ----------------------------------------------------------------------------- membership


def partition(start: float, end: float, *groups: list[str]) -> FaultWindow:
    cuts = {(a, b) for g in groups for h in groups if h is not g for a in g for b in h}
    return FaultWindow("partition_minority", start, end, cuts=frozenset(cuts))


MINORITY = partition(10, 20, ["h0", "h3"], ["h1", "h2", "h4"])


def test_a_death_with_no_fault_is_false() -> None:
    assert check_deaths([Death("h1", "h2", 5.0)], [MINORITY], 30) == [Death("h1", "h2", 5.0)]


def test_deaths_across_a_partition_are_excused_but_not_within_a_side() -> None:
    across = [Death("h1", "h0", 15), Death("h0", "h4", 16)]
    assert check_deaths(across, [MINORITY], 30) == []
    same_side = Death("h0", "h3", 15)  # h0 and h3 could reach each other
    assert check_deaths([*across, same_side], [MINORITY], 30) == [same_side]


def test_after_the_heal_only_a_legitimate_rumour_excuses_a_death() -> None:
    # h1 (cut from h0) declared h0 dead just after the heal; h2 believed the rumour.
    rumour = [Death("h1", "h0", 20.5), Death("h2", "h0", 20.6)]
    assert check_deaths(rumour, [MINORITY], 30) == []
    # h2 declaring h4 dead after the heal has no such excuse: they were on one side.
    stray = Death("h2", "h4", 21)
    assert check_deaths([*rumour, stray], [MINORITY], 30) == [stray]
    # and the excuse runs out with the settle time
    late = Death("h1", "h0", 60)
    assert check_deaths([late], [MINORITY], 30) == [late]


def test_a_rumour_needs_a_legitimate_source_first() -> None:
    # While the heal is being applied, h1's verdict on h0 (they were cut apart) reaches
    # h3, which is on h0's side: excused, because h1 had declared h0 dead before.
    rumour = [Death("h1", "h0", 19.9), Death("h3", "h0", 19.95)]
    assert check_deaths(rumour, [MINORITY], 30) == []
    # h3 declaring h0 dead before anyone cut from h0 did has no such excuse.
    early = [Death("h3", "h0", 15), Death("h1", "h0", 19.9)]
    assert check_deaths(early, [MINORITY], 30) == [Death("h3", "h0", 15)]


def test_impaired_hosts_excuse_both_ways() -> None:
    paused = FaultWindow("pause", 10, 20, impaired=frozenset({"h3"}))
    ok = [Death("h1", "h3", 15), Death("h3", "h1", 20.2)]  # h3 wakes and accuses first
    assert check_deaths(ok, [paused], 30) == []
    assert check_deaths([Death("h1", "h2", 15)], [paused], 30)


def test_asymmetric_windows_cut_one_direction() -> None:
    bed = type("B", (), {"names": NAMES})()
    fault = Partition(bed, "asymmetric", [[0], [1]])
    window = fault.window(0, 1)
    assert window.cuts == {("h0", "h1")}
    assert window.cut("h0", "h1") and window.cut("h1", "h0") and not window.cut("h0", "h2")
    both = Partition(bed, "partition_one", [[0], [1, 2]])
    assert both.window(0, 1).cuts == {("h0", "h1"), ("h0", "h2"), ("h1", "h0"), ("h2", "h0")}


# ----------------------------------------------------------------------------- discovery


def obs(who: str, at: float, svc: list[str], dead: tuple[str, ...] = ()) -> Observation:
    members = {n: 4 if n in dead else 1 for n in NAMES}
    return Observation(who, at, at + 0.01, members, tuple(svc))


def test_a_missing_instance_with_no_fault_is_reported() -> None:
    polls = [obs("h1", 5, NAMES), obs("h1", 6, ["h0", "h1", "h3", "h4"])]
    missing = check_discovery(polls, NAMES, [MINORITY], [25], [], 30, since=0)
    assert [(m.observer, m.member) for m in missing] == [("h1", "h2")]


def test_missing_across_a_partition_and_until_reconverged_is_excused() -> None:
    deaths = [Death("h1", "h0", 15)]
    polls = [
        obs("h1", 15, ["h1", "h2", "h4"]),  # cut from h0 and h3
        obs("h1", 22, ["h1", "h2", "h3", "h4"], dead=("h0",)),  # after the heal, not yet back
    ]
    assert check_discovery(polls, NAMES, [MINORITY], [24], deaths, 30, since=0) == []
    # the excuse lasts settle_s (30) after the heal (20), or until whole again if later
    too_late = [obs("h1", 53, ["h1", "h2", "h3", "h4"], dead=("h0",))]
    assert check_discovery(too_late, NAMES, [MINORITY], [24], deaths, 30, since=0)
    assert not check_discovery(too_late, NAMES, [MINORITY], [60], deaths, 30, since=0)
    same_side = [obs("h1", 15, ["h1", "h4"])]  # h2 is on h1's side
    found = check_discovery(same_side, NAMES, [MINORITY], [24], deaths, 30, since=0)
    assert [m.member for m in found] == ["h2"]


def test_polls_before_the_mesh_was_whole_are_not_judged() -> None:
    assert check_discovery([obs("h1", 1, ["h1"])], NAMES, [], [], [], 30, since=2) == []


def test_whole_for_good_means_after_the_last_broken_poll() -> None:
    polls = [obs(n, t, NAMES) for n in NAMES for t in (1, 2, 5)]
    polls += [obs("h2", 3, NAMES, dead=("h0",))]
    assert whole_since(polls, NAMES, 0.5, 10) == 5.01
    polls += [obs("h3", 6, ["h3"])]  # h3's last poll is not whole
    assert whole_since(polls, NAMES, 0.5, 10) is None


# ----------------------------------------------------------------------------- leaders


def _led(term: int) -> str:
    return f'{{"@level":"info","@message":"raft: leadership acquired for term {term}"}}'


def test_one_leader_per_term_across_lives_passes() -> None:
    logs = {"h0": [_led(2), "other line", _led(5)], "h1": [_led(3)], "h2": [_led(4), _led(6)]}
    assert check_leaders(logs) == []


def test_two_leaders_in_one_term_are_caught() -> None:
    logs = {"h0": [_led(2), _led(7)], "h1": [_led(3)], "h2": [_led(7)]}
    assert check_leaders(logs) == ["term 7: led by ['h0', 'h2']"]
