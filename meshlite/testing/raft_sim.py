"""Deterministic simulation of Raft clusters under faults, with safety checkers.

Theory of operation
-------------------
FoundationDB's simulator and TigerBeetle's VOPR in miniature, for ``meshlite._core.raft``:
3 or 5 servers run in one thread on a simulated clock (``_raft_cluster.py``: event loop,
faulty network, persistence; ``_raft_node.py``: each server's driver, storage and state
machine), deterministic from a seed, so a failure replays exactly
(``MESHLITE_SEED=<seed>``, printed by :func:`meshlite.testing.replay_hint`).

A *nemesis* acts every few hundred milliseconds: it splits the servers into two random
groups, isolates the leader, heals, crashes a server (its core and state machine vanish;
it restarts later from its storage alone — what it persisted before sending is all it
has), transfers leadership, or removes and re-adds a voter one at a time.  Clients
propose unique commands to whoever believes it leads and ask for ReadIndex reads; a
proposal is *acknowledged* when the server that accepted it applies it at the index it
returned (what a real driver reports to its caller).

Checked after every change (``_raft_checks.py``): one leader per term, log matching,
committed entries never lost or changed, every new leader holding everything committed,
every server applying the same sequence; here also: every ReadIndex read returns an
index at least the highest commit index known when it was asked (linearizable reads),
and at the end every acknowledged proposal is committed at its index.  After the fault
period the cluster is healed and must elect a leader, commit a final command and bring
every server up to it (liveness, owed only once the network behaves).
"""

from __future__ import annotations

from typing import Any

import attrs

from meshlite._core.raft import Entry, RaftConfig, ReadState, Role
from meshlite.errors import ConfigError, NotLeaderError
from meshlite.testing._raft_checks import RaftSafetyError, SafetyChecker
from meshlite.testing._raft_cluster import RESTART, Faults, RaftCluster
from meshlite.testing._raft_node import SimServer, SimStorage

__all__ = [
    "Faults",
    "RaftSafetyError",
    "RaftSim",
    "SafetyChecker",
    "SimResult",
    "SimServer",
    "SimStorage",
    "run_seed",
]

NEMESIS, CLIENT = 10, 11
# After healing, at most this much loss, duplication and reordering (Faults' defaults).
_CALM = 0.05
_ACTIONS = ("split", "isolate_leader", "heal", "crash", "transfer", "membership", "calm")
_WEIGHTS = (3, 2, 4, 3, 1, 2, 2)


@attrs.frozen
class SimResult:
    """What happened in one run (every safety check passed if you hold one)."""

    seed: int
    servers: int
    proposed: int
    acknowledged: int
    reads_confirmed: int
    leaders: int  # distinct terms that had a leader
    commit: int
    crashes: int
    checks: int
    events: int
    trace: str  # digest of every delivered message, in order: equal runs, equal traces


class RaftSim(RaftCluster):
    """A seeded cluster of ``servers`` Raft servers under ``faults``, with clients."""

    def __init__(
        self,
        seed: int,
        servers: int = 3,
        *,
        faults: Faults | None = None,
        config: RaftConfig | None = None,
        compact_every: tuple[int, int] = (10, 40),
        checker: SafetyChecker | None = None,
    ) -> None:
        super().__init__(
            seed,
            servers,
            faults if faults is not None else Faults(),
            config if config is not None else RaftConfig(),
            checker if checker is not None else SafetyChecker(),
            compact_every,
        )
        self.handlers[NEMESIS] = self._nemesis
        self.handlers[CLIENT] = self._client
        self._pending: dict[tuple[str, int, int], bytes] = {}
        self._reads: dict[bytes, int] = {}
        self.acked: dict[int, bytes] = {}
        self.proposed = self.reads_confirmed = 0
        for server in self.servers.values():
            self.boot(server, voters=self.names)

    def run(self, duration_s: float = 10.0, settle_s: float = 6.0) -> SimResult:
        """Faults for ``duration_s``, then heal and require progress within ``settle_s``."""
        self.at(self.rng.uniform(*self.faults.nemesis_every_s), NEMESIS, None)
        self.at(0.05, CLIENT, None)
        self.run_until(duration_s)
        self._heal_all()
        self._settle(duration_s + settle_s)
        self._final_checks()
        return self.result()

    def result(self) -> SimResult:
        """What the run did, so far: the figures a test asserts on and the trace."""
        return SimResult(
            seed=self.seed,
            servers=len(self.names),
            proposed=self.proposed,
            acknowledged=len(self.acked),
            reads_confirmed=self.reads_confirmed,
            leaders=len(self.checker.leaders),
            commit=self.checker.max_committed,
            crashes=self.crashes,
            checks=self.checker.checks,
            events=self.events,
            trace=self.trace(),
        )

    # -- faults ----------------------------------------------------------------------

    def _nemesis(self, _: None) -> None:
        rng = self.rng
        weights = [0 if a == "membership" and not self.faults.membership else w
                   for a, w in zip(_ACTIONS, _WEIGHTS, strict=True)]  # fmt: skip
        action = rng.choices(_ACTIONS, weights=weights)[0]
        leader = self.a_leader()
        if action == "split":
            self.group = {n: rng.randrange(2) for n in self.names}
        elif action == "isolate_leader" and leader is not None:
            self.group = dict.fromkeys(self.names, 0)
            self.group[leader.name] = 1
        elif action == "heal":
            self.group = dict.fromkeys(self.names, 0)
        elif action == "crash":
            self.crash(rng.choice(self.names))
        elif action == "transfer" and leader is not None:
            core = leader.live()
            others = [v for v in core.voters() if v != leader.name]
            if others:
                core.transfer_leadership(rng.choice(others))
                self.process(leader)
        elif action == "membership" and leader is not None:
            self._reconfigure(leader)
        self.at(self.now + rng.uniform(*self.faults.nemesis_every_s), NEMESIS, None)

    def a_leader(self) -> SimServer | None:
        """A random server that believes it leads (a stale one, sometimes)."""
        leaders = [s for s in self.servers.values() if s.core and s.core.role is Role.LEADER]
        return self.rng.choice(leaders) if leaders else None

    def newest_leader(self) -> SimServer | None:
        """The leader of the latest term (a stale one may linger, cut off and removed)."""
        leaders = [s for s in self.servers.values() if s.core and s.core.role is Role.LEADER]
        return max(leaders, key=lambda s: s.live().term, default=None)

    def _reconfigure(self, leader: SimServer, *, add_only: bool = False) -> None:
        core = leader.live()
        voters = core.voters()
        missing = [n for n in self.names if n not in voters]
        try:
            if missing:
                core.propose_conf_change(add=self.rng.choice(missing))
            elif not add_only and len(voters) > 1:
                others = [v for v in voters if v != leader.name]
                core.propose_conf_change(remove=self.rng.choice(others))
        except (ConfigError, NotLeaderError):
            return  # a change in progress, or a transfer: try again next time
        self.process(leader)

    def _heal_all(self) -> None:
        """The end of the storm: no partitions, everyone up, a network no worse than a
        default one (liveness is only owed once the network behaves)."""
        f = self.faults
        calm = min(f.loss, _CALM), min(f.duplicate, _CALM), min(f.reorder, _CALM)
        self.faults = attrs.evolve(f, loss=calm[0], duplicate=calm[1], reorder=calm[2])
        self.group = dict.fromkeys(self.names, 0)
        self.drop_events(NEMESIS, RESTART)
        for server in self.servers.values():
            if server.core is None:
                self.boot(server)

    # -- clients ---------------------------------------------------------------------

    def _client(self, _: None) -> None:
        leader = self.a_leader()
        if leader is not None:
            if self.rng.random() < 0.25:
                self._read(leader)
            else:
                self._propose(leader, f"{self.seed}:{self.proposed}".encode())
        self.at(self.now + self.rng.uniform(0.01, 0.1), CLIENT, None)

    def _propose(self, leader: SimServer, data: bytes) -> int | None:
        try:
            index = leader.live().propose(data)
        except NotLeaderError:
            return None
        self.proposed += 1
        self._pending[(leader.name, leader.incarnation, index)] = data
        self.process(leader)
        return index

    def _read(self, leader: SimServer) -> None:
        ctx = f"read:{self.events}".encode()
        try:
            leader.live().read_index(ctx)
        except NotLeaderError:
            return
        self._reads[ctx] = self.checker.max_committed
        self.process(leader)

    def on_applied(self, server: SimServer, entry: Entry) -> None:
        data = self._pending.pop((server.name, server.incarnation, entry.index), None)
        if data is not None and data == entry.data:
            self.acked[entry.index] = data

    def on_read(self, server: SimServer, rs: ReadState) -> None:
        at_least = self._reads.pop(rs.ctx)
        if rs.index < at_least:
            raise RaftSafetyError(
                f"stale read on {server.name}: read index {rs.index} < commit {at_least}"
                " known when the read was asked"
            )
        self.reads_confirmed += 1

    # -- the end ---------------------------------------------------------------------

    def _settle(self, end: float) -> None:
        """Re-add missing voters and commit one more command everywhere, by ``end``."""
        marker = b"final-marker"
        placed: list[tuple[str, int, int]] = []  # (server, incarnation, index) per attempt

        def done() -> bool:
            if placed and self.acked.get(placed[-1][2]) == marker:
                return all(s.sm_index >= placed[-1][2] for s in self.servers.values())
            leader = self.newest_leader()
            if leader is None:
                return False
            if (
                placed
                and placed[-1] in self._pending
                and placed[-1][:2] == (leader.name, leader.incarnation)
            ):
                return False  # still on its way
            if len(leader.live().voters()) < len(self.names):
                self._reconfigure(leader, add_only=True)
            elif (index := self._propose(leader, marker)) is not None:
                placed.append((leader.name, leader.incarnation, index))
            return False

        self.drop_events(CLIENT)
        self.run_until(end, done)
        if not done():
            raise AssertionError(
                f"liveness: no progress {end - self.now:.1f}s after healing"
                f" (t={self.now:.2f}s; status {self._statuses()})"
            )

    def _statuses(self) -> list[dict[str, Any]]:
        return [s.core.status() for s in self.servers.values() if s.core is not None]

    def _final_checks(self) -> None:
        for index, data in self.acked.items():
            entry = self.checker.committed.get(index)
            if entry is None or entry.data != data:
                raise RaftSafetyError(f"acknowledged proposal {data!r} at {index} not committed")


def run_seed(seed: int, servers: int = 3, **kwargs: Any) -> SimResult:
    """One simulated run with default faults; raises on any violated property."""
    duration_s = kwargs.pop("duration_s", 10.0)
    return RaftSim(seed, servers, **kwargs).run(duration_s=duration_s)
