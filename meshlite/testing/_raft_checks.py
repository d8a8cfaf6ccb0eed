"""Safety checkers for simulated Raft clusters, run on every change a server makes.

Theory of operation
-------------------
Raft's safety properties (thesis §3.6.3, Figure 3.2), checked incrementally: every
change to a server's state passes through the harness (a persisted Ready, a commit-index
move, an applied entry, a new leader), so checking each change as it happens is
checking the whole state after every step, at a fraction of the cost.

- Election Safety: at most one leader per term (:meth:`SafetyChecker.on_leader`).
- Log Matching: two logs with an entry of the same index and term agree on it and on
  everything before it.  Every entry enters a log through a persisted Ready, so
  :meth:`~SafetyChecker.on_persist` records ``(index, term) -> (previous term, kind,
  data)`` and any second opinion must agree; by induction the prefixes agree.
- Leader Completeness / State Machine Safety: a committed index never changes its entry
  (no server may persist or commit a different one there), and a new leader's log holds
  every entry known committed when it is elected.
- Same applied sequence: every server applies entry ``i`` only after ``i - 1`` (or a
  snapshot at ``i - 1``), and all apply the same entry at ``i``; a snapshot's state
  machine image must be the one every server had at its index (compared by digest).

A failure raises :class:`RaftSafetyError` (an ``AssertionError``) naming the property,
the server and the index; the simulation adds the seed that replays it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

from meshlite._core.raft import Entry, EntryKind, RaftCore, Snapshot

__all__ = ["RaftSafetyError", "SafetyChecker"]


class RaftSafetyError(AssertionError):
    """A Raft safety property does not hold."""


class SafetyChecker:
    """Global knowledge of a simulated cluster, checked against every server's changes."""

    def __init__(self, *, leader_completeness: bool = True) -> None:
        # Off only in the checkers' own self-test: do the other properties catch a bug too?
        self.leader_completeness = leader_completeness
        self.leaders: dict[int, str] = {}
        self._logs: dict[tuple[int, int], tuple[int, EntryKind, bytes]] = {}
        self.committed: dict[int, Entry] = {}
        self.max_committed = 0
        self.applied: dict[int, Entry] = {}
        self.digests: dict[int, bytes] = {0: b""}
        self.checks = 0

    def _fail(self, what: str) -> NoReturn:
        raise RaftSafetyError(what)

    # -- election safety and leader completeness ----------------------------------------

    def on_leader(self, name: str, core: RaftCore) -> None:
        self.checks += 1
        term = core.term
        other = self.leaders.setdefault(term, name)
        if other != name:
            self._fail(f"election safety: {other} and {name} both lead term {term}")
        if not self.leader_completeness:
            return
        log = core.log
        if log.last_index < self.max_committed:
            self._fail(
                f"leader completeness: {name} leads term {term} with last index"
                f" {log.last_index} < committed {self.max_committed}"
            )
        for index in range(log.snap_index + 1, self.max_committed + 1):
            entry = self.committed.get(index)
            if entry is not None and log.term(index) != entry.term:
                self._fail(
                    f"leader completeness: {name} leads term {term} without committed entry"
                    f" {index} (term {entry.term}; it has term {log.term(index)})"
                )

    # -- log matching and committed entries ---------------------------------------------

    def on_persist(self, name: str, prev_term: int | None, entries: Sequence[Entry]) -> None:
        """``entries`` were written after an entry of term ``prev_term``."""
        for entry in entries:
            self.checks += 1
            if prev_term is None:
                self._fail(f"log shape: {name} persisted entry {entry.index} after a gap")
            key = (entry.index, entry.term)
            seen = self._logs.setdefault(key, (prev_term, entry.kind, entry.data))
            if seen != (prev_term, entry.kind, entry.data):
                self._fail(
                    f"log matching: {name} has entry {key} after term {prev_term} with"
                    f" {entry.kind.name} {entry.data!r}; another server has {seen}"
                )
            prev_term = entry.term

    def on_commit(self, name: str, core: RaftCore, since: int) -> None:
        """``core``'s commit index moved past ``since``: record or compare those entries."""
        log = core.log
        for index in range(max(since, log.snap_index) + 1, log.committed + 1):
            self.checks += 1
            entry = log.entry(index)
            if entry is None:
                self._fail(f"commit beyond log: {name} commits {index}, last {log.last_index}")
            known = self.committed.setdefault(index, entry)
            if known != entry:
                self._fail(f"committed entry changed: {name} commits {entry}, was {known}")
        self.max_committed = max(self.max_committed, log.committed)

    # -- state machine safety -----------------------------------------------------------

    def on_apply(self, name: str, entry: Entry, after: int, digest: bytes) -> None:
        """``name`` applied ``entry`` on top of index ``after``, reaching ``digest``."""
        self.checks += 1
        if entry.index != after + 1:
            self._fail(f"apply order: {name} applied {entry.index} right after {after}")
        known = self.applied.setdefault(entry.index, entry)
        if known != entry:
            self._fail(f"apply divergence: {name} applied {entry}, another server {known}")
        committed = self.committed.get(entry.index)
        if committed is not None and committed != entry:
            self._fail(f"applied uncommitted: {name} applied {entry}, committed {committed}")
        self._digest(name, entry.index, digest)

    def on_restore(self, name: str, snapshot: Snapshot, index: int, digest: bytes) -> None:
        """``name``'s state machine was restored from ``snapshot`` (image at ``index``)."""
        self.checks += 1
        if index != snapshot.index:
            self._fail(f"snapshot image at {index} labelled index {snapshot.index} on {name}")
        committed = self.committed.get(index)
        if committed is not None and committed.term != snapshot.term:
            self._fail(f"snapshot {snapshot.index}/{snapshot.term} on {name} vs {committed}")
        self._digest(name, index, digest)

    def _digest(self, name: str, index: int, digest: bytes) -> None:
        known = self.digests.setdefault(index, digest)
        if known != digest:
            self._fail(f"state machines diverge at {index} on {name}")
