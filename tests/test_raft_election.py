"""Raft elections: timeouts, split votes, stale leaders, pre-vote, check-quorum, votes."""

from __future__ import annotations

import random

import pytest
from raft_net import RaftNet

from meshlite._core.raft import (
    AppendResp,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    RaftConfig,
    RaftCore,
    Ready,
    Role,
    Vote,
    VoteResp,
    encode_voters,
)

CLASSIC = RaftConfig(pre_vote=False, check_quorum=False)


def ticks_until_leader(net: RaftNet, limit: int = 200) -> str:
    for _ in range(limit):
        net.tick()
        leaders = net.leaders()
        if leaders:
            assert len(leaders) == 1
            return leaders[0]
    raise AssertionError("no leader elected")


def test_single_server_leads_and_commits_alone() -> None:
    net = RaftNet(["a"])
    core = net.elect("a")
    index = net.propose("a", b"x")
    assert core.log.committed == index
    assert net.normal_data("a") == [b"x"]


def test_election_by_timeout_elects_exactly_one_leader() -> None:
    net = RaftNet(["a", "b", "c"], seed=3)
    leader = ticks_until_leader(net)
    net.tick(n=2)
    term = net.core(leader).term
    for name in net.names:
        core = net.core(name)
        assert (core.leader, core.term) == (leader, term)
        # The new leader's NOOP (thesis §6.4) is committed and applied everywhere.
        assert net.applied[name][-1] == Entry(2, term, EntryKind.NOOP, b"")


def test_randomized_timeouts_differ_between_servers() -> None:
    cores = [RaftCore(f"n{i}", RaftConfig(), random.Random(i)) for i in range(8)]
    timeouts = {c.randomized_timeout for c in cores}
    assert len(timeouts) > 1
    assert all(10 <= t < 20 for t in timeouts)


def test_split_vote_then_a_later_election_succeeds() -> None:
    net = RaftNet(["a", "b", "c"], CLASSIC, seed=1)
    net.isolate("c")
    for name in ("a", "b"):  # both time out at once and vote for themselves
        net.core(name).campaign()
        net.process(name)
    net.deliver()
    assert net.leaders() == []
    assert [net.core(n).role for n in "ab"] == [Role.CANDIDATE, Role.CANDIDATE]
    assert net.core("a").term == net.core("b").term == 2
    net.heal()
    leader = ticks_until_leader(net)
    assert net.core(leader).term >= 3


def test_stale_leader_steps_down_and_its_proposals_are_discarded() -> None:
    net = RaftNet(["a", "b", "c"], RaftConfig(check_quorum=False), seed=2)
    net.elect("a")
    net.isolate("a")
    net.propose("a", b"never-committed")
    net.deliver()
    new = ticks_until_leader_among(net, ["b", "c"])
    assert net.core("a").role is Role.LEADER  # it has not heard of the new term yet
    net.propose(new, b"committed")
    net.heal()
    net.tick(["a"])  # a's heartbeat reaches a server of a later term, which answers
    assert net.core("a").role is Role.FOLLOWER
    assert net.core("a").term == net.core(new).term
    net.tick(n=3)
    for name in net.names:
        assert net.normal_data(name) == [b"committed"]


def ticks_until_leader_among(net: RaftNet, names: list[str], limit: int = 200) -> str:
    for _ in range(limit):
        net.tick(names)
        leaders = [n for n in names if net.core(n).role is Role.LEADER]
        if leaders:
            return leaders[0]
    raise AssertionError("no leader elected")


@pytest.mark.parametrize("pre_vote", [True, False])
def test_pre_vote_keeps_a_rejoining_server_from_disrupting(pre_vote: bool) -> None:
    config = RaftConfig(pre_vote=pre_vote, check_quorum=pre_vote)
    net = RaftNet(["a", "b", "c"], config, seed=4)
    net.elect("a")
    term = net.core("a").term
    net.isolate("c")
    net.tick(n=100)  # c times out again and again on its own
    net.heal()
    net.tick(n=2 * net.config.election_ticks)
    if pre_vote:
        assert net.core("c").term == term  # pre-votes failed: c never raised its term
        assert net.core("a").role is Role.LEADER and net.core("a").term == term
    else:
        assert net.core("c").term > term + 3  # classic Raft: c's term ran away...
        assert net.core("a").term > term  # ...and deposed a healthy leader on return
    net.tick(n=60)
    assert len(net.leaders()) == 1


def test_check_quorum_makes_an_isolated_leader_step_down() -> None:
    net = RaftNet(["a", "b", "c"], seed=5)
    net.elect("a")
    net.isolate("a")
    net.tick(["a"], n=net.config.election_ticks - 1)
    assert net.core("a").role is Role.LEADER
    # It heard from both just before: the first check passes, the second cannot.
    net.tick(["a"], n=net.config.election_ticks + 1)
    assert net.core("a").role is Role.FOLLOWER
    assert net.core("a").leader is None


def test_without_check_quorum_an_isolated_leader_stays() -> None:
    net = RaftNet(["a", "b", "c"], CLASSIC, seed=5)
    net.elect("a")
    net.isolate("a")
    net.tick(["a"], n=100)
    assert net.core("a").role is Role.LEADER


def test_followers_ignore_votes_while_their_leader_is_alive() -> None:
    net = RaftNet(["a", "b", "c"], seed=6)
    net.elect("a")
    b = net.core("b")
    term = b.term
    b.step(Vote("c", "b", term + 5, 99, term, pre=False))
    assert b.term == term and b.vote == "a"
    assert not b.has_ready() or not b.ready().messages
    assert b.counters["vote_in_lease"] == 1


def log_entries(log_terms: list[int]) -> list[Entry]:
    entries = [Entry(1, 1, EntryKind.CONFIG, encode_voters(("a", "b", "c")))]
    return entries + [Entry(i, t, EntryKind.NORMAL, b"") for i, t in enumerate(log_terms, 2)]


def follower(
    log_terms: list[int], term: int, vote: str | None = None, config: RaftConfig = CLASSIC
) -> RaftCore:
    hs = HardState(term, vote, 1)
    return RaftCore("b", config, random.Random(0), hs, None, log_entries(log_terms))


@pytest.mark.parametrize(
    ("cand_last", "granted"),
    [((3, 2), True), ((4, 2), True), ((2, 2), False), ((9, 1), False), ((2, 3), True)],
)
def test_vote_requires_an_up_to_date_log(cand_last: tuple[int, int], granted: bool) -> None:
    b = follower([2, 2], term=2)  # last entry (3, term 2)
    b.step(Vote("c", "b", 3, cand_last[0], cand_last[1]))
    (resp,) = b.ready().messages
    assert resp == VoteResp("b", "c", 3, reject=not granted)


def test_one_vote_per_term_survives_a_restart() -> None:
    b = follower([], term=1)
    b.step(Vote("c", "b", 2, 1, 1))
    rd = b.ready()
    # Persist before send: the vote is in the same Ready as the answer that reveals it.
    assert rd.hard_state == HardState(2, "c", 1)
    assert rd.messages == (VoteResp("b", "c", 2, reject=False),)
    restarted = RaftCore("b", CLASSIC, random.Random(1), rd.hard_state, None, log_entries([]))
    restarted.step(Vote("a", "b", 2, 1, 1))
    assert drain(restarted).messages == (VoteResp("b", "a", 2, reject=True),)
    restarted.step(Vote("c", "b", 2, 1, 1))  # the same candidate again: yes again
    assert drain(restarted).messages == (VoteResp("b", "c", 2, reject=False),)


def drain(core: RaftCore) -> Ready:
    rd = core.ready()
    core.advance(rd)
    return rd


def test_pre_vote_changes_no_term_and_no_vote() -> None:
    b = follower([], term=3, vote="a")
    b.step(Vote("c", "b", 4, 1, 1, pre=True))
    rd = b.ready()
    assert rd.messages == (VoteResp("b", "c", 4, reject=False, pre=True),)
    assert (b.term, b.vote) == (3, "a")


def test_stale_messages_get_our_term_back() -> None:
    b = follower([], term=5, config=RaftConfig())
    b.step(Vote("c", "b", 4, 9, 9, pre=True))
    b.step(AppendResp("c", "b", 2, 1))  # ignored
    b.step(Heartbeat("a", "b", 3, 0))
    rd = b.ready()
    assert rd.messages == (
        VoteResp("b", "c", 5, reject=True, pre=True),
        AppendResp("b", "a", 5, 0, reject=True),
    )
    assert b.counters["stale_term"] == 1
