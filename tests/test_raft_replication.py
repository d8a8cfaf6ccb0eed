"""Log replication: commit by quorum, conflict repair, the commit rule (Figure 3.7),
batching and pipelining."""

from __future__ import annotations

import pytest
from raft_net import RaftNet

from meshlite._core.raft import (
    Append,
    AppendResp,
    Entry,
    EntryKind,
    HardState,
    Message,
    RaftConfig,
    Role,
    encode_voters,
)
from meshlite.testing._raft_checks import RaftSafetyError

CLASSIC = RaftConfig(pre_vote=False, check_quorum=False)


def test_replication_commits_on_a_quorum_and_applies_everywhere() -> None:
    net = RaftNet(["a", "b", "c"])
    net.elect("a")
    net.isolate("c")
    indexes = [net.propose("a", b"x%d" % i) for i in range(10)]
    net.deliver()
    assert net.core("a").log.committed == indexes[-1]  # a and b are a majority
    assert net.normal_data("a") == [b"x%d" % i for i in range(10)]
    net.heal()
    net.tick(n=3)  # heartbeats find c behind and catch it up
    for name in "bc":
        assert net.normal_data(name) == net.normal_data("a")
        assert net.core(name).log.committed == indexes[-1]


def test_no_commit_without_a_quorum() -> None:
    net = RaftNet(["a", "b", "c"], CLASSIC)
    net.elect("a")
    commit = net.core("a").log.committed
    net.isolate("a")
    net.propose("a", b"x")
    net.tick(["a"], n=5)
    assert net.core("a").log.committed == commit
    assert net.normal_data("a") == []


LEADER_LOG = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]  # thesis Figure 3.6, top row
FOLLOWER_LOGS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


def figure_log(terms: list[int]) -> list[Entry]:
    """Entry 1 is the configuration; the rest carry (index, term) as data."""
    first = Entry(1, 1, EntryKind.CONFIG, encode_voters(("L", "F", "X")))
    rest = [Entry(i, t, EntryKind.NORMAL, b"%d/%d" % (i, t)) for i, t in enumerate(terms[1:], 2)]
    return [first, *rest]


@pytest.mark.parametrize("case", sorted(FOLLOWER_LOGS))
def test_leader_repairs_each_follower_of_figure_3_6(case: str) -> None:
    net = RaftNet([], CLASSIC)
    net.add_server("L", hard_state=HardState(8, None, 1), entries=figure_log(LEADER_LOG))
    net.add_server("F", hard_state=HardState(7, None, 1), entries=figure_log(FOLLOWER_LOGS[case]))
    net.add_server("X")  # an empty server whose vote elects L when F refuses
    net.elect("L")
    net.propose("L", b"new")
    net.deliver()
    net.tick(n=2)
    leader, follower = net.core("L").log, net.core("F").log
    assert follower.last_index == leader.last_index
    for index in range(1, leader.last_index + 1):
        assert follower.entry(index) == leader.entry(index)
    assert follower.committed == leader.committed == leader.last_index


def figure_8(mutations: frozenset[str]) -> RaftNet:
    """Thesis Figure 3.7 (the "figure 8" of the Raft paper), step by step.

    s1 leads term 2 and places X at index 3 on s2 only; s5 wins term 3 (s3, s4) and
    writes its own entry at 3, alone; s1 wins term 4 and copies X to a majority, without
    anything of term 4 reaching s3 or s4; s5 wins term 5 with s3 and s4 (its last term 3
    beats their 2) and overwrites X.
    X was on a majority, so counting replicas would have called it committed.
    """
    config = RaftConfig(
        pre_vote=False, check_quorum=False, max_append_entries=1, unsafe_mutations=mutations
    )
    net = RaftNet(["s1", "s2", "s3", "s4", "s5"], config)
    net.elect("s1")
    for other in ("s3", "s4", "s5"):
        net.cut("s1", other)
    x_index = net.propose("s1", b"X")
    net.deliver()
    assert net.core("s2").log.entry(x_index) == Entry(x_index, 2, EntryKind.NORMAL, b"X")
    # (b) s1 crashes; s5 wins term 3 with s3 and s4, and its entry 3 goes nowhere.
    net.crash("s1")
    net.heal()
    s5 = net.core("s5")
    s5.campaign()
    net.process("s5")
    net.deliver(until=lambda: s5.role is Role.LEADER)
    net.isolate("s5")
    net.deliver()
    assert s5.log.entry(x_index) == Entry(x_index, 3, EntryKind.NOOP, b"")
    net.crash("s5")
    # (c) s1 restarts and wins term 4; X reaches s3 and s4 but nothing of term 4 does.
    net.heal()
    net.restart("s1")
    net.drop = lambda m: would_take_term_4_entry(net, m)
    s1 = net.campaign_until_leader("s1")
    assert s1.term == 4
    assert [net.core(n).log.term(x_index) for n in ("s2", "s3", "s4")] == [2, 2, 2]
    return net


def would_take_term_4_entry(net: RaftNet, m: Message) -> bool:
    """s3 and s4 may see (and reject) term-4 entries, never accept one."""
    return (
        isinstance(m, Append)
        and m.to in ("s3", "s4")
        and any(e.term == 4 for e in m.entries)
        and net.core(m.to).log.match_term(m.prev_index, m.prev_term)
    )


def test_figure_8_an_old_term_entry_on_a_majority_is_not_committed() -> None:
    net = figure_8(frozenset())
    s1 = net.core("s1")
    assert s1.log.committed == 2  # X is on s1, s2, s3, s4 but is of term 2: not committed
    # (d) s1 crashes, s5 comes back and wins: overwriting X is legal, as it never committed.
    net.crash("s1")
    net.heal()
    net.restart("s5")
    net.campaign_until_leader("s5")
    net.tick(n=3)
    for name in ("s2", "s3", "s4", "s5"):
        assert net.core(name).log.entry(3) == Entry(3, 3, EntryKind.NOOP, b"")
        assert b"X" not in net.normal_data(name)


def test_figure_8_counting_replicas_loses_a_committed_entry() -> None:
    """With the commit rule broken, the checkers see a committed entry vanish."""
    net = figure_8(frozenset({"commit_any_term"}))
    assert net.core("s1").log.committed == 3  # the broken rule commits X...
    net.crash("s1")
    net.heal()
    net.restart("s5")
    with pytest.raises(RaftSafetyError, match="leader completeness"):
        net.campaign_until_leader("s5")  # ...and s5 legally wins without it


def test_batching_bounds_entries_and_bytes_per_append() -> None:
    config = RaftConfig(max_append_entries=5, max_append_bytes=1000, max_inflight_msgs=1000)
    net = RaftNet(["a", "b"], config)
    net.elect("a")
    for i in range(23):  # proposed together: one Ready, so they travel together
        net.core("a").propose(b"%03d" % i + b"y" * (400 if i >= 20 else 0))
    net.process("a")
    net.deliver()
    appends = [m for m in net.sent if isinstance(m, Append) and m.entries]
    sizes = [len(m.entries) for m in appends]
    assert max(sizes) == 5
    assert sizes[-6:] == [5, 5, 5, 5, 2, 1]  # 20-22 are 400+ bytes: two fit in 1000
    net.tick(n=1)  # the commit reaches followers with the next heartbeat
    assert net.normal_data("b") == net.normal_data("a")


def test_pipelining_keeps_a_bounded_window_in_flight() -> None:
    config = RaftConfig(max_append_entries=2, max_inflight_msgs=3)
    net = RaftNet(["a", "b", "c"], config)
    net.elect("a")
    net.tick(n=1)  # followers are in the replicate state now
    for i in range(20):
        net.core("a").propose(b"%d" % i)
    net.process("a")
    in_flight = [m for m in net.queue if isinstance(m, Append) and m.to == "b"]
    assert len(in_flight) == 3  # the window, without waiting for any answer
    assert [len(m.entries) for m in in_flight] == [2, 2, 2]
    net.deliver()
    net.tick(n=2)
    assert net.normal_data("b") == [b"%d" % i for i in range(20)]


def test_lost_and_reordered_appends_are_repaired() -> None:
    net = RaftNet(["a", "b", "c"], RaftConfig(max_append_entries=2, max_inflight_msgs=4))
    net.elect("a")
    dropped: list[Message] = []

    def lossy(m: Message) -> bool:
        if isinstance(m, Append | AppendResp) and len(net.sent) % 3 == 0:
            dropped.append(m)
            return True
        return False

    net.drop = lossy
    for round_ in range(10):
        for i in range(5):
            net.core("a").propose(b"%d-%d" % (round_, i))
        net.process("a")
        net.queue.rotate(3)  # and deliver out of order
        net.tick(n=1)
    assert dropped
    net.drop = None
    net.tick(n=5)
    expected = [b"%d-%d" % (r, i) for r in range(10) for i in range(5)]
    for name in net.names:
        assert net.normal_data(name) == expected


def test_rejection_hints_skip_a_whole_term_per_round_trip() -> None:
    net = RaftNet([], CLASSIC)
    long_tail = [1, 1, 1] + [2] * 30 + [3] * 30
    net.add_server("L", hard_state=HardState(8, None, 1), entries=figure_log([1, 1, 1, 4]))
    net.add_server("F", hard_state=HardState(7, None, 1), entries=figure_log(long_tail))
    net.add_server("X")
    net.elect("L")
    rejections = [m for m in net.sent if isinstance(m, AppendResp) and m.frm == "F" and m.reject]
    assert len(rejections) <= 3  # not one per conflicting entry (60)
    assert net.core("F").log.last_index == net.core("L").log.last_index


def test_a_commit_alone_is_not_broadcast_but_rides_the_next_heartbeat() -> None:
    # An empty Append per follower per commit would double a busy leader's messages.
    net = RaftNet(["a", "b", "c"])
    a = net.elect("a")
    net.tick(n=1)
    net.sent.clear()
    index = net.propose("a", b"x")
    net.deliver()
    assert a.log.committed == index
    appends = [m for m in net.sent if isinstance(m, Append)]
    assert appends and all(m.entries for m in appends), "no empty Append for the commit"
    assert net.normal_data("b") == net.normal_data("c") == []
    net.tick(n=1)
    assert net.normal_data("b") == net.normal_data("c") == [b"x"]


def _appends_to(net: RaftNet, to: str, queued: bool = False) -> list[int]:
    """Entries per non-empty Append to ``to``, sent so far (or only still queued)."""
    msgs = net.queue if queued else net.sent
    return [len(m.entries) for m in msgs if isinstance(m, Append) and m.to == to and m.entries]


@pytest.mark.parametrize("hold", [True, False])
def test_partial_batches_wait_for_the_append_in_flight(hold: bool) -> None:
    """Nagle's rule (``hold_partial_appends``): while an Append is in flight to a follower,
    entries that would not fill one wait for its acknowledgement and then go together; a
    full batch is pipelined at once. Without the rule every burst is an Append of its own."""
    net = RaftNet(["a", "b", "c"], RaftConfig(max_append_entries=4, hold_partial_appends=hold))
    net.elect("a")
    net.tick(n=1)  # followers replicate now
    sent_before = len(_appends_to(net, "b"))
    for i in range(3):  # three bursts of one entry, none answered yet
        net.propose("a", b"p%d" % i)
    assert _appends_to(net, "b", queued=True) == ([1] if hold else [1, 1, 1])
    for i in range(4):  # a full batch's worth in one Ready: pipelined behind the first
        net.core("a").propose(b"f%d" % i)
    net.process("a")
    assert _appends_to(net, "b", queued=True) == ([1, 4] if hold else [1, 1, 1, 4])
    net.deliver()  # the first acknowledgement releases what was held, as one Append
    net.tick(n=1)
    assert _appends_to(net, "b")[sent_before:] == ([1, 4, 2] if hold else [1, 1, 1, 4])
    assert net.normal_data("b") == net.normal_data("a")
    assert net.normal_data("a")[-7:] == [b"p0", b"p1", b"p2", b"f0", b"f1", b"f2", b"f3"]


def test_a_lost_append_holds_entries_only_until_a_heartbeat_response() -> None:
    net = RaftNet(["a", "b", "c"])
    net.elect("a")
    net.tick(n=1)
    lost: list[Message] = []

    def lose_first_append_to_b(m: Message) -> bool:
        if isinstance(m, Append) and m.to == "b" and m.entries and not lost:
            lost.append(m)
            return True
        return False

    net.drop = lose_first_append_to_b
    for i in range(3):
        net.propose("a", b"x%d" % i)
        net.deliver()  # c answers: committed; b's entries wait behind the lost Append
    assert lost and net.core("a").log.committed == net.core("a").log.last_index
    assert net.core("b").log.last_index < net.core("a").log.last_index
    net.tick(n=2)  # a heartbeat response frees the slot: b is repaired and caught up
    assert net.normal_data("b") == net.normal_data("a")
