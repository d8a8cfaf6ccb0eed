"""The sqlite file behind ``RaftStorage``: pragmas, exclusive lock, schema, bad files.

Theory of operation
-------------------
``connect`` returns a connection ready for ``_raft_storage``, or raises ``ConfigError``
naming the path and what to do — never a sqlite traceback from deep inside.  In order:

- ``locking_mode=EXCLUSIVE`` before ``journal_mode=WAL``: the file lock is taken when WAL
  mode is entered and kept until close, so a second server pointed at the same data_dir
  fails at open ("in use by another process") instead of interleaving writes into one
  Raft log; and with the lock held sqlite keeps the WAL index in heap memory, no ``-shm``.
- ``synchronous=FULL`` (or NORMAL when not durable; see ``_raft_storage`` for why FULL).
- ``PRAGMA quick_check``: a torn or smashed file is reported at boot, with the path, not
  as a mysterious failure in the middle of an election.  It reads every page, which is
  cheap for a compacted Raft log (a snapshot plus a tail).
- The schema: an empty file gets the tables, ``meta.schema_version`` and sqlite's
  ``application_id`` header field; any other file must carry both, with a version this
  code knows (``SCHEMA_VERSION``), or it is refused — we never write into a database
  of some other program, nor guess at a newer layout.
- A new file's directory is fsynced once, so the file's name survives power loss too
  (sqlite syncs the data it writes, not the directory entry of the database it creates).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from meshlite.errors import ConfigError

__all__ = ["SCHEMA_VERSION", "connect", "label"]

SCHEMA_VERSION = 1  # bump on any table change; open() refuses versions it does not know
# PRAGMA application_id: "MLRF" — marks the file as ours for `file(1)` and for open().
APPLICATION_ID = 0x4D4C5246
# A second opener fails fast: the lock is held for the store's whole life, never briefly.
BUSY_TIMEOUT_S = 0.5
# The WAL is reset after each checkpoint (every ~1000 pages, sqlite's default); a large
# snapshot can grow it well past that, and this trims it back when it is reset.
WAL_SIZE_LIMIT_BYTES = 32 * 1024 * 1024

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE hard_state (id INTEGER PRIMARY KEY CHECK (id = 1),"
    " term INTEGER NOT NULL, vote TEXT, commit_index INTEGER NOT NULL)",
    "CREATE TABLE entries (idx INTEGER PRIMARY KEY, term INTEGER NOT NULL,"
    " kind INTEGER NOT NULL, data BLOB NOT NULL)",
    "CREATE TABLE snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), idx INTEGER NOT NULL,"
    " term INTEGER NOT NULL, voters TEXT NOT NULL, data BLOB NOT NULL)",
)
_TABLES = frozenset({"meta", "hard_state", "entries", "snapshot"})


def connect(where: str | None, *, durable: bool) -> sqlite3.Connection:
    """A prepared connection to the store at ``where`` (``None``: in memory)."""
    name = label(where)
    existed = where is not None and os.path.exists(where)
    try:
        conn = sqlite3.connect(
            ":memory:" if where is None else where,
            timeout=BUSY_TIMEOUT_S,
            isolation_level=None,  # RaftStorage issues BEGIN/COMMIT itself
            check_same_thread=False,  # guarded by RaftStorage's lock, see _raft_storage
        )
    except sqlite3.Error as exc:
        raise ConfigError(f"{name}: cannot open ({exc}); check the path") from None
    try:
        _prepare(conn, name, durable=durable, on_disk=where is not None)
    except BaseException:
        conn.close()
        raise
    if where is not None and not existed:
        _sync_directory(Path(where).parent)
    return conn


def label(path: str | None) -> str:
    """How errors name the store."""
    return "in-memory raft storage" if path is None else f"raft storage {path!r}"


def _prepare(conn: sqlite3.Connection, label: str, *, durable: bool, on_disk: bool) -> None:
    """Pragmas, lock, integrity and schema: every way a bad file fails, named clearly."""
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")  # before WAL: no -shm file, one owner
        (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
        if on_disk and mode != "wal":
            raise ConfigError(f"{label}: sqlite refused WAL mode (got {mode!r})")
        problems = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise ConfigError(
                f"{label} is corrupt ({'; '.join(problems[:3])}); move it aside and let"
                " this server catch up from the others"
            )
        _ensure_schema(conn, label)
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            raise ConfigError(
                f"{label} is in use by another process (two servers with one data_dir?)"
            ) from None
        raise ConfigError(f"{label}: cannot use it ({exc})") from None
    except sqlite3.DatabaseError as exc:
        raise ConfigError(
            f"{label} is not a sqlite database or is corrupt ({exc}); move it aside"
        ) from None


def _ensure_schema(conn: sqlite3.Connection, label: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        (app_id,) = conn.execute("PRAGMA application_id").fetchone()
        if not tables:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        else:
            _check_existing(conn, tables, app_id, label)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _check_existing(conn: sqlite3.Connection, tables: set[str], app_id: int, label: str) -> None:
    if app_id != APPLICATION_ID or "meta" not in tables:
        raise ConfigError(
            f"{label} is a sqlite database of something else, not a meshlite Raft store;"
            " point data_dir at a directory of its own"
        )
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = None if row is None else row[0]
    if version != str(SCHEMA_VERSION):
        raise ConfigError(
            f"{label} has schema version {version!r}; this meshlite reads version"
            f" {SCHEMA_VERSION} (written by a newer meshlite? upgrade, or move the file aside)"
        )
    if missing := _TABLES - tables:
        raise ConfigError(f"{label} is missing tables {sorted(missing)}; it is damaged")


def _sync_directory(directory: Path) -> None:
    """fsync the directory so a new file's name survives power loss, not just its bytes."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
