"""Single-server membership changes (thesis §4.1) and ReadIndex reads (§6.4)."""

from __future__ import annotations

import pytest
from raft_net import RaftNet

from meshlite._core.raft import Append, EntryKind, HardState, Heartbeat, RaftConfig, ReadState, Role
from meshlite.errors import ConfigError, NotLeaderError


def test_add_a_voter_which_catches_up_and_counts_in_quorums() -> None:
    net = RaftNet(["a", "b", "c"])
    net.elect("a")
    net.propose("a", b"before")
    net.add_server("d")  # empty: it waits to hear from a leader
    index = net.core("a").propose_conf_change(add="d")
    net.process("a")
    net.deliver()
    net.tick(n=2)
    for name in "abcd":
        assert net.core(name).voters() == ("a", "b", "c", "d")
    assert net.normal_data("d") == [b"before"]
    assert net.core("a").log.committed >= index
    # Four voters: a quorum is three, so a and one other can no longer commit.
    net.isolate("c")
    net.isolate("d")
    commit = net.core("a").log.committed
    net.propose("a", b"stuck")
    net.deliver()
    assert net.core("a").log.committed == commit


def test_a_configuration_is_in_force_once_appended() -> None:
    net = RaftNet(["a", "b", "c"])
    a = net.elect("a")
    net.tick(n=1)
    net.cut("a", "c")  # the change reaches b only, and is not committed
    net.drop = lambda m: m.frm == "b"  # b's acknowledgement is lost
    a.propose_conf_change(add="d")
    net.process("a")
    net.deliver()
    assert net.core("b").voters() == ("a", "b", "c", "d")  # uncommitted, yet in force
    assert net.core("b").log.committed < net.core("b").log.last_index
    assert net.core("c").voters() == ("a", "b", "c")


def test_remove_a_voter() -> None:
    net = RaftNet(["a", "b", "c"])
    a = net.elect("a")
    net.tick(n=1)
    a.propose_conf_change(remove="c")
    net.process("a")
    net.tick(n=2)
    assert a.voters() == ("a", "b")
    net.crash("c")
    net.propose("a", b"x")
    net.deliver()
    assert a.log.committed == a.log.last_index  # a and b are the whole quorum now
    net.tick(n=1)  # the commit reaches followers with the next heartbeat
    assert net.normal_data("b") == [b"x"]


def test_a_removed_server_cannot_disrupt_the_cluster() -> None:
    """The leader stops replicating to a removed server at once (the change is in force
    when appended), so it never learns of its removal and times out again and again
    (thesis §4.2.3); pre-vote and the followers' lease keep that harmless."""
    net = RaftNet(["a", "b", "c"])
    a = net.elect("a")
    net.tick(n=1)
    a.propose_conf_change(remove="c")
    net.process("a")
    net.tick(n=2)
    term = a.term
    net.tick(n=100)
    assert net.leaders() == ["a"] and a.term == term
    assert net.core("c").term == term  # its pre-votes never succeeded
    net.propose("a", b"x")
    net.tick(n=2)  # the commit reaches followers with the next heartbeat
    assert net.normal_data("b") == [b"x"]


def test_a_leader_that_removes_itself_steps_down_and_the_rest_go_on() -> None:
    net = RaftNet(["a", "b", "c"])
    a = net.elect("a")
    net.tick(n=1)
    index = a.propose_conf_change(remove="a")
    net.process("a")
    assert a.role is Role.LEADER  # it manages the change until it commits (§4.2.2)
    net.deliver()
    assert a.role is Role.FOLLOWER and a.log.committed >= index
    for _ in range(100):
        net.tick()
        if net.leaders():
            break
    (leader,) = net.leaders()
    assert leader in "bc"
    net.propose(leader, b"x")
    net.tick(n=2)  # the commit reaches followers with the next heartbeat
    assert net.normal_data("b") == net.normal_data("c") == [b"x"]
    net.tick(["a"], n=50)
    assert net.core("a").role is Role.FOLLOWER


def test_one_change_at_a_time_and_argument_checks() -> None:
    net = RaftNet(["a", "b", "c"])
    a = net.elect("a")
    net.tick(n=1)
    a.propose_conf_change(add="d")
    with pytest.raises(ConfigError, match="not committed yet"):
        a.propose_conf_change(add="e")
    for kwargs in ({}, {"add": "b"}, {"remove": "zz"}, {"add": "x", "remove": "b"}):
        with pytest.raises(ConfigError):
            a.propose_conf_change(**kwargs)
    with pytest.raises(NotLeaderError):
        net.core("b").propose_conf_change(add="e")


def test_no_change_before_the_new_leader_commits_its_first_entry() -> None:
    net = RaftNet(["a", "b", "c"])
    net.drop = lambda m: isinstance(m, Append)
    a = net.elect("a")  # elected, but its NOOP is not committed
    with pytest.raises(ConfigError, match="first entry"):
        a.propose_conf_change(add="d")


def test_read_index_is_confirmed_by_a_quorum_of_heartbeats() -> None:
    net = RaftNet(["a", "b", "c"])
    a = net.elect("a")
    net.propose("a", b"x")
    net.deliver()
    a.read_index(b"r1")
    net.process("a")
    assert net.reads["a"] == []  # not before a quorum answered
    assert any(isinstance(m, Heartbeat) and m.read_seq == 1 for m in net.queue)
    net.deliver()
    assert net.reads["a"] == [ReadState(a.log.committed, b"r1")]


def test_read_index_on_a_deposed_leader_never_confirms() -> None:
    net = RaftNet(["a", "b", "c"])
    a = net.elect("a")
    net.isolate("a")
    a.read_index(b"r")
    net.process("a")
    net.tick(["a"], n=3 * net.config.election_ticks)
    assert a.role is Role.FOLLOWER
    net.heal()
    net.tick(n=5)
    assert net.reads["a"] == []


def test_read_index_waits_for_the_first_commit_of_the_term() -> None:
    net = RaftNet(["a", "b", "c"])
    net.drop = lambda m: isinstance(m, Append)
    a = net.elect("a")
    a.read_index(b"early")
    net.process("a")
    net.deliver()
    assert net.reads["a"] == []
    net.drop = None
    net.tick(n=2)
    (rs,) = net.reads["a"]
    assert rs.ctx == b"early"
    assert a.log.term(rs.index) == a.term  # at least the NOOP: every earlier commit


def test_read_index_on_a_single_server_and_on_followers() -> None:
    net = RaftNet(["a"])
    a = net.elect("a")
    a.read_index(b"r")
    net.process("a")
    assert net.reads["a"] == [ReadState(a.log.committed, b"r")]
    net3 = RaftNet(["a", "b", "c"])
    net3.elect("a")
    with pytest.raises(NotLeaderError) as info:
        net3.core("b").read_index(b"r")
    assert info.value.leader_hint == "a"


def test_bootstrap_writes_the_same_committed_config_everywhere() -> None:
    net = RaftNet(["c", "a", "b"], RaftConfig())
    for name in "abc":
        core = net.core(name)
        assert core.term == 1 and core.log.committed == 1
        (entry,) = net.applied[name]
        assert entry.kind is EntryKind.CONFIG and entry.index == entry.term == 1
        assert net.servers[name].storage.hard_state == HardState(1, None, 1)
    with pytest.raises(ConfigError, match="already"):
        net.core("a").bootstrap(["a"])
