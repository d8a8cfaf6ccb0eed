"""RaftCore: the public face of the sans-I/O Raft server.

Theory of operation
-------------------
The shape of etcd-io/raft's ``RawNode`` (``rawnode.go``): the driver feeds in time
(:meth:`RaftCore.tick`), peer messages (:meth:`~RaftCore.step`) and client requests
(:meth:`~RaftCore.propose`, :meth:`~RaftCore.read_index`, ...), and takes out work in
:class:`~meshlite._core.raft.types.Ready` batches: persist, then send, then apply, then
:meth:`~RaftCore.advance`.  Nothing here does I/O, reads a clock or draws randomness
other than from the injected ``random.Random``, so a whole cluster runs deterministically
in one thread (``meshlite.testing.raft_sim``).

A Ready holds: the hard state if it changed; the log entries not yet persisted; an
installed snapshot to persist and restore; committed entries not yet handed out; the
messages produced since the last Ready; confirmed reads; and the soft state (leader,
role) if it changed.  Persist-before-send matters for the hard state (a vote must not be
forgotten: thesis §3.8) and for entries (an acknowledgement promises durability).  A
leader's messages promise neither, so a leader whose term and vote are already durable
may send first and persist in parallel (``Ready.messages_first``; thesis §10.2.1, etcd's
``raftNode``): replication overlaps the leader's own sync.  That is safe because the
leader counts its own unsaved entries toward a commit only inside the core — the commit
can be applied, answered or sent out only in a later Ready, and no later Ready exists
until this one is persisted and advanced.  For the same reason the committed entries a
server had persisted before a Ready (``Ready.durable_committed``: all of them on a
leader of several voters) may be applied while its new entries are saved, as etcd's
server applies alongside its WAL write: a commit then waits for no sync of the leader's.  A
driver may keep calling ``step``/``tick``/``propose`` while a Ready is being persisted
(etcd-io/raft allows it too): what they produce waits for the next Ready, and
``advance`` marks as durable only entries whose index and term are unchanged (an
index and term name one entry, thesis §3.5), so a truncation in between is safe.  Only
``ready`` must not be called again before ``advance``.

Restart: construct the core from what storage holds (hard state, latest snapshot,
entries after it).  First boot: :meth:`RaftCore.bootstrap` with the initial voters, on
every founding server alike (etcd-io/raft ``Bootstrap``): it writes the same CONFIG entry
at index 1, term 1, committed, so the founders agree on the configuration without an
election.  A server added later starts empty and receives the log from the leader.

Log compaction (thesis §5.1): once the state machine has applied an index, the driver
takes a snapshot of it and calls :meth:`RaftCore.compact`, which returns the
:class:`~meshlite._core.raft.types.Snapshot` (with the voters at that index) for the
driver to store; the core then forgets the covered entries and sends that snapshot to
followers that need them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from meshlite._core.raft.config import RaftConfig
from meshlite._core.raft.election import Elector
from meshlite._core.raft.log import RaftLog
from meshlite._core.raft.messages import TimeoutNow
from meshlite._core.raft.types import (
    EMPTY_HARD_STATE,
    Entry,
    EntryKind,
    HardState,
    Ready,
    Role,
    Snapshot,
    SoftState,
    encode_voters,
)
from meshlite._core.wire_checks import DecodeError, check_name
from meshlite.errors import ConfigError, NotLeaderError

__all__ = ["RaftCore"]


class RaftCore(Elector):
    """One Raft server, restored from ``hard_state``, ``snapshot`` and ``entries``."""

    def __init__(
        self,
        node_id: str,
        config: RaftConfig,
        rng: random.Random,
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
        entries: Sequence[Entry] = (),
    ) -> None:
        _check_id(node_id)
        hs = EMPTY_HARD_STATE if hard_state is None else hard_state
        after = 0 if snapshot is None else snapshot.index
        kept = [e for e in entries if e.index > after]
        for expected, entry in enumerate(kept, start=after + 1):
            if entry.index != expected:
                raise ConfigError(
                    f"raft log from storage has a gap: entry {expected} missing (found"
                    f" {entry.index}); the store is damaged"
                )
        log = RaftLog(snapshot, kept)
        if hs.commit > log.last_index:
            raise ConfigError(
                f"raft hard state commits index {hs.commit} but the log ends at"
                f" {log.last_index}; the store is damaged"
            )
        log.committed = max(hs.commit, log.snap_index)
        super().__init__(node_id, config, rng, log, hs)
        self._prev_hard = hs
        self._prev_soft = SoftState(None, Role.FOLLOWER)
        self._unadvanced: Ready | None = None

    # -- first boot ------------------------------------------------------------------

    def bootstrap(self, voters: Sequence[str]) -> None:
        """Found the cluster with ``voters`` (ourselves included); first boot only."""
        if self.log.last_index != 0 or self.term != 0:
            raise ConfigError("raft bootstrap: this server already has state; bootstrap once")
        members = tuple(sorted(voters))
        for name in members:
            _check_id(name)
        if self.id not in members or len(set(members)) != len(members):
            raise ConfigError(
                f"raft bootstrap: voters {list(voters)} must be distinct and include {self.id!r}"
            )
        self.log.append([Entry(1, 1, EntryKind.CONFIG, encode_voters(members))])
        self.log.committed = 1
        self.become_follower(1, None)

    # -- requests --------------------------------------------------------------------

    def campaign(self, *, pre: bool | None = None, transfer: bool = False) -> None:
        """Start an election now (tests, single-server start-up); no-op on the leader."""
        if self.role is Role.LEADER or not self.promotable():
            return
        self.start_campaign(pre=self.cfg.pre_vote if pre is None else pre, transfer=transfer)

    def propose(self, data: bytes) -> int:
        """Append a command; returns the index it will commit at (if it commits)."""
        self._require_leader()
        return self.append_local([(EntryKind.NORMAL, bytes(data))])

    def propose_conf_change(self, *, add: str | None = None, remove: str | None = None) -> int:
        """Add or remove one voter (thesis §4.1); effective on each server when appended."""
        self._require_leader()
        voters = set(self.voters())
        if (add is None) == (remove is None):
            raise ConfigError("propose_conf_change: give exactly one of add= or remove=")
        if add is not None:
            _check_id(add)
            if add in voters:
                raise ConfigError(f"propose_conf_change: {add!r} is already a voter")
            voters.add(add)
        elif remove not in voters or len(voters) == 1:
            raise ConfigError(f"propose_conf_change: cannot remove {remove!r} from {voters}")
        else:
            voters.discard(remove)
        if self.pending_conf_index > self.log.committed or not self.committed_in_term():
            # One change at a time, and not before this term's first commit (Ongaro's
            # 2015 fix to single-server changes, raft-dev "bug in single-server changes").
            raise ConfigError(
                "propose_conf_change: a configuration change or this leader's first entry"
                f" is not committed yet (commit {self.log.committed}); retry shortly"
            )
        index = self.append_local([(EntryKind.CONFIG, encode_voters(tuple(voters)))])
        self.pending_conf_index = index
        return index

    def transfer_leadership(self, to: str) -> None:
        """Hand leadership to voter ``to`` (thesis §3.10), e.g. before leaving."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.lead)
        if to not in self.voters():
            raise ConfigError(f"transfer_leadership: {to!r} is not a voter")
        if to == self.id or to == self.lead_transferee:
            return
        self.lead_transferee = to
        self.election_elapsed = 0  # the transfer must finish within an election timeout
        if self.progress[to].match == self.log.last_index:
            self.send(TimeoutNow(self.id, to, self.term))
        else:
            self.send_append(to)

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read point; a ``ReadState(index, ctx)`` comes out in a
        Ready once a quorum confirms we still lead (thesis §6.4).  Leader only."""
        self._require_leader()
        if self.committed_in_term():
            self.start_read(bytes(ctx))
        else:
            self.reads_waiting.append(bytes(ctx))

    def compact(self, index: int, data: bytes) -> Snapshot:
        """The state machine image ``data`` covers the log up to the applied ``index``:
        drop those entries and return the Snapshot for the driver to store."""
        term = self.log.term(index)
        if not self.log.snap_index < index <= self.log.applied or term is None:
            raise ConfigError(
                f"compact({index}): index must be applied and after the last snapshot"
                f" (applied {self.log.applied}, snapshot {self.log.snap_index})"
            )
        snap = Snapshot(index, term, self.log.voters_at(index), bytes(data))
        self.log.compact(snap)
        return snap

    def _require_leader(self) -> None:
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.lead)
        if self.lead_transferee is not None:
            raise NotLeaderError(self.lead_transferee, "leadership is being transferred")

    # -- Ready / advance ---------------------------------------------------------------

    def has_ready(self) -> bool:
        """Whether :meth:`ready` has work for the driver."""
        log = self.log
        return bool(
            self.bcast_pending
            or self.msgs
            or self.read_states
            or log.stable < log.last_index
            or log.pending_snapshot is not None
            or log.committed > max(log.applying, log.snap_index)
            or self.hard_state() != self._prev_hard
            or self._soft_state() != self._prev_soft
        )

    def ready(self) -> Ready:
        """The work to do now; call :meth:`advance` with it when done."""
        if self._unadvanced is not None:
            raise ConfigError("RaftCore.ready(): call advance() with the previous Ready first")
        if self.bcast_pending and self.role is Role.LEADER:
            self.bcast_append()
        log = self.log
        hs, soft = self.hard_state(), self._soft_state()
        committed = tuple(log.next_committed())
        durable = 0  # committed entries persisted by earlier Readies (never with a snapshot)
        if committed and log.pending_snapshot is None:
            durable = max(0, min(len(committed), log.stable - committed[0].index + 1))
        rd = Ready(
            hard_state=hs if hs != self._prev_hard else None,
            entries=tuple(log.unstable_entries()),
            snapshot=log.pending_snapshot,
            committed_entries=committed,
            messages=tuple(self.msgs),
            read_states=tuple(self.read_states),
            soft_state=soft if soft != self._prev_soft else None,
            messages_first=(
                self.role is Role.LEADER
                and (hs.term, hs.vote) == (self._prev_hard.term, self._prev_hard.vote)
            )
            or "send_before_persist" in self.mutations,
            durable_committed=durable,
        )
        self.msgs.clear()
        self.read_states.clear()
        self._prev_soft = soft
        if committed:
            log.applying = committed[-1].index
        self._unadvanced = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """``rd`` is persisted, sent and applied."""
        if rd is not self._unadvanced:
            raise ConfigError("RaftCore.advance(): pass the Ready that ready() returned last")
        self._unadvanced = None
        log = self.log
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.entries:
            log.stable_to(rd.entries[-1].index, rd.entries[-1].term)
        if rd.snapshot is not None:
            if log.pending_snapshot is rd.snapshot:
                log.pending_snapshot = None
            log.applied_to(rd.snapshot.index)
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)

    def _soft_state(self) -> SoftState:
        return SoftState(self.lead, self.role)

    # -- introspection -----------------------------------------------------------------

    @property
    def leader(self) -> str | None:
        return self.lead

    def status(self) -> dict[str, Any]:
        """Term, role, leader, log marks, voters and (on the leader) follower progress."""
        log = self.log
        return {
            "id": self.id,
            "term": self.term,
            "vote": self.vote,
            "role": self.role.value,
            "leader": self.lead,
            "commit": log.committed,
            "applied": log.applied,
            "last_index": log.last_index,
            "last_term": log.last_term,
            "snapshot_index": log.snap_index,
            "voters": list(self.voters()),
            "progress": {
                peer: {"match": pr.match, "next": pr.next, "state": pr.state.value}
                for peer, pr in sorted(self.progress.items())
            },
            "dropped": dict(self.counters),
        }


def _check_id(name: str) -> None:
    try:
        check_name(name)
    except DecodeError:
        raise ConfigError(f"raft node id {name!r} must be a non-empty short string") from None
