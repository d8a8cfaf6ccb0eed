"""Terms, elections and the dispatch of incoming messages.

Theory of operation
-------------------
etcd-io/raft ``raft.go`` ``Step``/``stepLeader``/``stepCandidate``/``stepFollower``.
Every message first goes through the term rules (thesis §3.3, Figure 3.1 "All servers"):

- A higher term makes us a follower of that term — except a pre-vote (thesis §9.6),
  which changes nobody's term, and a vote request that arrives while we still hear from
  a live leader (``check_quorum``'s lease, thesis §4.2.3 / §6.2): a server that was
  partitioned away, or was removed, cannot depose a healthy leader.  A TimeoutNow-driven
  election (``transfer``) overrides the lease: the leader asked for it (thesis §3.10).
- A lower term is ignored, but an Append or Heartbeat from a stale leader is answered
  with our term so that it steps down (needed with pre-vote and check-quorum, where a
  rejoining node may otherwise never raise its term), and a pre-vote is rejected.

Elections (thesis §3.4): a follower that hears nothing for its randomized timeout
becomes a pre-candidate and asks for pre-votes at ``term + 1``.  A server grants a
(pre-)vote if it has not voted for someone else this term (or, for a pre-vote, the
asked term is higher than its own) and the candidate's log is at least as up-to-date as
its own (thesis §3.6.1: last term, then last index).  A majority of pre-votes makes it a
real candidate (term + 1, vote for itself); a majority of votes makes it leader.  The
leader heartbeats every ``heartbeat_ticks`` and, with check-quorum, steps down if a
majority of voters did not answer within an election timeout.
"""

from __future__ import annotations

from meshlite._core.raft.messages import (
    Append,
    AppendResp,
    Heartbeat,
    HeartbeatResp,
    InstallSnapshot,
    Message,
    TimeoutNow,
    Vote,
    VoteResp,
)
from meshlite._core.raft.replication import Replicator
from meshlite._core.raft.types import Role

__all__ = ["Elector"]


class Elector(Replicator):
    """Term rules, vote handling, campaigns and ticks."""

    def step(self, msg: Message) -> None:
        """Handle one message from a peer (any order, duplicates, stale: all fine)."""
        if msg.to != self.id or msg.frm == self.id:
            self.drop("misaddressed")
            return
        if not self._step_term(msg):
            return
        if isinstance(msg, Vote):
            self._on_vote(msg)
        elif self.role is Role.LEADER:
            self._step_leader(msg)
        elif self.role is Role.FOLLOWER:
            self._step_follower(msg)
        else:
            self._step_candidate(msg)

    def _step_term(self, msg: Message) -> bool:
        """Apply the term rules; False when the message needs nothing more."""
        if msg.term > self.term:
            if isinstance(msg, Vote) and not msg.transfer and self._in_lease():
                self.drop("vote_in_lease")
                return False
            if isinstance(msg, Vote) and msg.pre:
                return True
            if isinstance(msg, VoteResp) and msg.pre and not msg.reject:
                return True
            lead = msg.frm if isinstance(msg, Append | Heartbeat | InstallSnapshot) else None
            self.become_follower(msg.term, lead)
            return True
        if msg.term < self.term:
            stale_leader = isinstance(msg, Append | Heartbeat)
            if stale_leader and (self.cfg.check_quorum or self.cfg.pre_vote):
                self.send(AppendResp(self.id, msg.frm, self.term, 0, True))
            elif isinstance(msg, Vote) and msg.pre:
                self.send(VoteResp(self.id, msg.frm, self.term, reject=True, pre=True))
            else:
                self.drop("stale_term")
            return False
        return True

    def _in_lease(self) -> bool:
        return (
            self.cfg.check_quorum
            and self.lead is not None
            and self.election_elapsed < self.cfg.election_ticks
        )

    def _on_vote(self, msg: Vote) -> None:
        can_vote = (
            self.vote == msg.frm
            or (self.vote is None and self.lead is None)
            or (msg.pre and msg.term > self.term)
        )
        up_to_date = self.log.is_up_to_date(msg.last_index, msg.last_term)
        if "vote_without_log_check" in self.mutations:
            up_to_date = True
        if can_vote and up_to_date:
            self.send(VoteResp(self.id, msg.frm, msg.term, reject=False, pre=msg.pre))
            if not msg.pre:
                self.election_elapsed = 0
                self.vote = msg.frm
        else:
            self.send(VoteResp(self.id, msg.frm, self.term, reject=True, pre=msg.pre))

    def _step_leader(self, msg: Message) -> None:
        if isinstance(msg, AppendResp):
            self.on_append_resp(msg)
        elif isinstance(msg, HeartbeatResp):
            self.on_heartbeat_resp(msg)
        else:
            self.drop("unexpected_at_leader")

    def _step_follower(self, msg: Message) -> None:
        if isinstance(msg, Append | Heartbeat | InstallSnapshot):
            self.election_elapsed = 0
            self.lead = msg.frm
            self._on_leader_message(msg)
        elif isinstance(msg, TimeoutNow):
            if self.promotable():
                self.start_campaign(pre=False, transfer=True)
            else:
                self.drop("timeout_now_not_voter")
        else:
            self.drop("unexpected_at_follower")

    def _step_candidate(self, msg: Message) -> None:
        if isinstance(msg, Append | Heartbeat | InstallSnapshot):
            # A leader exists in our term (or, for a pre-candidate, in the current term).
            self.become_follower(msg.term, msg.frm)
            self._on_leader_message(msg)
        elif isinstance(msg, VoteResp) and msg.pre == (self.role is Role.PRE_CANDIDATE):
            self._poll(msg)
        else:
            self.drop("unexpected_at_candidate")

    def _on_leader_message(self, msg: Append | Heartbeat | InstallSnapshot) -> None:
        if isinstance(msg, Append):
            self.on_append(msg)
        elif isinstance(msg, Heartbeat):
            self.on_heartbeat(msg)
        else:
            self.on_snapshot(msg)

    # -- campaigns -------------------------------------------------------------------

    def hup(self) -> None:
        """Start an election (with a pre-vote first when configured)."""
        if self.role is Role.LEADER or not self.promotable():
            return
        self.start_campaign(pre=self.cfg.pre_vote, transfer=False)

    def start_campaign(self, *, pre: bool, transfer: bool) -> None:
        if pre:
            self.become_pre_candidate()
            vote_term = self.term + 1
        else:
            self.become_candidate()
            vote_term = self.term
        self.votes[self.id] = True
        if self._tally() == "won":
            self._won(pre)
            return
        last_index, last_term = self.log.last_index, self.log.last_term
        for peer in self.voters():
            if peer != self.id:
                self.send(Vote(self.id, peer, vote_term, last_index, last_term, pre, transfer))

    def _poll(self, msg: VoteResp) -> None:
        self.votes.setdefault(msg.frm, not msg.reject)
        result = self._tally()
        if result == "won":
            self._won(msg.pre)
        elif result == "lost":
            self.become_follower(self.term, None)

    def _tally(self) -> str:
        voters = self.voters()
        granted = sum(1 for v in voters if self.votes.get(v) is True)
        rejected = sum(1 for v in voters if self.votes.get(v) is False)
        if granted >= self.quorum():
            return "won"
        if len(voters) - rejected < self.quorum():
            return "lost"
        return "pending"

    def _won(self, pre: bool) -> None:
        if pre:
            self.start_campaign(pre=False, transfer=False)
        else:
            self.become_leader()
            self.bcast_append()

    # -- ticks -----------------------------------------------------------------------

    def tick(self) -> None:
        """One tick of ``RaftConfig.tick_s`` has passed."""
        if self.role is Role.LEADER:
            self._tick_leader()
            return
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_timeout:
            self.election_elapsed = 0
            self.hup()

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_ticks:
            self.election_elapsed = 0
            if self.cfg.check_quorum and not self._quorum_active():
                self.become_follower(self.term, None)
                return
            self.lead_transferee = None  # a transfer not done in an election timeout failed
        self.tick_snapshots()
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self.bcast_heartbeat()

    def _quorum_active(self) -> bool:
        """Check-quorum (thesis §6.2): did a majority of voters answer since last time?"""
        active = 0
        for peer in self.voters():
            pr = self.progress.get(peer)
            if peer == self.id or (pr is not None and pr.recent_active):
                active += 1
        for peer, pr in self.progress.items():
            if peer != self.id:
                pr.recent_active = False
        return active >= self.quorum()
