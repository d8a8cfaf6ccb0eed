"""The in-memory Raft log: entries since the last snapshot, what is durable, what is
committed and applied, and the voter set the log implies.

Theory of operation
-------------------
Shaped after etcd-io/raft ``log.go`` + ``log_unstable.go``, with the stable part held in
memory too (the driver restores the core from storage at boot, so the core owns the log
between the snapshot and the last entry):

    snapshot ... | first_index .. stable | stable+1 .. last_index |
      compacted  |   persisted entries   |  unstable (to persist) |
                 applied <= committed <= last_index

- ``maybe_append`` is the follower side of AppendEntries (thesis Figure 3.1, receiver
  steps 2-5): reject unless the entry at ``prev_index`` has ``prev_term``; otherwise find
  the first conflicting entry, truncate there and append the rest, and advance the
  commit index no further than the last new entry.  Entries that merely repeat what we
  have are skipped, so a duplicated or reordered Append never truncates anything.
- ``find_conflict_by_term`` produces the rejection hint (etcd-io/raft
  ``findConflictByTerm``): the largest index at or below a probe whose term is at most a
  given term.  Both sides use it, so one round trip skips a whole term of conflicts.
- ``maybe_commit`` only commits an index whose entry has the current term: an entry from
  an earlier term is committed indirectly (thesis §3.6.2; Figure 3.7 shows a replicated
  old entry being overwritten).
- Truncation lowers ``stable`` so the replaced entries are persisted again (the storage
  replaces an index that exists and everything after it).
- The voter set is the latest ``CONFIG`` entry in the log, committed or not (thesis
  §4.1), else the snapshot's.  ``_configs`` lists the CONFIG entries still in the log, so
  a truncation rolls the membership back and a compaction knows the voters at its index.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshlite._core.raft.types import Entry, EntryKind, Snapshot, decode_voters

__all__ = ["ENTRY_OVERHEAD_BYTES", "RaftLog"]

# Per-entry framing counted against RaftConfig.max_append_bytes: msgpack's array and
# integer headers for [term, kind, data] are at most this, so the limit bounds the wire.
ENTRY_OVERHEAD_BYTES = 16


class RaftLog:
    """Entries after a snapshot, with the stable/committed/applied marks."""

    def __init__(self, snapshot: Snapshot | None, entries: Sequence[Entry]) -> None:
        self.snapshot = snapshot  # the latest snapshot, to send to lagging followers
        self.snap_index = 0 if snapshot is None else snapshot.index
        self.snap_term = 0 if snapshot is None else snapshot.term
        self._base_voters: tuple[str, ...] = () if snapshot is None else snapshot.voters
        self._entries = [e for e in entries if e.index > self.snap_index]
        self._configs: list[tuple[int, tuple[str, ...]]] = []
        self._observe(self._entries)
        self.stable = self.last_index
        self.pending_snapshot: Snapshot | None = None  # installed, not yet handed out
        self.committed = self.snap_index
        self.applied = self.snap_index
        self.applying = self.snap_index  # handed out in a Ready, not yet advanced

    # -- reading ---------------------------------------------------------------------

    @property
    def first_index(self) -> int:
        return self.snap_index + 1

    @property
    def last_index(self) -> int:
        return self.snap_index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.snap_term

    def term(self, index: int) -> int | None:
        """The term of the entry at ``index``; None when compacted away or beyond the end."""
        if index == self.snap_index:
            return self.snap_term
        offset = index - self.snap_index - 1
        if 0 <= offset < len(self._entries):
            return self._entries[offset].term
        return None

    def entry(self, index: int) -> Entry | None:
        """The entry at ``index``; None when compacted away or beyond the end."""
        offset = index - self.snap_index - 1
        return self._entries[offset] if 0 <= offset < len(self._entries) else None

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """A candidate's log is at least as up-to-date as ours (thesis §3.6.1)."""
        return (last_term, last_index) >= (self.last_term, self.last_index)

    def entries(self, lo: int, hi: int, max_count: int, max_bytes: int) -> list[Entry]:
        """Entries ``lo..hi`` (inclusive), at most ``max_count`` and about ``max_bytes``
        (always at least one when the range is not empty).  ``lo`` must not be compacted."""
        start = lo - self.snap_index - 1
        stop = min(hi - self.snap_index, start + max_count)
        out: list[Entry] = []
        size = 0
        for entry in self._entries[start:stop]:
            size += len(entry.data) + ENTRY_OVERHEAD_BYTES
            if out and size > max_bytes:
                break
            out.append(entry)
        return out

    def unstable_entries(self) -> list[Entry]:
        return self._entries[self.stable - self.snap_index :]

    def next_committed(self) -> list[Entry]:
        """Committed entries not yet handed out for applying."""
        lo = max(self.applying, self.snap_index)
        return self._entries[lo - self.snap_index : self.committed - self.snap_index]

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest ``i <= index`` whose term is ``<= term``, with that term; an index
        below the snapshot answers ``(index, 0)`` (unknown term, etcd-io/raft's way)."""
        index = min(index, self.last_index)
        while index > self.snap_index:
            t = self._entries[index - self.snap_index - 1].term
            if t <= term:
                return index, t
            index -= 1
        if index == self.snap_index and self.snap_term <= term:
            return index, self.snap_term
        return index, 0

    def voters(self) -> tuple[str, ...]:
        """The voter set in force: the latest CONFIG entry, committed or not."""
        return self._configs[-1][1] if self._configs else self._base_voters

    def voters_at(self, index: int) -> tuple[str, ...]:
        voters = self._base_voters
        for at, conf in self._configs:
            if at > index:
                break
            voters = conf
        return voters

    def last_config_index(self) -> int:
        return self._configs[-1][0] if self._configs else self.snap_index

    # -- writing ---------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Append ``entries``, first truncating anything at or after their first index."""
        if not entries:
            return
        first = entries[0].index
        assert self.snap_index < first <= self.last_index + 1, "log append out of place"
        if first <= self.last_index:
            del self._entries[first - self.snap_index - 1 :]
            self.stable = min(self.stable, first - 1)
            while self._configs and self._configs[-1][0] >= first:
                self._configs.pop()
        self._entries.extend(entries)
        self._observe(entries)

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, entries: Sequence[Entry]
    ) -> int | None:
        """AppendEntries on a follower: the last index now known to match, or None if
        ``prev_index`` does not match (or the Append would rewrite a committed entry)."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        for entry in entries:
            if self.term(entry.index) != entry.term:
                if entry.index <= self.committed:
                    return None  # no correct leader rewrites a committed entry: drop it
                self.append(entries[entry.index - prev_index - 1 :])
                break
        self.commit_to(min(commit, last_new))
        return last_new

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            self.committed = min(index, self.last_index)

    def maybe_commit(self, index: int, term: int) -> bool:
        if index > self.committed and self.term(index) == term:
            self.committed = index
            return True
        return False

    def stable_to(self, index: int, term: int) -> None:
        """The entries up to ``index`` (last one of term ``term``) are durable now."""
        if self.term(index) == term and index > self.stable:
            self.stable = index

    def applied_to(self, index: int) -> None:
        self.applied = max(self.applied, index)
        self.applying = max(self.applying, self.applied)

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by ``snapshot`` (InstallSnapshot, thesis §5.1 step 7)."""
        self.snapshot = snapshot
        self.pending_snapshot = snapshot
        self.snap_index, self.snap_term = snapshot.index, snapshot.term
        self._base_voters = snapshot.voters
        self._entries = []
        self._configs = []
        self.stable = self.committed = snapshot.index

    def compact(self, snapshot: Snapshot) -> None:
        """Drop the entries the (applied, durable) ``snapshot`` covers."""
        drop = snapshot.index - self.snap_index
        self._base_voters = snapshot.voters
        self._configs = [c for c in self._configs if c[0] > snapshot.index]
        del self._entries[:drop]
        self.snapshot = snapshot
        self.snap_index, self.snap_term = snapshot.index, snapshot.term

    def _observe(self, entries: Sequence[Entry]) -> None:
        for entry in entries:
            if entry.kind is EntryKind.CONFIG:
                self._configs.append((entry.index, decode_voters(entry.data)))
