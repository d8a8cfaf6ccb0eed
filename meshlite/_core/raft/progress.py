"""What a leader knows of each follower: how far it matches, what is in flight.

Theory of operation
-------------------
etcd-io/raft ``tracker/progress.go`` and ``tracker/inflights.go``.  For each voter the
leader keeps ``match`` (highest index known replicated there) and ``next`` (next index to
send), and one of three states:

- PROBE: we do not know where the follower's log matches; send one Append per heartbeat
  interval (``probe_sent`` pauses until an answer or a heartbeat response) and walk
  ``next`` back on each rejection, using the follower's hint (``maybe_decr_to``).
- REPLICATE: the follower accepted an Append, so stream: advance ``next`` optimistically
  after each send and keep up to ``max_inflight_msgs`` Appends unacknowledged
  (:class:`Inflights`, the pipeline window; thesis §10.2.1).  A rejection drops back to
  PROBE from ``match + 1``.
- SNAPSHOT: the entries the follower needs are compacted away; an InstallSnapshot is in
  flight and nothing else is sent.  The follower's answer (an AppendResp for the
  snapshot's index) returns it to REPLICATE.  Without a transport that reports failed
  sends (etcd-io/raft ``ReportSnapshot``), a lost snapshot would leave the follower
  stranded, so after an election timeout in SNAPSHOT it falls back to PROBE and the
  snapshot is sent again if still needed.

``recent_active`` records that the follower answered since the last check-quorum round
(thesis §6.2).  ``quorum_index`` is the commit rule: the highest index a majority of
voters has (etcd-io/raft ``quorum/majority.go`` ``CommittedIndex``).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable

__all__ = ["Inflights", "Progress", "ProgressState", "quorum_index"]


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """Last indexes of the Appends in flight to one follower, oldest first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._last: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._last)

    def add(self, last_index: int) -> None:
        self._last.append(last_index)

    def full(self) -> bool:
        return len(self._last) >= self.capacity

    def free_le(self, index: int) -> None:
        """Everything up to ``index`` was acknowledged."""
        while self._last and self._last[0] <= index:
            self._last.popleft()

    def free_first_one(self) -> None:
        if self._last:
            self._last.popleft()

    def reset(self) -> None:
        self._last.clear()


class Progress:
    """One follower's replication state as its leader sees it."""

    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_ticks = 0
        self.recent_active = False
        self.inflights = Inflights(max_inflight)

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_ticks = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def snapshot_timed_out(self) -> None:
        """The snapshot got no answer: probe again from what we know matches."""
        self._reset_state(ProgressState.PROBE)
        self.next = self.match + 1

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement of ``index``; False if it tells us nothing new."""
        if index <= self.match:
            return False
        self.match = index
        self.next = max(self.next, index + 1)
        self.probe_sent = False
        return True

    def maybe_decr_to(self, rejected: int, hint: int) -> bool:
        """A rejection of the Append after ``rejected``; False if it is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False  # probes go one at a time: any other rejection is old news
        self.next = max(min(rejected, hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def sent(self, last_index: int) -> None:
        """An Append carrying entries up to ``last_index`` went out."""
        if self.state is ProgressState.REPLICATE:
            self.next = last_index + 1
            self.inflights.add(last_index)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True


def quorum_index(matches: Iterable[int]) -> int:
    """The highest index a majority has: the median from the top."""
    ordered = sorted(matches, reverse=True)
    if not ordered:
        return 0
    return ordered[len(ordered) // 2]
