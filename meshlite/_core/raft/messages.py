"""Raft messages: the RPCs of Ongaro's thesis as one-way messages, etcd-io/raft style.

Theory of operation
-------------------
The thesis describes request/response RPCs (RequestVote, AppendEntries, InstallSnapshot,
TimeoutNow; Figures 3.1, 5.3 and §3.10).  As in etcd-io/raft (``raftpb.MessageType``),
each request and each response here is a separate one-way message: a core never waits
for an answer, it reacts to whatever arrives, in any order, duplicated or not.  Every
message carries the sender's ``term``; the term rules in ``election.py`` (step up on a
higher term, answer a lower one so a stale leader learns, ignore the rest) run before
any kind-specific handling.

- :class:`Vote` / :class:`VoteResp`: RequestVote, with ``pre`` for the pre-vote phase
  (thesis §9.6: a would-be candidate first asks whether it *could* win, at ``term + 1``,
  without changing anyone's term) and ``transfer`` for an election started by
  :class:`TimeoutNow` (thesis §3.10), which overrides the followers' leader lease.
- :class:`Append` / :class:`AppendResp`: AppendEntries.  A rejection carries a hint
  (``hint_index``, ``hint_term``: the follower's last entry at or below the probe whose
  term is at most the probe's term), so the leader skips a whole conflicting term per
  round trip (thesis §5.3's optimisation; etcd-io/raft ``findConflictByTerm``).
- :class:`Heartbeat` / :class:`HeartbeatResp`: empty AppendEntries, kept separate as in
  etcd-io/raft so they never carry entries; ``read_seq`` confirms ReadIndex requests
  (thesis §6.4).  The commit index sent is at most what the follower is known to match.
- :class:`InstallSnapshot`: the whole snapshot in one message (thesis §5.1 sends it in
  chunks; a KV store's snapshot fits one stream frame here).  Answered by an
  :class:`AppendResp` for the snapshot's index.
- :class:`TimeoutNow`: "start an election now" for leadership transfer (thesis §3.10).
"""

from __future__ import annotations

from typing import TypeAlias

import attrs

from meshlite._core.raft.types import Entry, Snapshot

__all__ = [
    "Append",
    "AppendResp",
    "Heartbeat",
    "HeartbeatResp",
    "InstallSnapshot",
    "Message",
    "TimeoutNow",
    "Vote",
    "VoteResp",
]


@attrs.frozen
class Vote:
    """RequestVote (or, with ``pre``, the pre-vote for ``term`` = candidate's term + 1)."""

    frm: str
    to: str
    term: int
    last_index: int
    last_term: int
    pre: bool = False
    transfer: bool = False


@attrs.frozen
class VoteResp:
    frm: str
    to: str
    term: int
    reject: bool
    pre: bool = False


@attrs.frozen
class Append:
    """AppendEntries: ``entries`` follow ``prev_index`` (whose term is ``prev_term``)."""

    frm: str
    to: str
    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int


@attrs.frozen
class AppendResp:
    """Success: ``index`` is the last index known to match.  Rejection: ``index`` is the
    rejected ``prev_index``, and the hint says where the follower's log could match."""

    frm: str
    to: str
    term: int
    index: int
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0


@attrs.frozen
class Heartbeat:
    frm: str
    to: str
    term: int
    commit: int
    read_seq: int = 0


@attrs.frozen
class HeartbeatResp:
    frm: str
    to: str
    term: int
    read_seq: int = 0


@attrs.frozen
class InstallSnapshot:
    frm: str
    to: str
    term: int
    snapshot: Snapshot


@attrs.frozen
class TimeoutNow:
    frm: str
    to: str
    term: int


Message: TypeAlias = (
    Vote | VoteResp | Append | AppendResp | Heartbeat | HeartbeatResp | InstallSnapshot | TimeoutNow
)
