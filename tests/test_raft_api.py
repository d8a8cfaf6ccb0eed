"""RaftCore's API edges: local misuse raises with a clear message, remote garbage never
raises, and the Ready/advance contract."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from raft_net import RaftNet

from meshlite._core.raft import (
    Append,
    AppendResp,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResp,
    InstallSnapshot,
    Message,
    RaftConfig,
    RaftCore,
    Role,
    Snapshot,
    TimeoutNow,
    Vote,
    VoteResp,
    encode_voters,
)
from meshlite.errors import ConfigError, NotLeaderError
from meshlite.testing import long_run

VOTERS = ("a", "b", "c")


def base_log(n: int = 4, term: int = 2) -> list[Entry]:
    first = Entry(1, 1, EntryKind.CONFIG, encode_voters(VOTERS))
    return [first] + [Entry(i, term, EntryKind.NORMAL, b"%d" % i) for i in range(2, n + 1)]


def test_config_validation() -> None:
    for kwargs in (
        {"tick_s": 0},
        {"election_ticks": 0},
        {"heartbeat_ticks": 5, "election_ticks": 5},
        {"max_inflight_msgs": 0},
        {"unsafe_mutations": {"typo"}},
    ):
        with pytest.raises(ConfigError, match=r"RaftConfig|mutations"):
            RaftConfig(**kwargs)  # type: ignore[arg-type]
    assert RaftConfig().election_timeout_s == pytest.approx(0.5)


def test_restore_refuses_damaged_storage() -> None:
    rng = random.Random(0)
    gapped = [base_log()[0], Entry(3, 1, EntryKind.NORMAL, b"")]
    with pytest.raises(ConfigError, match="gap"):
        RaftCore("a", RaftConfig(), rng, HardState(1, None, 0), None, gapped)
    with pytest.raises(ConfigError, match="commits index 9"):
        RaftCore("a", RaftConfig(), rng, HardState(2, None, 9), None, base_log())
    with pytest.raises(ConfigError, match="node id"):
        RaftCore("", RaftConfig(), rng)


def test_restore_from_snapshot_and_entries() -> None:
    snap = Snapshot(3, 2, VOTERS, b"img")
    core = RaftCore("a", RaftConfig(), random.Random(0), HardState(2, "b", 4), snap, base_log(5))
    assert (core.log.snap_index, core.log.last_index, core.log.committed) == (3, 5, 4)
    assert (core.term, core.vote, core.voters()) == (2, "b", VOTERS)
    rd = core.ready()
    assert rd.hard_state is None  # nothing new to persist
    assert rd.entries == () and rd.snapshot is None
    assert [e.index for e in rd.committed_entries] == [4]  # re-applied after restart


def test_bootstrap_misuse() -> None:
    core = RaftCore("a", RaftConfig(), random.Random(0))
    with pytest.raises(ConfigError, match="include 'a'"):
        core.bootstrap(["b", "c"])
    with pytest.raises(ConfigError, match="distinct"):
        core.bootstrap(["a", "a"])
    assert core.log.last_index == 0


def test_requests_on_a_follower_name_the_leader() -> None:
    net = RaftNet(VOTERS)
    net.elect("a")
    b = net.core("b")
    for call in (lambda: b.propose(b"x"), lambda: b.read_index(b"r")):
        with pytest.raises(NotLeaderError, match="try 'a'") as info:
            call()
        assert info.value.leader_hint == "a"
    fresh = RaftCore("z", RaftConfig(), random.Random(0))
    with pytest.raises(NotLeaderError, match="no leader known"):
        fresh.propose(b"x")


def test_ready_advance_contract() -> None:
    net = RaftNet(["a"])
    a = net.elect("a")
    a.propose(b"x")
    rd = a.ready()
    assert rd.entries and rd.committed_entries and rd.hard_state is not None
    with pytest.raises(ConfigError, match="advance"):
        a.ready()
    with pytest.raises(ConfigError, match="advance"):
        a.advance(
            type(rd)(None, (), None, (), (), (), None)  # not the Ready it handed out
        )
    a.advance(rd)
    assert not a.has_ready()
    assert a.log.stable == a.log.last_index and a.log.applied == a.log.committed


def test_messages_wait_for_their_ready_and_leave_after_persisting() -> None:
    net = RaftNet(VOTERS)
    a = net.elect("a")
    server = net.servers["a"]
    seen: list[tuple[Message, int]] = []
    index = a.propose(b"x")
    assert not net.queue  # nothing leaves before the Ready is handled
    server.process(lambda m: seen.append((m, server.storage.entries[-1].index)), *noop)
    appends = [(m, last) for m, last in seen if isinstance(m, Append)]
    assert appends and all(last == index for _, last in appends)


noop = (lambda server, entry: None, lambda server, rs: None)


def test_status() -> None:
    net = RaftNet(VOTERS)
    a = net.elect("a")
    net.tick(n=1)
    status = a.status()
    assert status["role"] == "leader" and status["leader"] == "a"
    assert status["voters"] == list(VOTERS)
    assert status["progress"]["b"] == {"match": 2, "next": 3, "state": "replicate"}
    assert net.core("b").status()["progress"] == {}


def test_misaddressed_and_unknown_senders_are_counted_drops() -> None:
    net = RaftNet(VOTERS)
    a = net.elect("a")
    before = Counter(a.counters)
    a.step(Heartbeat("b", "zz", a.term, 0))
    a.step(AppendResp("mallory", "a", a.term, 1))
    a.step(HeartbeatResp("mallory", "a", a.term))
    a.step(Append("b", "a", a.term, 0, 0, (), 0))  # a second leader in our term?
    assert a.counters - before == {
        "misaddressed": 1,
        "append_resp_unknown": 1,
        "heartbeat_resp_unknown": 1,
        "unexpected_at_leader": 1,
    }
    assert a.role is Role.LEADER


names = st.sampled_from(["a", "b", "c", "x"])
terms = st.integers(0, 6)
indexes = st.integers(0, 12)


@st.composite
def entries_after(draw: st.DrawFn, prev_index: int, prev_term: int) -> tuple[Entry, ...]:
    out = []
    term = prev_term
    for i in range(draw(st.integers(0, 4))):
        term += draw(st.integers(0, 1))
        out.append(Entry(prev_index + 1 + i, term, EntryKind.NORMAL, b"f"))
    return tuple(out)


@st.composite
def any_message(draw: st.DrawFn, to: str) -> Message:
    frm, term = draw(names), draw(terms)
    kind = draw(st.integers(0, 7))
    if kind == 0:
        prev_index, prev_term = draw(indexes), draw(st.integers(0, term))
        ents = draw(entries_after(prev_index, prev_term))
        top = max([e.term for e in ents], default=0)
        return Append(frm, to, max(term, top), prev_index, prev_term, ents, draw(indexes))
    if kind == 1:
        return AppendResp(
            frm, to, term, draw(indexes), draw(st.booleans()), draw(indexes), draw(terms)
        )
    if kind == 2:
        return Vote(
            frm, to, term, draw(indexes), draw(terms), draw(st.booleans()), draw(st.booleans())
        )
    if kind == 3:
        return VoteResp(frm, to, term, draw(st.booleans()), draw(st.booleans()))
    if kind == 4:
        return Heartbeat(frm, to, term, draw(indexes), draw(st.integers(0, 3)))
    if kind == 5:
        return HeartbeatResp(frm, to, term, draw(st.integers(0, 3)))
    if kind == 6:
        snap = Snapshot(draw(st.integers(1, 12)), draw(st.integers(0, term)), VOTERS, b"s")
        return InstallSnapshot(frm, to, term, snap)
    return TimeoutNow(frm, to, term)


@settings(max_examples=1500 if long_run() else 150, deadline=None)
@given(st.data())
def test_any_well_formed_message_sequence_never_raises(data: st.DataObject) -> None:
    """Peers may be stale, duplicated, reordered or lying: the core counts and goes on."""
    net = RaftNet(VOTERS, seed=data.draw(st.integers(0, 3)))
    if data.draw(st.booleans()):
        net.elect("a")
    core = net.core("a")
    for _ in range(data.draw(st.integers(1, 25))):
        if data.draw(st.integers(0, 4)) == 0:
            core.tick()
        else:
            core.step(data.draw(any_message("a")))
        while core.has_ready():
            rd = core.ready()
            core.advance(rd)
        log = core.log
        assert log.applied <= log.committed <= log.last_index
        assert log.snap_index <= log.committed
        assert core.role is not Role.LEADER or core.lead == "a"
