"""Log compaction, InstallSnapshot to lagging followers, and leadership transfer."""

from __future__ import annotations

import random

import pytest
from raft_net import RaftNet

from meshlite._core.raft import (
    Append,
    InstallSnapshot,
    Message,
    RaftConfig,
    RaftCore,
    Role,
    TimeoutNow,
)
from meshlite.errors import ConfigError, NotLeaderError


def lagging_follower_net(drop_first_snapshot: bool = False) -> RaftNet:
    net = RaftNet(["a", "b", "c"])
    for server in net.servers.values():
        server.compact_every = 5
    net.elect("a")
    net.isolate("c")
    for i in range(30):
        net.propose("a", b"%d" % i)
        net.deliver()
    assert net.core("a").log.snap_index > 10  # c's next entries are compacted away
    if drop_first_snapshot:
        dropped: list[Message] = []

        def drop_one(m: Message) -> bool:
            if isinstance(m, InstallSnapshot) and not dropped:
                dropped.append(m)
                return True
            return False

        net.heal()
        net.drop = drop_one
    else:
        net.heal()
    return net


def test_lagging_follower_is_caught_up_by_snapshot() -> None:
    net = lagging_follower_net()
    net.tick(n=3)
    snaps = [m for m in net.sent if isinstance(m, InstallSnapshot)]
    assert [m.to for m in snaps] == ["c"]
    c = net.servers["c"]
    assert c.sm_index == net.servers["a"].sm_index  # same image, same digest (checked)
    assert c.live().log.snap_index >= snaps[0].snapshot.index
    assert c.storage.snapshot is not None  # the snapshot was persisted, not just applied
    # c applied only the entries after the snapshot: the image stands in for the rest.
    assert net.normal_data("c") == net.normal_data("a")[-len(net.normal_data("c")) :]
    net.propose("a", b"after")
    net.tick(n=2)
    assert net.normal_data("c")[-1] == b"after"


def test_a_lost_snapshot_is_sent_again() -> None:
    net = lagging_follower_net(drop_first_snapshot=True)
    net.tick(n=2)
    assert net.servers["c"].sm_index < net.servers["a"].sm_index
    net.tick(n=net.config.election_ticks + 2)  # the snapshot state times out, and retries
    assert net.servers["c"].sm_index == net.servers["a"].sm_index
    assert len([m for m in net.sent if isinstance(m, InstallSnapshot)]) == 2


def test_restart_after_compaction_restores_from_snapshot_and_log() -> None:
    net = lagging_follower_net()
    net.tick(n=3)
    before = net.core("b").status()
    net.crash("b")
    b = net.restart("b")
    assert b.log.snap_index == before["snapshot_index"]
    assert b.log.last_index == before["last_index"]
    assert (b.term, b.vote) == (before["term"], before["vote"])
    net.tick(n=3)
    assert net.servers["b"].sm_index == net.servers["a"].sm_index


def test_compact_only_applied_entries() -> None:
    net = RaftNet(["a"])
    a = net.elect("a")
    net.propose("a", b"x")
    with pytest.raises(ConfigError, match="applied"):
        a.compact(a.log.applied + 1, b"")
    snap = a.compact(a.log.applied, b"image")
    assert (snap.index, snap.voters, snap.data) == (a.log.applied, ("a",), b"image")
    with pytest.raises(ConfigError):
        a.compact(snap.index, b"again")


def test_transfer_to_an_up_to_date_follower_is_immediate() -> None:
    net = RaftNet(["a", "b", "c"])
    a = net.elect("a")
    net.tick(n=1)
    term = a.term
    a.transfer_leadership("b")
    net.process("a")
    assert any(isinstance(m, TimeoutNow) for m in net.queue)
    net.deliver()  # no ticks: b campaigns at once and c votes despite its leader lease
    assert net.leaders() == ["b"]
    assert net.core("b").term == term + 1
    assert a.role is Role.FOLLOWER and a.leader == "b"


def test_transfer_to_a_lagging_follower_catches_it_up_first() -> None:
    net = RaftNet(["a", "b", "c"])
    a = net.elect("a")
    net.cut("a", "b")
    for i in range(5):
        net.propose("a", b"%d" % i)
    net.deliver()
    net.heal()
    a.transfer_leadership("b")
    net.process("a")
    assert not any(isinstance(m, TimeoutNow) for m in net.queue)
    assert any(isinstance(m, Append) and m.to == "b" for m in net.queue)
    net.deliver()
    assert net.leaders() == ["b"]
    net.tick(n=2)
    assert net.normal_data("b") == [b"%d" % i for i in range(5)]


def test_a_transfer_to_a_dead_server_is_abandoned_after_an_election_timeout() -> None:
    net = RaftNet(["a", "b", "c"])
    a = net.elect("a")
    net.crash("b")
    a.transfer_leadership("b")
    with pytest.raises(NotLeaderError) as info:
        a.propose(b"x")  # no proposals while handing over
    assert info.value.leader_hint == "b"
    net.tick(n=net.config.election_ticks)
    assert a.role is Role.LEADER and a.lead_transferee is None
    net.propose("a", b"x")
    net.tick(n=2)  # the commit reaches followers with the next heartbeat
    assert net.normal_data("c") == [b"x"]


def test_transfer_misuse() -> None:
    net = RaftNet(["a", "b", "c"])
    a = net.elect("a")
    with pytest.raises(ConfigError, match="not a voter"):
        a.transfer_leadership("zz")
    with pytest.raises(NotLeaderError) as info:
        net.core("b").transfer_leadership("c")
    assert info.value.leader_hint == "a"
    a.transfer_leadership("a")  # to ourselves: nothing to do
    assert a.role is Role.LEADER


def test_timeout_now_from_the_leader_is_ignored_by_a_non_voter() -> None:
    core = RaftCore("x", RaftConfig(), random.Random(0))
    core.step(TimeoutNow("a", "x", 0))
    assert core.role is Role.FOLLOWER and core.counters["timeout_now_not_voter"] == 1
