"""The member table: memberlist's precedence rules, refutation, conflicts, reaping."""

from __future__ import annotations

import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from meshlite._core.events import MemberEventKind, Status
from meshlite._core.members import IGNORED, MemberTable
from meshlite._core.wire import Alive, Dead, Suspect

A = ("10.0.0.1", 7000)
B = ("10.0.0.2", 7000)
B2 = ("10.0.0.2", 7999)


def table() -> MemberTable:
    return MemberTable("me", A, {"role": "x"}, now=0.0)


def kind(verdict: object) -> MemberEventKind | None:
    event = getattr(verdict, "event", None)
    return None if event is None else event.kind


# ------------------------------------------------------------------------- precedence


def test_new_member_joins_whatever_its_incarnation() -> None:
    t = table()
    v = t.apply_alive(Alive(0, "b", B, {"k": "v"}), 1.0)
    assert v.accepted and kind(v) == MemberEventKind.JOIN
    assert t.get("b") is not None and t.get("b").meta == {"k": "v"}  # type: ignore[union-attr]
    assert [m.name for m in t.members()] == ["b", "me"]


def test_alive_needs_a_higher_incarnation() -> None:
    t = table()
    t.apply_alive(Alive(3, "b", B), 1.0)
    assert t.apply_alive(Alive(3, "b", B, {"new": "meta"}), 2.0) == IGNORED
    assert t.apply_alive(Alive(2, "b", B), 2.0) == IGNORED
    v = t.apply_alive(Alive(4, "b", B, {"new": "meta"}), 2.0)
    assert v.accepted and kind(v) == MemberEventKind.UPDATE
    v = t.apply_alive(Alive(5, "b", B, {"new": "meta"}), 3.0)
    assert v.accepted and v.event is None  # news to gossip, nothing for the application


def test_suspect_needs_at_least_the_incarnation_and_an_alive_member() -> None:
    t = table()
    t.apply_alive(Alive(3, "b", B), 1.0)
    assert t.apply_suspect(Suspect(2, "b", "c"), 2.0) == IGNORED
    v = t.apply_suspect(Suspect(3, "b", "c"), 2.0)
    assert v.accepted and kind(v) == MemberEventKind.SUSPECT
    assert t.apply_suspect(Suspect(4, "b", "d"), 2.0) == IGNORED  # already suspect
    assert t.get("b").state_change_s == 2.0  # type: ignore[union-attr]
    assert t.apply_suspect(Suspect(9, "nobody", "c"), 2.0) == IGNORED


def test_alive_refutes_suspect_only_with_a_higher_incarnation() -> None:
    t = table()
    t.apply_alive(Alive(3, "b", B), 1.0)
    t.apply_suspect(Suspect(3, "b", "c"), 2.0)
    assert t.apply_alive(Alive(3, "b", B), 2.5) == IGNORED
    v = t.apply_alive(Alive(4, "b", B), 3.0)
    assert kind(v) == MemberEventKind.ALIVE and t.get("b").status == Status.ALIVE  # type: ignore[union-attr]


def test_dead_and_left() -> None:
    t = table()
    t.apply_alive(Alive(3, "b", B), 1.0)
    t.apply_alive(Alive(1, "c", B2), 1.0)
    assert t.apply_dead(Dead(2, "b", "x"), 2.0) == IGNORED
    assert kind(t.apply_dead(Dead(3, "b", "x"), 2.0)) == MemberEventKind.DEAD
    assert t.apply_dead(Dead(9, "b", "x"), 2.0) == IGNORED  # already dead
    assert kind(t.apply_dead(Dead(1, "c", "c"), 2.0)) == MemberEventKind.LEFT
    assert t.apply_alive(Alive(3, "b", B), 3.0) == IGNORED
    v = t.apply_alive(Alive(4, "b", B), 3.0)
    assert kind(v) == MemberEventKind.JOIN  # back from the dead


# ------------------------------------------------------------------------- ourselves


def test_suspect_or_dead_about_us_is_refuted_with_a_higher_incarnation() -> None:
    t = table()
    v = t.apply_suspect(Suspect(0, "me", "b"), 1.0)
    assert v.refuted == 1 and not v.accepted and t.local.status == Status.ALIVE
    v = t.apply_dead(Dead(7, "me", "b"), 1.0)
    assert v.refuted == 8 and t.local.incarnation == 8
    assert v.log is not None and "Refuting a dead message (from: b)" in v.log.message


def test_alive_about_us_refuted_only_if_it_differs() -> None:
    t = table()
    assert t.apply_alive(Alive(0, "me", A, {"role": "x"}), 1.0) == IGNORED
    v = t.apply_alive(Alive(0, "me", A, {"role": "forged"}), 1.0)
    assert v.refuted == 1 and t.local.meta == {"role": "x"}
    v = t.apply_alive(Alive(5, "me", A, {"role": "x"}), 1.0)
    assert v.refuted == 6


def test_leaving_turns_our_dead_into_left_and_ignores_alive() -> None:
    t = table()
    goodbye = t.leave_message()
    assert goodbye == Dead(1, "me", "me")
    v = t.apply_dead(goodbye, 1.0)
    assert v.accepted and kind(v) == MemberEventKind.LEFT and t.local.status == Status.LEFT
    assert t.apply_alive(Alive(9, "me", A), 2.0) == IGNORED
    assert t.apply_suspect(Suspect(9, "me", "b"), 2.0) == IGNORED


def test_local_meta_change() -> None:
    t = table()
    alive = t.set_local_meta({"role": "y"})
    assert alive == Alive(1, "me", A, {"role": "y"})


# ------------------------------------------------------------------------- conflicts


def test_address_conflict_keeps_the_old_claim_and_logs_once() -> None:
    t = table()
    t.apply_alive(Alive(3, "b", B), 1.0)
    v = t.apply_alive(Alive(3, "b", B2), 2.0)
    assert not v.accepted and v.log is not None
    assert "Name conflict: node b" in v.log.message and "10.0.0.2:7999" in v.log.message
    assert t.apply_alive(Alive(2, "b", B2), 2.0) == IGNORED  # reported already
    assert t.get("b").addr == B  # type: ignore[union-attr]


def test_address_conflict_resolved_by_a_higher_incarnation() -> None:
    t = table()
    t.apply_alive(Alive(3, "b", B), 1.0)
    t.apply_suspect(Suspect(3, "b", "c"), 2.0)
    v = t.apply_alive(Alive(4, "b", B2), 3.0)
    assert v.accepted and kind(v) == MemberEventKind.ALIVE
    assert v.log is not None and "moved from 10.0.0.2:7000 to 10.0.0.2:7999" in v.log.message
    assert t.get("b").addr == B2  # type: ignore[union-attr]


def test_dead_or_left_member_may_come_back_anywhere() -> None:
    t = table()
    t.apply_alive(Alive(3, "b", B), 1.0)
    t.apply_dead(Dead(3, "b", "b"), 2.0)
    v = t.apply_alive(Alive(0, "b", B2), 3.0)  # restarted, incarnation reset
    assert v.accepted and kind(v) == MemberEventKind.JOIN and t.get("b").addr == B2  # type: ignore[union-attr]


def test_conflict_about_our_own_name_is_never_refuted() -> None:
    t = table()
    v = t.apply_alive(Alive(50, "me", B), 1.0)
    assert v.refuted is None and v.log is not None and "Name conflict: node me" in v.log.message
    assert t.local.incarnation == 0 and t.local.addr == A


# ------------------------------------------------------------------------- reaping


def test_reap_after_gossip_to_the_dead() -> None:
    t = table()
    t.apply_alive(Alive(1, "b", B), 0.0)
    t.apply_alive(Alive(1, "c", B2), 0.0)
    t.apply_dead(Dead(1, "b", "x"), 10.0)
    t.apply_dead(Dead(1, "c", "c"), 12.0)
    assert t.next_reap_s(30.0) == 40.0
    assert t.reap(39.9, 30.0) == []
    (event,) = t.reap(40.0, 30.0)
    assert event.kind == MemberEventKind.REAP and event.member.name == "b"
    assert t.get("b") is None and t.next_reap_s(30.0) == 42.0
    t.apply_alive(Alive(2, "c", B2), 41.0)  # came back before the reaper
    assert t.next_reap_s(30.0) is None and t.reap(100.0, 30.0) == []


def test_we_are_never_reaped() -> None:
    t = table()
    t.apply_dead(t.leave_message(), 0.0)
    assert t.reap(1e9, 0.0) == [] and t.next_reap_s(0.0) is None


def test_random_entries_are_distinct_and_filtered() -> None:
    t = table()
    for i in range(20):
        t.apply_alive(Alive(1, f"n{i}", ("10.0.1.1", 1000 + i)), 0.0)
    rng = random.Random(3)
    picked = t.random_entries(5, rng, lambda e: e.name == "me")
    assert len(picked) == 5 and len({e.name for e in picked}) == 5
    assert all(e.name != "me" for e in picked)
    assert t.random_entries(5, rng, lambda e: True) == []
    assert len(t.random_entries(50, rng, lambda e: False)) == 21  # exhaustive when small


# ------------------------------------------------------------------------- model

NAMES = ["b", "c", "d"]
METAS = [{}, {"role": "server"}, {"role": "server", "raft": "leader"}]
KEEP_S = 5.0
GONE = (Status.DEAD, Status.LEFT)


class MemberTableMachine(RuleBasedStateMachine):
    """The table against a dict model of ``name -> (incarnation, status, since)``."""

    def __init__(self) -> None:
        super().__init__()
        self.table = MemberTable("me", A, {}, now=0.0)
        self.model: dict[str, tuple[int, Status, float]] = {}
        self.now = 0.0
        self.seen = (self.table.version, self.table.members())

    @rule(name=st.sampled_from(NAMES), inc=st.integers(0, 4), meta=st.sampled_from(METAS))
    def alive(self, name: str, inc: int, meta: dict[str, str]) -> None:
        v = self.table.apply_alive(Alive(inc, name, B, meta), self.now)
        old = self.model.get(name)
        if old is None or inc > old[0]:
            since = old[2] if old is not None and old[1] == Status.ALIVE else self.now
            self.model[name] = (inc, Status.ALIVE, since)
            assert v.accepted
        else:
            assert v == IGNORED

    @rule(name=st.sampled_from(NAMES), inc=st.integers(0, 4))
    def suspect(self, name: str, inc: int) -> None:
        v = self.table.apply_suspect(Suspect(inc, name, "z"), self.now)
        old = self.model.get(name)
        if old is not None and inc >= old[0] and old[1] == Status.ALIVE:
            self.model[name] = (inc, Status.SUSPECT, self.now)
            assert kind(v) == MemberEventKind.SUSPECT
        else:
            assert v == IGNORED

    @rule(name=st.sampled_from(NAMES), inc=st.integers(0, 4), left=st.booleans())
    def dead(self, name: str, inc: int, left: bool) -> None:
        v = self.table.apply_dead(Dead(inc, name, name if left else "z"), self.now)
        old = self.model.get(name)
        if old is not None and inc >= old[0] and old[1] not in GONE:
            self.model[name] = (inc, Status.LEFT if left else Status.DEAD, self.now)
            assert kind(v) == (MemberEventKind.LEFT if left else MemberEventKind.DEAD)
        else:
            assert v == IGNORED

    @rule(inc=st.integers(0, 6))
    def accuse_us(self, inc: int) -> None:
        before = self.table.local.incarnation
        v = self.table.apply_suspect(Suspect(inc, "me", "z"), self.now)
        if inc >= before:
            assert v.refuted == max(before, inc) + 1
        else:
            assert v == IGNORED

    @rule(meta=st.sampled_from(METAS))
    def our_meta(self, meta: dict[str, str]) -> None:
        self.table.set_local_meta(meta)

    @rule(dt=st.floats(0.0, 4.0))
    def tick(self, dt: float) -> None:
        self.now += dt
        reaped = {e.member.name for e in self.table.reap(self.now, KEEP_S)}
        due = {
            n for n, (_, s, since) in self.model.items() if s in GONE and since + KEEP_S <= self.now
        }
        assert reaped == due
        for name in due:
            del self.model[name]

    @precondition(lambda self: bool(self.model))
    @invariant()
    def matches_model(self) -> None:
        seen = {e.name: (e.incarnation, e.status) for e in self.table if e.name != "me"}
        assert seen == {n: (i, s) for n, (i, s, _) in self.model.items()}

    @invariant()
    def version_moves_with_every_change(self) -> None:
        # Readers cache what they derive from members() until the version moves.
        version, members = self.table.version, self.table.members()
        if version == self.seen[0]:
            assert members == self.seen[1]
        self.seen = (version, members)

    @invariant()
    def we_are_alive_and_listed(self) -> None:
        assert self.table.local.status == Status.ALIVE
        assert [m.name for m in self.table.members()] == sorted(["me", *self.model])


TestMemberTable = MemberTableMachine.TestCase
TestMemberTable.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@pytest.mark.parametrize("n", [0, 1, 7])
def test_node_states_cover_the_table(n: int) -> None:
    t = table()
    for i in range(n):
        t.apply_alive(Alive(i, f"n{i}", ("10.0.2.1", 1000 + i)), 0.0)
    states = t.node_states()
    assert len(states) == n + 1 and {s.name for s in states} == {"me", *(f"n{i}" for i in range(n))}
