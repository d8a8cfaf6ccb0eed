"""Durable Raft storage in sqlite: hard state, log entries and the latest snapshot.

Theory of operation
-------------------
Raft keeps ``currentTerm``, ``votedFor`` and the log on stable storage and updates them
before answering any RPC (Ongaro's thesis, Figure 3.1 "Persistent state on all servers");
etcd-io/raft's shape is "persist ``Ready.HardState``, ``Ready.Entries`` and
``Ready.Snapshot``, then send ``Ready.Messages``".  :meth:`RaftStorage.save` is that
persist step: one sqlite transaction, durable when it returns.  What it keeps:

- ``hard_state``: one row (term, vote, commit).
- ``entries``: the log, one row per index.  Entries saved at an index that already exists
  replace it and everything after it: Raft's truncation on conflict (thesis §3.5).
- ``snapshot``: the latest snapshot only (index, term, voters, state machine data).  A
  snapshot whose last entry is not in the log (the log is behind it or disagrees at its
  index) discards the whole log, as InstallSnapshot does (thesis §5.1, Figure 5.3 steps
  6-7); one the log agrees with keeps the log, and :meth:`RaftStorage.compact` trims it
  later (etcd's ``CreateSnapshot`` + ``Compact``).  :meth:`RaftStorage.load` returns only
  the entries after the snapshot.

Durability.  WAL journal with ``synchronous=FULL``: a commit appends the transaction's
pages to the ``-wal`` file and syncs it once (one ``fdatasync``, counted by strace in
``benchmarks/bench_raft_storage.py``), so an acknowledged save survives power loss as far
as the disk honours flushes.  ``synchronous=NORMAL`` syncs only at checkpoints: a commit
survives a process crash (its bytes are in the OS page cache) but may roll back after a
power loss or kernel crash (sqlite.org/pragma.html#pragma_synchronous) — for Raft that is
a server forgetting the vote it cast and voting twice in one term.  ``durable=False``
chooses NORMAL for tests and benchmarks; SIGKILL safety is the same in both modes
(tests/test_raft_storage.py kills writers mid-save and checks every acknowledged entry).

Group commit.  One save is one transaction is one sync, however many entries it carries,
so throughput comes from batching: a driver persists a whole ``Ready`` (every entry
proposed since the last one) per save, and while that save runs in a worker thread new
proposals pile up in the core for the next ``Ready``.  :meth:`RaftStorage.save_many`
writes several Readys in one transaction, and ``_raft_group_commit.GroupCommitter`` does
it for concurrent async callers (leader/follower group commit, as LevelDB's writer queue).
The driver loop this is built for::

    rd = core.ready()  # every entry proposed since the last Ready: one group
    await anyio.to_thread.run_sync(storage.save, rd.hard_state, rd.entries, rd.snapshot)
    send(rd.messages); apply(rd.committed_entries); core.advance(rd)

Threads.  Python's sqlite3 module is built serialized (``sqlite3.threadsafety == 3``);
its ``check_same_thread`` guard is off here and a ``threading.Lock`` makes each public
method atomic, so the driver may call from the event loop at boot and from
``anyio.to_thread`` workers afterwards without transactions interleaving.  (A call made
on the event loop while a save runs in a worker waits for that save's sync: after boot,
call everything, ``stats`` included, through ``anyio.to_thread``.)

The file itself (pragmas, the lock, schema versioning, what a bad file says) is
``_raft_storage_file``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence

import attrs

from meshlite._core.raft.types import EMPTY_HARD_STATE, Entry, EntryKind, HardState, Snapshot
from meshlite._raft_storage_file import connect, label
from meshlite.errors import ConfigError, MeshliteError

__all__ = ["RaftStorage", "RaftStorageError", "StorageStats", "Write"]


class RaftStorageError(MeshliteError):
    """A read or write of the Raft store failed (I/O error, disk full, corruption found
    while running).  The server cannot trust its log any more and must stop."""


@attrs.frozen
class Write:
    """One ``save``'s worth: what a ``Ready`` asks to persist."""

    hard_state: HardState | None
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None


@attrs.frozen
class StorageStats:
    """Counters since open, and the store's current shape."""

    saves: int  # Writes persisted (a save_many of n counts n)
    commits: int  # transactions committed
    syncs: int  # WAL syncs: one per synced commit when durable and on disk (checkpoints add a few)
    entries_written: int
    entries_truncated: int  # replaced by a conflicting save or dropped by a snapshot
    bytes_written: int  # entry and snapshot payload bytes
    file_bytes: int  # database + WAL on disk (pages in use when in memory)
    first_index: int  # first entry load() returns (snapshot index + 1 when the log is empty)
    last_index: int  # last entry, or the snapshot's index when the log is empty
    snapshot_index: int


@attrs.define
class _Counters:
    saves: int = 0
    commits: int = 0
    syncs: int = 0
    entries_written: int = 0
    entries_truncated: int = 0
    bytes_written: int = 0


class RaftStorage:
    """Hard state, log and latest snapshot of one Raft server, in one sqlite file."""

    def __init__(self, conn: sqlite3.Connection, path: str | None, *, durable: bool) -> None:
        """Use :meth:`open`."""
        self._conn: sqlite3.Connection | None = conn
        self._path = path
        self._durable = durable and path is not None
        self._lock = threading.Lock()
        self._counters = _Counters()

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None, *, durable: bool = True) -> RaftStorage:
        """Open (creating if absent) the store at ``path``; ``None`` keeps it in memory.

        ``durable=False`` uses ``synchronous=NORMAL``: safe against process crashes, not
        against power loss.  Raises :class:`ConfigError` naming the path when the file is
        not a sqlite database, is corrupt, belongs to something else, has an unknown
        schema version, or is in use by another process.
        """
        where = None if path is None else os.fspath(path)
        conn = connect(where, durable=durable)
        return cls(conn, where, durable=durable)

    @property
    def in_memory(self) -> bool:
        """True when nothing is written to disk (no path): saves cost no sync."""
        return self._path is None

    def load(self) -> tuple[HardState, Snapshot | None, list[Entry]]:
        """What a ``RaftCore`` restarts from: hard state, snapshot, entries after it."""
        with self._lock, self._errors("load"):
            conn = self._live()
            row = conn.execute("SELECT term, vote, commit_index FROM hard_state").fetchone()
            hard_state = EMPTY_HARD_STATE if row is None else HardState(*row)
            snapshot = _read_snapshot(conn)
            after = 0 if snapshot is None else snapshot.index
            rows = conn.execute(
                "SELECT idx, term, kind, data FROM entries WHERE idx > ? ORDER BY idx", (after,)
            ).fetchall()
            entries = [Entry(i, t, _kind(k, self._label), bytes(d)) for i, t, k, d in rows]
        _check_loaded(entries, after, self._label)
        return hard_state, snapshot, entries

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry] = (),
        snapshot: Snapshot | None = None,
    ) -> None:
        """Persist one ``Ready`` in one transaction; durable when this returns."""
        self.save_many([Write(hard_state, tuple(entries), snapshot)])

    def save_commit(self, hard_state: HardState) -> None:
        """Write a hard state that only moves the commit index, *without* a sync (etcd's
        ``MustSync`` false): it survives a process crash at once, and power loss with the
        next synced save.  Nothing Raft promised depends on it: a restarted server that
        lost it learns the commit index again from the leader."""
        with self._lock, self._errors("save"):
            conn = self._live()
            if self._durable:
                conn.execute("PRAGMA synchronous=NORMAL")
            try:
                with self._transaction(synced=False):
                    conn.execute(
                        "INSERT OR REPLACE INTO hard_state VALUES (1, ?, ?, ?)",
                        (hard_state.term, hard_state.vote, hard_state.commit),
                    )
                    self._counters.saves += 1
            finally:
                if self._durable:
                    conn.execute("PRAGMA synchronous=FULL")

    def save_many(self, writes: Sequence[Write]) -> None:
        """Persist several Readys, in order, in ONE transaction (one sync for them all).

        Within a write the snapshot goes first, then the entries, then the hard state.
        A write that breaks the log's shape (a gap, an index the snapshot covers, an older
        snapshot) raises :class:`ConfigError` and nothing of the batch is written.
        """
        with self._lock, self._errors("save"), self._transaction() as conn:
            for write in writes:
                if write.snapshot is not None:
                    self._put_snapshot(conn, write.snapshot)
                if write.entries:
                    self._append(conn, write.entries)
                if write.hard_state is not None:
                    hs = write.hard_state
                    conn.execute(
                        "INSERT OR REPLACE INTO hard_state VALUES (1, ?, ?, ?)",
                        (hs.term, hs.vote, hs.commit),
                    )
            self._counters.saves += len(writes)

    def compact(self, upto_index: int) -> None:
        """Drop entries ``<= upto_index``; the latest snapshot must cover them."""
        with self._lock, self._errors("compact"), self._transaction() as conn:
            covered = _snapshot_index(conn)
            if upto_index > covered:
                raise ConfigError(
                    f"{self._label}: compact({upto_index}) would drop entries no snapshot"
                    f" covers (latest snapshot index {covered}); save a snapshot first"
                )
            conn.execute("DELETE FROM entries WHERE idx <= ?", (upto_index,))

    def stats(self) -> StorageStats:
        """Counters since open and the store's current shape (see :class:`StorageStats`)."""
        with self._lock, self._errors("stats"):
            conn = self._live()
            snap_index = _snapshot_index(conn)
            first, last = conn.execute(
                "SELECT min(idx), max(idx) FROM entries WHERE idx > ?", (snap_index,)
            ).fetchone()
            file_bytes = self._file_bytes(conn)
        c = self._counters
        return StorageStats(
            saves=c.saves,
            commits=c.commits,
            syncs=c.syncs,
            entries_written=c.entries_written,
            entries_truncated=c.entries_truncated,
            bytes_written=c.bytes_written,
            file_bytes=file_bytes,
            first_index=snap_index + 1 if first is None else first,
            last_index=snap_index if last is None else last,
            snapshot_index=snap_index,
        )

    def close(self) -> None:
        """Close the file (idempotent); releases the lock for the next opener."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- internals ---------------------------------------------------------------------

    @property
    def _label(self) -> str:
        return label(self._path)

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ConfigError(f"{self._label} is closed; open it again")
        return self._conn

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise RaftStorageError(f"{self._label}: {what} failed: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self, *, synced: bool = True) -> Iterator[sqlite3.Connection]:
        conn = self._live()
        before = attrs.evolve(self._counters)  # counters move only if the commit does
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            self._counters = before
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._counters.commits += 1
        self._counters.syncs += int(synced and self._durable)

    def _put_snapshot(self, conn: sqlite3.Connection, snap: Snapshot) -> None:
        current = _read_snapshot(conn)
        if current is not None and snap.index <= current.index:
            if (snap.index, snap.term) == (current.index, current.term):
                return  # the same snapshot again (a retried save): nothing to do
            raise ConfigError(
                f"{self._label}: snapshot at index {snap.index} (term {snap.term}) is not"
                f" newer than the stored one at index {current.index} (term {current.term})"
            )
        row = conn.execute("SELECT term FROM entries WHERE idx = ?", (snap.index,)).fetchone()
        if row is None or row[0] != snap.term:  # the log is behind the snapshot or disagrees
            dropped = conn.execute("DELETE FROM entries").rowcount
            self._counters.entries_truncated += dropped
        conn.execute(
            "INSERT OR REPLACE INTO snapshot VALUES (1, ?, ?, ?, ?)",
            (snap.index, snap.term, json.dumps(list(snap.voters)), snap.data),
        )
        self._counters.bytes_written += len(snap.data)

    def _append(self, conn: sqlite3.Connection, entries: Sequence[Entry]) -> None:
        first = entries[0].index
        for before, after in itertools.pairwise(entries):
            if after.index != before.index + 1:
                raise ConfigError(
                    f"{self._label}: entries must be consecutive; {after.index}"
                    f" follows {before.index}"
                )
        covered = _snapshot_index(conn)
        (last,) = conn.execute("SELECT max(idx) FROM entries").fetchone()
        last = max(covered, last or 0)
        if first <= covered or first > last + 1:
            raise ConfigError(
                f"{self._label}: entries from index {first} do not fit a log holding"
                f" {covered + 1}..{last} (snapshot index {covered}); expected {covered + 1}"
                f"..{last + 1}"
            )
        truncated = conn.execute("DELETE FROM entries WHERE idx >= ?", (first,)).rowcount
        conn.executemany(
            "INSERT INTO entries VALUES (?, ?, ?, ?)",
            [(e.index, e.term, int(e.kind), e.data) for e in entries],
        )
        self._counters.entries_truncated += truncated
        self._counters.entries_written += len(entries)
        self._counters.bytes_written += sum(len(e.data) for e in entries)

    def _file_bytes(self, conn: sqlite3.Connection) -> int:
        if self._path is None:
            (pages,) = conn.execute("PRAGMA page_count").fetchone()
            (size,) = conn.execute("PRAGMA page_size").fetchone()
            return int(pages) * int(size)
        total = 0
        for name in (self._path, self._path + "-wal"):
            with contextlib.suppress(FileNotFoundError):
                total += os.path.getsize(name)
        return total


def _read_snapshot(conn: sqlite3.Connection) -> Snapshot | None:
    row = conn.execute("SELECT idx, term, voters, data FROM snapshot").fetchone()
    if row is None:
        return None
    index, term, voters, data = row
    return Snapshot(index=index, term=term, voters=tuple(json.loads(voters)), data=bytes(data))


def _snapshot_index(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT idx FROM snapshot").fetchone()
    return 0 if row is None else int(row[0])


def _kind(value: int, name: str) -> EntryKind:
    try:
        return EntryKind(value)
    except ValueError:
        raise RaftStorageError(f"{name} holds an entry of unknown kind {value}") from None


def _check_loaded(entries: list[Entry], after: int, name: str) -> None:
    """The stored log must run without gaps from just after the snapshot."""
    expected = after + 1
    for entry in entries:
        if entry.index != expected:
            raise RaftStorageError(
                f"{name} is inconsistent: entry {expected} is missing (found {entry.index})"
            )
        expected += 1
