"""Values and limits of the replicated key/value store (Consul's KV and sessions).

Theory of operation
-------------------
These are the plain data of ``kv.py``: what a key holds (:class:`KVEntry`, Consul's
``structs.DirEntry``), what a session is (:class:`Session`, ``structs.Session``), one
operation of a transaction (:class:`TxnOp`, ``structs.TxnKVOp``) and what applying a
command answers (:class:`KVResult`).  All are frozen: the store hands out the very
objects it holds, so readers on other threads or in the I/O layer can keep them
without copying, and nobody can change the store behind its back.

The limits are Consul's defaults, each with its reason, so that a command that
passes the builders in ``kv_commands.py`` is also one Consul would have accepted.
"""

from __future__ import annotations

import attrs

__all__ = [
    "BEHAVIORS",
    "DEFAULT_LOCK_DELAY_S",
    "MAX_KEY_BYTES",
    "MAX_LOCK_DELAY_S",
    "MAX_TXN_BYTES",
    "MAX_TXN_OPS",
    "MAX_VALUE_BYTES",
    "READ_VERBS",
    "SESSION_TTL_MAX_S",
    "SESSION_TTL_MIN_S",
    "SESSION_TTL_MULTIPLIER",
    "VERBS",
    "WRITE_VERBS",
    "KVEntry",
    "KVResult",
    "Session",
    "TxnError",
    "TxnOp",
    "TxnResult",
]

# Consul's ``kv_max_value_size`` default (512 KiB): a value rides in one Raft entry,
# and every server keeps every value in memory, so large blobs belong elsewhere.
MAX_VALUE_BYTES = 512 * 1024
# Consul's ``maxTxnOps``: a transaction is one Raft entry applied atomically; 64
# operations cover every compare-and-swap recipe while bounding the apply time.
MAX_TXN_OPS = 64
# Consul's ``txn_max_req_len`` default: the values of one transaction together, so that
# 64 maximal values cannot make a 32 MiB Raft entry.
MAX_TXN_BYTES = 512 * 1024
# Consul sets no limit on keys; keys are path-like names, and 4 KiB (a long URL) is far
# above any real one while bounding what remote garbage can make a server allocate.
MAX_KEY_BYTES = 4096
# Consul's ``session_ttl_min`` default and its 24 h ceiling (``SessionTTLMax``): a TTL
# shorter than 10 s would expire sessions during an ordinary leader election.
SESSION_TTL_MIN_S = 10.0
SESSION_TTL_MAX_S = 86400.0
# Consul's ``SessionTTLMultiplier``: the leader invalidates a TTL session only after
# twice its TTL without a renewal; the TTL is a lower bound, never a deadline.
SESSION_TTL_MULTIPLIER = 2.0
# Consul's session default and ``structs.MaxLockDelay``: after an invalidation, the
# keys its session held cannot be acquired for this long, so a holder that was only
# partitioned (not dead) has time to notice it lost the lock before somebody else acts.
DEFAULT_LOCK_DELAY_S = 15.0
MAX_LOCK_DELAY_S = 60.0
BEHAVIORS = ("release", "delete")

# Consul's ``api.KVOp`` names for the verbs a transaction may use.
WRITE_VERBS = frozenset({"set", "cas", "lock", "unlock", "delete", "delete-tree", "delete-cas"})
READ_VERBS = frozenset({"get", "get-tree", "check-index", "check-session", "check-not-exists"})
VERBS = WRITE_VERBS | READ_VERBS


@attrs.frozen
class KVEntry:
    """One key as stored: Consul's ``DirEntry``.

    ``create_index`` is the Raft index that created the key, ``modify_index`` the last
    one that changed it (the ``cas`` token), ``lock_index`` how many times a session
    has acquired it, ``session`` the session holding its lock (``None``: unlocked).
    """

    key: str
    value: bytes
    flags: int
    create_index: int
    modify_index: int
    lock_index: int = 0
    session: str | None = None


@attrs.frozen
class Session:
    """A session: Consul's ``structs.Session``, plus the leader-clock expiry of its TTL.

    ``ttl_s == 0`` means no TTL (the session lives until destroyed or its node fails).
    ``expires_at_s`` is ``SESSION_TTL_MULTIPLIER * ttl_s`` after its creation or last
    renewal, in the leader's clock as stamped on those commands; ``None`` without TTL.
    """

    id: str
    node: str
    name: str
    behavior: str
    ttl_s: float
    lock_delay_s: float
    create_index: int
    modify_index: int
    expires_at_s: float | None = None


@attrs.frozen
class TxnOp:
    """One operation of a transaction (Consul's ``TxnKVOp``).

    ``verb`` is one of :data:`VERBS`; ``index`` is the ``ModifyIndex`` that ``cas``,
    ``delete-cas`` and ``check-index`` compare with; ``session`` is the session that
    ``lock``, ``unlock`` and ``check-session`` use.  Fields a verb does not use are
    ignored.
    """

    verb: str
    key: str
    value: bytes = b""
    flags: int = 0
    index: int = 0
    session: str | None = None


@attrs.frozen
class TxnResult:
    """What operation ``op_index`` of a transaction answered (reads keep the value)."""

    op_index: int
    entry: KVEntry


@attrs.frozen
class TxnError:
    """Why operation ``op_index`` of a transaction failed (Consul's ``TxnError``)."""

    op_index: int
    what: str


@attrs.frozen
class KVResult:
    """What applying one command answered, for the client waiting on it.

    * put / delete: ``ok`` is Consul's boolean answer (``False``: the ``cas`` index
      was stale, the lock is held by another session or in its lock delay, the
      release was not by the holder); ``entry`` is the key as stored afterwards.
    * txn: ``ok`` and ``results`` (one per value returned, Consul's order) or
      ``errors`` (every failed operation; nothing was applied).
    * session create / renew: ``session``; ``ok`` is ``False`` for an unknown session.
    * destroy / expire / node failed: ``invalidated`` lists the sessions invalidated.
    * ``error`` is set, and ``ok`` is ``False``, when the command was refused: garbage
      from the log, an index already applied, an unknown session for ``acquire``.
    * batch (single-key writes sharing one entry, ``kv_commands.cmd_batch``): ``batch``
      holds each write's own result, in order, as if it had been alone.

    ``touched`` lists the keys whose entry this command changed or removed, for the
    I/O layer to wake blocking queries on them (compare indexes to be sure).
    """

    index: int
    ok: bool = True
    error: str | None = None
    entry: KVEntry | None = None
    results: tuple[TxnResult, ...] = ()
    errors: tuple[TxnError, ...] = ()
    session: Session | None = None
    invalidated: tuple[str, ...] = ()
    touched: tuple[str, ...] = ()
    batch: tuple[KVResult, ...] = ()

    def of_write(self, slot: int) -> KVResult:
        """The result of the write at position ``slot`` of the entry's writes (as
        ``kv_commands.cmd_writes`` made it): a write alone, or a refused entry, answers
        every one of its writes with this result itself."""
        return self.batch[slot] if self.batch else self
