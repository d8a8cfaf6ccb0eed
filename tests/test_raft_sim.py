"""Deterministic simulation of 3- and 5-server Raft clusters under faults.

Every run checks, after every change: one leader per term, log matching, committed
entries never lost or changed (and held by every later leader), every server applying
the same sequence, linearizable ReadIndex reads, every acknowledged proposal committed,
and progress once the faults stop.  A failure prints ``replay with MESHLITE_SEED=...``;
``MESHLITE_LONG=1`` runs thousands of seeds.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from replays import outputs_under_hash_seeds

from meshlite._core.raft import Entry, HardState, RaftConfig, Snapshot
from meshlite._raft_storage import RaftStorage
from meshlite.testing import replay_hint, sim_seeds
from meshlite.testing.raft_sim import (
    Faults,
    RaftSafetyError,
    RaftSim,
    SafetyChecker,
    SimResult,
    SimStorage,
    run_seed,
)


def check(seed: int, servers: int, **kwargs: object) -> SimResult:
    with replay_hint(seed):
        result = run_seed(seed, servers, **kwargs)  # type: ignore[arg-type]
    assert result.leaders >= 1 and result.acknowledged > 0, result  # not vacuous
    return result


@pytest.mark.parametrize("seed", sim_seeds(250, long_count=3000, base=0))
def test_three_servers(seed: int) -> None:
    check(seed, 3)


@pytest.mark.parametrize("seed", sim_seeds(150, long_count=2000, base=100_000))
def test_five_servers(seed: int) -> None:
    check(seed, 5)


CLASSIC = RaftConfig(pre_vote=False, check_quorum=False)


@pytest.mark.parametrize("servers", [3, 5])
@pytest.mark.parametrize("seed", sim_seeds(30, long_count=300, base=200_000))
def test_classic_raft_without_pre_vote_or_check_quorum(seed: int, servers: int) -> None:
    check(seed, servers, config=CLASSIC)


TIGHT = RaftConfig(max_append_entries=2, max_append_bytes=64, max_inflight_msgs=2)


@pytest.mark.parametrize("seed", sim_seeds(40, long_count=300, base=300_000))
def test_tight_flow_control(seed: int) -> None:
    check(seed, 3, config=TIGHT)


HARSH = Faults(loss=0.3, duplicate=0.1, reorder=0.3)


@pytest.mark.parametrize("seed", sim_seeds(40, long_count=300, base=400_000))
def test_harsh_network(seed: int) -> None:
    check(seed, 5, faults=HARSH)


# Saving takes 1-30 ms of simulated time while the server keeps stepping and ticking, as
# meshlite._raft_node does with sqlite in a worker thread.
SLOW_DISK = Faults(persist_s=(0.001, 0.03))


@pytest.mark.parametrize("servers", [3, 5])
@pytest.mark.parametrize("seed", sim_seeds(30, long_count=300, base=500_000))
def test_persisting_while_stepping(seed: int, servers: int) -> None:
    check(seed, servers, faults=SLOW_DISK)


# Crashes every few hundred milliseconds while saves take 5-50 ms: a crash often lands
# between a message and the save it depends on.  (The leader sends before it saves.)
CRASHY_SLOW_DISK = Faults(
    persist_s=(0.005, 0.05), nemesis_every_s=(0.1, 0.5), down_s=(0.1, 1.0), membership=False
)


@pytest.mark.parametrize("servers", [3, 5])
@pytest.mark.parametrize("seed", sim_seeds(15, long_count=300, base=550_000))
def test_crashes_while_the_leader_replicates_before_it_saves(seed: int, servers: int) -> None:
    check(seed, servers, faults=CRASHY_SLOW_DISK)


def test_runs_replay_exactly_whatever_the_hash_seed() -> None:
    """Same seed, same run: also across processes with different string hashing."""
    code = (
        "from meshlite.testing.raft_sim import run_seed;"
        "print([run_seed(s, 5, duration_s=4.0) for s in (7, 8)])"
    )
    assert len(outputs_under_hash_seeds(code)) == 1
    assert run_seed(7, 5, duration_s=4.0) == run_seed(7, 5, duration_s=4.0)


def caught(mutation: str, servers: int, seeds: range, **kwargs: object) -> list[str]:
    config = RaftConfig(unsafe_mutations={mutation})
    found = []
    for seed in seeds:
        try:
            run_seed(seed, servers, config=config, **kwargs)  # type: ignore[arg-type]
        except RaftSafetyError as exc:
            found.append(str(exc))
        except AssertionError:
            pass  # a broken core may also stall; only safety findings count here
    return found


def test_checkers_catch_votes_granted_without_the_log_check() -> None:
    """A mutation self-check: if the checkers could not fail, passing proves nothing."""
    found = caught("vote_without_log_check", 3, range(20))
    assert len(found) >= 2, found
    assert any("leader completeness" in f for f in found)


def test_log_and_apply_checkers_catch_it_without_the_leader_check() -> None:
    found = []
    for seed in range(30):
        checker = SafetyChecker(leader_completeness=False)
        found += caught("vote_without_log_check", 3, range(seed, seed + 1), checker=checker)
    assert found, "only the leader-completeness check can see this bug?"
    assert all("leader completeness" not in f for f in found)
    assert any("committed entry changed" in f or "diverge" in f for f in found), found


def test_checkers_catch_reads_served_without_a_quorum() -> None:
    found = caught("read_without_quorum", 5, range(20))
    assert found and all("stale read" in f for f in found), found


class MirroredDisk(SimStorage):
    """The simulated disk, with every write replayed into the real sqlite store."""

    def __init__(self, disk: SimStorage) -> None:
        super().__init__()
        self.real = RaftStorage.open(None, durable=False)
        hs, snap, entries = disk.load()  # what booting wrote before we looked
        self.save(hs, entries, snap)

    def save(self, hs: HardState | None, entries: Sequence[Entry], snap: Snapshot | None) -> None:
        super().save(hs, entries, snap)
        self.real.save(hs, entries, snap)

    def compact(self, upto: int) -> None:
        super().compact(upto)
        self.real.compact(upto)


def test_the_simulated_disk_behaves_like_the_sqlite_store() -> None:
    """Every save and compaction of a faulty run, replayed into ``RaftStorage``: both
    hold the same thing afterwards, so the simulation's crashes are the real ones."""
    sim = RaftSim(12, 3, faults=Faults(persist_s=(0.001, 0.01)))
    disks = {}
    for name, server in sim.servers.items():
        server.storage = disks[name] = MirroredDisk(server.storage)
    result = sim.run(duration_s=6.0)
    assert result.crashes and result.commit > 20
    for disk in disks.values():
        assert disk.real.load() == disk.load()
        disk.real.close()


def test_checkers_catch_followers_that_acknowledge_before_persisting() -> None:
    """Only a leader may send before its save completes (``Ready.messages_first``): a vote
    or an acknowledgement sent first can be taken back by a crash, and the checkers see
    the committed entries that then change."""
    found = caught("send_before_persist", 3, range(40), faults=CRASHY_SLOW_DISK)
    assert found, "sending before persisting went unnoticed"
