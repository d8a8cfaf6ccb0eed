"""Log replication: AppendEntries both ways, commit by quorum, InstallSnapshot.

Theory of operation
-------------------
Leader side (etcd-io/raft ``raft.go`` ``maybeSendAppend``/``stepLeader``, thesis §3.5):
for each follower the leader sends from ``progress.next`` whatever fits one Append
(``max_append_entries``/``max_append_bytes``: batching) as long as the follower's
progress is not paused (``progress.py``: one probe at a time, or a full pipeline
window) and, with ``hold_partial_appends``, the batch is full or nothing is in flight
(``config.py``: partial batches wait for the acknowledgement, then go together; a
heartbeat response frees a slot, so a lost Append cannot hold them for ever).  When
``next - 1`` has been compacted away the follower gets the snapshot
instead (thesis §5.1).  Proposals made between two Readys are broadcast once, when the
Ready is built, so they travel together.

On an acknowledgement the leader raises ``match`` and recomputes the commit index: the
highest index held by a majority of voters, committed only if its entry is of the
current term (thesis §3.6.2; the ``commit_any_term`` mutation drops that check to show
the tests catch it).  A rejection moves ``next`` back using the follower's hint.

Follower side (thesis Figure 3.1 receiver rules): an Append below our commit index is
old news (answer with the commit index); otherwise ``RaftLog.maybe_append`` accepts or
rejects it with a hint.  A snapshot no newer than our commit index is ignored; one whose
last entry we already have just advances the commit index; any other replaces the log
(etcd-io/raft ``restore``).

A new commit index is not broadcast on its own: followers learn it with the next Append
or heartbeat (at most one tick later), which halves the messages of a busy leader.
Heartbeats carry ``min(match, commit)`` — never more than the follower is known to have
— and the latest ReadIndex sequence number; a quorum of heartbeat responses at or past
a read's number confirms that we were still leader when the read arrived (thesis §6.4
steps 2-3), and the read is released with the commit index it saw.  A leader whose
voter set no longer includes it steps down once that configuration is committed
(thesis §4.2.2).
"""

from __future__ import annotations

from meshlite._core.raft.messages import (
    Append,
    AppendResp,
    Heartbeat,
    HeartbeatResp,
    InstallSnapshot,
    TimeoutNow,
)
from meshlite._core.raft.progress import ProgressState, quorum_index
from meshlite._core.raft.state import RaftState
from meshlite._core.raft.types import ReadState, Role

__all__ = ["Replicator"]


class Replicator(RaftState):
    """AppendEntries, heartbeats, snapshots and ReadIndex, on both sides."""

    # -- leader: sending -------------------------------------------------------------

    def send_append(self, to: str, send_if_empty: bool = True) -> bool:
        pr = self.progress[to]
        if pr.is_paused():
            return False
        # Partial batches wait for the Append in flight (``hold_partial_appends``).
        hold = (
            self.cfg.hold_partial_appends
            and pr.state is ProgressState.REPLICATE
            and len(pr.inflights) > 0
            and to != self.lead_transferee  # a transfer catches its target up at once
        )
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        if prev_term is None:
            # Not while an Append is in flight: if the follower is there, its answer comes
            # first; if not, a heartbeat response (it is back) frees the slot.
            return False if hold else self.send_snapshot(to)
        ents = self.log.entries(
            pr.next, self.log.last_index, self.cfg.max_append_entries, self.cfg.max_append_bytes
        )
        if not ents and not send_if_empty:
            return False
        last, count = (ents[-1].index, len(ents)) if ents else (0, 0)
        if hold and last == self.log.last_index and count < self.cfg.max_append_entries:
            return False  # all there is, and not a full batch: it waits
        self.send(Append(self.id, to, self.term, prev, prev_term, tuple(ents), self.log.committed))
        if ents:
            pr.sent(ents[-1].index)
        return True

    def send_snapshot(self, to: str) -> bool:
        pr = self.progress[to]
        snap = self.log.snapshot
        if not pr.recent_active or snap is None:
            return False  # etcd-io/raft: no snapshot to a follower that is not answering
        self.send(InstallSnapshot(self.id, to, self.term, snap))
        pr.become_snapshot(snap.index)
        return True

    def bcast_append(self, *, send_if_empty: bool = True) -> None:
        """Send every follower what it lacks; a replicating one gets as many Appends as
        its pipeline window allows (with ``send_if_empty`` the first one goes even if
        empty: it carries the commit index)."""
        self.bcast_pending = False
        for peer, pr in self.progress.items():
            if peer != self.id and self.send_append(peer, send_if_empty):
                while pr.state is ProgressState.REPLICATE and self.send_append(peer, False):
                    pass

    def bcast_heartbeat(self) -> None:
        for peer, pr in self.progress.items():
            if peer != self.id:
                commit = min(pr.match, self.log.committed)
                self.send(Heartbeat(self.id, peer, self.term, commit, self.read_seq))

    # -- leader: commit --------------------------------------------------------------

    def maybe_commit(self) -> bool:
        progress = self.progress
        index = quorum_index(progress[v].match if v in progress else 0 for v in self.voters())
        if "commit_any_term" in self.mutations:
            advanced = index > self.log.committed
            self.log.commit_to(index)
        else:
            advanced = self.log.maybe_commit(index, self.term)
        if advanced:
            self.after_commit()
        return advanced

    def after_commit(self) -> None:
        if self.id not in self.voters() and self.log.committed >= self.log.last_config_index():
            self.become_follower(self.term, None)  # removed ourselves: step down (§4.2.2)
            return
        if self.reads_waiting and self.committed_in_term():
            waiting, self.reads_waiting = self.reads_waiting, []
            for ctx in waiting:
                self.start_read(ctx)

    # -- leader: answers -------------------------------------------------------------

    def on_append_resp(self, msg: AppendResp) -> None:
        pr = self.progress.get(msg.frm)
        if pr is None or msg.index > self.log.last_index:
            self.drop("append_resp_unknown")
            return
        pr.recent_active = True
        if msg.reject:
            hint = msg.hint_index
            if msg.hint_term > 0:
                hint, _ = self.log.find_conflict_by_term(msg.hint_index, msg.hint_term)
            if pr.maybe_decr_to(msg.index, hint):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self.send_append(msg.frm)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(msg.index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        else:
            pr.inflights.free_le(msg.index)
        if self.maybe_commit():
            if self.role is Role.LEADER:
                # New entries go out at once; a commit index alone waits for the next
                # Append or heartbeat (one tick), as hashicorp/raft's does: an empty
                # Append per follower per commit would double the messages of a round.
                self.bcast_append(send_if_empty=False)
        elif was_paused:
            self.send_append(msg.frm)
        if self.role is not Role.LEADER or msg.frm not in self.progress:
            return
        while self.send_append(msg.frm, send_if_empty=False):
            pass
        if msg.frm == self.lead_transferee and pr.match == self.log.last_index:
            self.send(TimeoutNow(self.id, msg.frm, self.term))

    def on_heartbeat_resp(self, msg: HeartbeatResp) -> None:
        pr = self.progress.get(msg.frm)
        if pr is None:
            self.drop("heartbeat_resp_unknown")
            return
        pr.recent_active = True
        pr.probe_sent = False
        behind = pr.match < self.log.last_index
        if pr.state is ProgressState.REPLICATE and (
            pr.inflights.full() or (self.cfg.hold_partial_appends and behind)
        ):
            # A lost Append is never acknowledged: free its slot so that the window, or
            # the entries held behind it, move again (the follower rejects a gap, and
            # probing finds where it stands).
            pr.inflights.free_first_one()
        if behind:
            self.send_append(msg.frm)
        if msg.read_seq > self.read_acks.get(msg.frm, 0):
            self.read_acks[msg.frm] = msg.read_seq
            self.release_reads()

    def tick_snapshots(self) -> None:
        for pr in self.progress.values():
            if pr.state is ProgressState.SNAPSHOT:
                pr.snapshot_ticks += 1
                if pr.snapshot_ticks >= self.cfg.election_ticks:
                    pr.snapshot_timed_out()

    # -- leader: ReadIndex -----------------------------------------------------------

    def start_read(self, ctx: bytes) -> None:
        if self.voters() == (self.id,) or "read_without_quorum" in self.mutations:
            self.read_states.append(ReadState(self.log.committed, ctx))
            return
        self.read_seq += 1
        self.reads.append((self.read_seq, self.log.committed, ctx))
        self.bcast_heartbeat()

    def release_reads(self) -> None:
        acks = [self.read_seq if v == self.id else self.read_acks.get(v, 0) for v in self.voters()]
        confirmed = quorum_index(acks)
        while self.reads and self.reads[0][0] <= confirmed:
            _, index, ctx = self.reads.popleft()
            self.read_states.append(ReadState(index, ctx))

    # -- follower --------------------------------------------------------------------

    def on_append(self, msg: Append) -> None:
        log = self.log
        if msg.prev_index < log.committed:
            self.send(AppendResp(self.id, msg.frm, self.term, log.committed))
            return
        last = log.maybe_append(msg.prev_index, msg.prev_term, msg.commit, msg.entries)
        if last is not None:
            self.send(AppendResp(self.id, msg.frm, self.term, last))
            return
        hint_index = min(msg.prev_index, log.last_index)
        hint_index, hint_term = log.find_conflict_by_term(hint_index, msg.prev_term)
        self.send(
            AppendResp(self.id, msg.frm, self.term, msg.prev_index, True, hint_index, hint_term)
        )

    def on_heartbeat(self, msg: Heartbeat) -> None:
        self.log.commit_to(msg.commit)
        self.send(HeartbeatResp(self.id, msg.frm, self.term, msg.read_seq))

    def on_snapshot(self, msg: InstallSnapshot) -> None:
        snap, log = msg.snapshot, self.log
        if snap.index <= log.committed:
            self.send(AppendResp(self.id, msg.frm, self.term, log.committed))
            return
        if log.match_term(snap.index, snap.term):
            log.commit_to(snap.index)
        else:
            log.restore(snap)
        self.send(AppendResp(self.id, msg.frm, self.term, log.committed))
