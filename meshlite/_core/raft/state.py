"""The state of one Raft server and its role transitions.

Theory of operation
-------------------
One class holds everything a server knows (thesis Figure 3.1: persistent ``term``,
``vote`` and the log; volatile commit/applied marks; the leader's per-follower
progress), and the transitions between roles, as etcd-io/raft ``raft.go`` does
(``becomeFollower``/``becomePreCandidate``/``becomeCandidate``/``becomeLeader``, ``reset``).
The behaviour is layered on top in subclasses, one concern per module:
``replication.py`` (AppendEntries, commit, InstallSnapshot, ReadIndex), ``election.py``
(terms, votes, ticks) and ``core.py`` (the public API and the Ready/advance cycle).

Every role change goes through :meth:`RaftState.reset`, which clears whatever belongs to
the old term: the vote (only when the term changes: a server votes once per term),
the leader, election timers (re-randomized, thesis §3.4), a leadership transfer in
progress, pending reads and the leader's progress table.

A new leader appends a NOOP entry at once (thesis §6.4): entries of earlier terms are
only committed indirectly, by committing one of the current term, so the NOOP is what
lets a new leader learn its commit index, and what ReadIndex waits for.
"""

from __future__ import annotations

import random
from collections import Counter, deque

from meshlite._core.raft.config import RaftConfig
from meshlite._core.raft.log import RaftLog
from meshlite._core.raft.messages import Message
from meshlite._core.raft.progress import Progress, ProgressState
from meshlite._core.raft.types import Entry, EntryKind, HardState, ReadState, Role

__all__ = ["RaftState"]


class RaftState:
    """Fields and role transitions shared by the layers of :class:`RaftCore`."""

    def __init__(
        self, node_id: str, config: RaftConfig, rng: random.Random, log: RaftLog, hs: HardState
    ) -> None:
        self.id = node_id
        self.cfg = config
        self.rng = rng
        self.log = log
        self.term = hs.term
        self.vote = hs.vote
        self.lead: str | None = None
        self.role = Role.FOLLOWER
        self.progress: dict[str, Progress] = {}
        self.votes: dict[str, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = config.election_ticks
        self.lead_transferee: str | None = None
        self.pending_conf_index = 0
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        # ReadIndex (thesis §6.4): requests waiting for the first commit of our term, and
        # requests waiting for a quorum of heartbeat acks of their sequence number.
        self.read_seq = 0
        self.reads_waiting: list[bytes] = []
        self.reads: deque[tuple[int, int, bytes]] = deque()
        self.read_acks: dict[str, int] = {}
        self.bcast_pending = False  # proposals appended since the last Append broadcast
        self.counters: Counter[str] = Counter()
        self.mutations = config.unsafe_mutations
        self._reset_randomized()

    # -- facts -----------------------------------------------------------------------

    def voters(self) -> tuple[str, ...]:
        return self.log.voters()

    def quorum(self) -> int:
        return len(self.voters()) // 2 + 1

    def promotable(self) -> bool:
        """Only a voter may campaign (etcd-io/raft ``promotable``)."""
        return self.id in self.voters()

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def committed_in_term(self) -> bool:
        """Whether an entry of the current term is committed (thesis §6.4)."""
        return self.log.term(self.log.committed) == self.term

    def send(self, msg: Message) -> None:
        self.msgs.append(msg)

    def drop(self, reason: str) -> None:
        """Count a message we ignore; remote oddities never raise."""
        self.counters[reason] += 1

    # -- transitions -----------------------------------------------------------------

    def _reset_randomized(self) -> None:
        n = self.cfg.election_ticks
        self.randomized_timeout = n + self.rng.randrange(n)

    def reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.lead = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized()
        self.lead_transferee = None
        self.votes = {}
        self.progress = {}
        self.pending_conf_index = 0
        self.reads_waiting.clear()
        self.reads.clear()
        self.read_acks = {}
        self.bcast_pending = False

    def become_follower(self, term: int, lead: str | None) -> None:
        self.reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER

    def become_pre_candidate(self) -> None:
        # Neither the term nor the vote changes: a pre-vote disturbs nobody (thesis §9.6).
        assert self.role is not Role.LEADER, "a leader does not campaign"
        self.votes = {}
        self.lead = None
        self.role = Role.PRE_CANDIDATE

    def become_candidate(self) -> None:
        assert self.role is not Role.LEADER, "a leader does not campaign"
        self.reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def become_leader(self) -> None:
        assert self.role is Role.CANDIDATE, "only a candidate wins an election"
        self.reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        self.sync_progress(newcomers_active=False)
        # No membership change until everything in our log at election is committed
        # (etcd-io/raft's conservative pendingConfIndex).
        self.pending_conf_index = self.log.last_index
        self.append_local([(EntryKind.NOOP, b"")])

    def sync_progress(self, *, newcomers_active: bool = True) -> None:
        """Track exactly the current voters (and ourselves).  A voter added while we lead
        counts as active until the next check-quorum round (etcd-io/raft does the same),
        so adding a server cannot make the leader step down before it has answered."""
        voters = sorted({*self.voters(), self.id})  # sorted: runs replay from a seed
        nxt = self.log.last_index + 1
        for gone in [p for p in self.progress if p not in voters]:
            del self.progress[gone]
        for peer in [p for p in voters if p not in self.progress]:
            pr = Progress(nxt, self.cfg.max_inflight_msgs)
            pr.recent_active = newcomers_active
            self.progress[peer] = pr
        me = self.progress[self.id]
        me.match, me.next, me.recent_active = self.log.last_index, nxt, True
        me.state = ProgressState.REPLICATE

    def append_local(self, items: list[tuple[EntryKind, bytes]]) -> int:
        """The leader appends new entries of its term; returns the last index."""
        last = self.log.last_index
        entries = [
            Entry(last + i, self.term, kind, data) for i, (kind, data) in enumerate(items, 1)
        ]
        self.log.append(entries)
        if any(e.kind is EntryKind.CONFIG for e in entries):
            self.sync_progress()
        me = self.progress[self.id]
        me.match, me.next = self.log.last_index, self.log.last_index + 1
        self.bcast_pending = True
        self.maybe_commit()
        return self.log.last_index

    def maybe_commit(self) -> bool:
        """Overridden in ``replication.py``."""
        raise NotImplementedError
