"""Commands of the KV state machine: typed builders, their rules, and msgpack bytes.

Theory of operation
-------------------
Every change to the store is a command in the Raft log (Consul's ``KVSRequest``,
``TxnRequest``, ``SessionRequest``, ``TombstoneRequest``), applied by every server in
log order.  A command is a msgpack array ``[kind, field, ...]`` whose ``kind`` is a
:class:`Kind` (append-only: a number is never reused).  A single KV operation and each
operation of a transaction share one layout, ``[verb, key, value, flags, index,
session]`` (Consul's ``TxnKVOp``), so a put is executed by the same code as a
one-operation transaction, only answering a boolean instead of an error.

Batches.  Single-key writes (put, cas, acquire, release, delete, delete-cas) that arrive
at the leader together may share one entry, ``[BATCH, [op, op, ...]]``: each applies as
if alone, with its own outcome (unlike a transaction, nothing is all-or-nothing), at
the entry's index.  Their keys are distinct, so every ModifyIndex still names one
version of one key (a second write to a key waits for the next entry), and a batch
never holds a ``delete-tree``, which touches keys it does not name.
:func:`batch_groups` cuts a run of operations into such batches; one entry, one sync
and one round of replication then carry many writes.

Two doors, one rule book.  The ``cmd_*`` builders are the local API: they check their
arguments and raise :class:`~meshlite.errors.ConfigError` with what to fix (a value over
512 KiB never reaches Raft).  ``kv_decode.decode_command`` is the door from the log, which a
faulty or hostile server may have filled: it accepts exactly what the builders make and
raises :class:`DecodeError` for anything else.  Both ask the same ``op_problem`` /
``session_problem`` functions, so they cannot disagree.

Time is not in the commands.  A server applying an entry must use the *leader's* clock
at proposal time (for TTLs and lock delays), never its own, or servers would disagree;
:func:`stamp` prefixes a command with that time as an IEEE double and :func:`unstamp`
splits it off again, for drivers that carry the time inside the entry data.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Sequence
from typing import Any, TypeAlias

import attrs
import msgpack

from meshlite._core.kv_types import (
    BEHAVIORS,
    DEFAULT_LOCK_DELAY_S,
    MAX_KEY_BYTES,
    MAX_LOCK_DELAY_S,
    MAX_TXN_BYTES,
    MAX_TXN_OPS,
    MAX_VALUE_BYTES,
    SESSION_TTL_MAX_S,
    SESSION_TTL_MIN_S,
    VERBS,
    WRITE_VERBS,
    TxnOp,
)
from meshlite._core.wire_checks import MAX_NAME_BYTES, DecodeError
from meshlite.errors import ConfigError

__all__ = [
    "BatchCmd",
    "Command",
    "Kind",
    "OpCmd",
    "SessionCmd",
    "SessionCreateCmd",
    "TxnCmd",
    "batch_groups",
    "batch_problem",
    "check_txn",
    "cmd_batch",
    "cmd_delete",
    "cmd_expire_sessions",
    "cmd_node_failed",
    "cmd_op",
    "cmd_put",
    "cmd_reap_tombstones",
    "cmd_reset_session_timers",
    "cmd_session_create",
    "cmd_session_destroy",
    "cmd_session_renew",
    "cmd_txn",
    "cmd_writes",
    "delete_op",
    "op_problem",
    "put_op",
    "session_problem",
    "stamp",
    "str_problem",
    "txn_problem",
    "uint_problem",
    "unstamp",
]

# A UUID is 36 characters; anything far longer is not an id a peer made.
MAX_SESSION_ID_BYTES = 128
_UINT_END = 2**64
_STAMP = struct.Struct(">d")


class Kind(enum.IntEnum):
    """Command kinds (append-only: never renumber, never reuse)."""

    OP = 1
    TXN = 2
    SESSION_CREATE = 3
    SESSION_DESTROY = 4
    SESSION_RENEW = 5
    EXPIRE_SESSIONS = 6
    NODE_FAILED = 7
    RESET_SESSION_TIMERS = 8
    REAP_TOMBSTONES = 9
    BATCH = 10


@attrs.frozen
class OpCmd:
    """One KV write (Consul's ``KVS.Apply``): put, cas, acquire, release, delete."""

    op: TxnOp


@attrs.frozen
class TxnCmd:
    ops: tuple[TxnOp, ...]


@attrs.frozen
class BatchCmd:
    """Single-key writes sharing one entry, each with its own outcome (module doc)."""

    ops: tuple[TxnOp, ...]


@attrs.frozen
class SessionCreateCmd:
    session_id: str
    node: str
    name: str
    behavior: str
    ttl_s: float
    lock_delay_s: float


@attrs.frozen
class SessionCmd:
    """A command about one thing named by ``arg``: a session id, a node or an index."""

    kind: Kind
    arg: str | int | None = None


Command: TypeAlias = OpCmd | TxnCmd | BatchCmd | SessionCreateCmd | SessionCmd


# ----------------------------------------------------------------------------- rules


def str_problem(what: str, v: Any, max_bytes: int, *, empty_ok: bool = False) -> str | None:
    if type(v) is not str:
        return f"{what} must be a str, not {type(v).__name__}"
    if not v and not empty_ok:
        return f"{what} must not be empty"
    try:
        size = len(v.encode())
    except UnicodeEncodeError:
        return f"{what} is not valid Unicode text (lone surrogates)"
    return f"{what} is longer than {max_bytes} bytes" if size > max_bytes else None


def uint_problem(what: str, v: Any) -> str | None:
    if type(v) is int and 0 <= v < _UINT_END:
        return None
    return f"{what} must be an int in [0, 2**64), not {v!r}"


def op_problem(op: TxnOp, *, single: bool) -> str | None:
    """What is wrong with ``op`` (``None``: nothing); ``single``: outside a txn."""
    if type(op.verb) is not str or op.verb not in (WRITE_VERBS if single else VERBS):
        return f"unknown verb {op.verb!r}"
    tree = op.verb in ("delete-tree", "get-tree")
    problem = str_problem("key", op.key, MAX_KEY_BYTES, empty_ok=tree)
    problem = problem or uint_problem("flags", op.flags) or uint_problem("index", op.index)
    if problem:
        return problem
    if type(op.value) is not bytes:
        return f"value must be bytes, not {type(op.value).__name__}"
    if len(op.value) > MAX_VALUE_BYTES:
        return (
            f"value of {len(op.value)} bytes for key {op.key!r} is over the "
            f"{MAX_VALUE_BYTES}-byte limit (Consul's kv_max_value_size): "
            "store large data elsewhere and keep a reference in the KV store"
        )
    if op.session is None:
        if op.verb in ("lock", "unlock"):
            return f"{op.verb} of {op.key!r} needs a session"
        return None
    return str_problem("session", op.session, MAX_SESSION_ID_BYTES)


def txn_problem(ops: Sequence[TxnOp]) -> str | None:
    if len(ops) > MAX_TXN_OPS:
        return f"a transaction holds at most {MAX_TXN_OPS} operations, not {len(ops)}"
    total = 0
    for i, op in enumerate(ops):
        if type(op) is not TxnOp:
            return f"operation {i} is not a TxnOp"
        problem = op_problem(op, single=False)
        if problem:
            return f"operation {i}: {problem}"
        total += len(op.value)
    if total > MAX_TXN_BYTES:
        return f"the values of a transaction total {total} bytes, over {MAX_TXN_BYTES}"
    return None


def batch_problem(ops: Sequence[TxnOp]) -> str | None:
    """What keeps ``ops`` from sharing one entry as a batch (``None``: nothing)."""
    if not 2 <= len(ops) <= MAX_TXN_OPS:
        return f"a batch holds 2 to {MAX_TXN_OPS} writes, not {len(ops)}"
    keys: set[str] = set()
    total = 0
    for i, op in enumerate(ops):
        if type(op) is not TxnOp:
            return f"write {i} is not a TxnOp"
        problem = op_problem(op, single=True) or (
            "a delete-tree is never batched" if op.verb == "delete-tree" else None
        )
        if problem:
            return f"write {i}: {problem}"
        if op.key in keys:
            return f"write {i}: key {op.key!r} is written twice in one batch"
        keys.add(op.key)
        total += len(op.value)
    if total > MAX_TXN_BYTES:
        return f"the values of a batch total {total} bytes, over {MAX_TXN_BYTES}"
    return None


def batch_groups(ops: Sequence[TxnOp]) -> list[list[int]]:
    """Cut ``ops`` (valid single writes, in order) into runs that may share an entry.

    Greedy, keeping the order: a run ends before a write to a key it already writes,
    before a ``delete-tree`` (which goes alone), at ``MAX_TXN_OPS`` writes or before the
    values would pass ``MAX_TXN_BYTES``.  Returns the indexes of each run; a run of one
    is proposed as the plain command, longer ones as a batch (:func:`cmd_writes`).
    """
    groups: list[list[int]] = []
    keys: set[str] = set()
    total = 0
    for i, op in enumerate(ops):
        alone = op.verb == "delete-tree"
        if (
            not groups
            or alone
            or op.key in keys
            or len(groups[-1]) >= MAX_TXN_OPS
            or total + len(op.value) > MAX_TXN_BYTES
            or ops[groups[-1][-1]].verb == "delete-tree"
        ):
            groups.append([])
            keys.clear()
            total = 0
        groups[-1].append(i)
        keys.add(op.key)
        total += len(op.value)
    return groups


def _seconds_problem(what: str, v: Any, lo: float, hi: float, *, zero_ok: bool) -> str | None:
    if type(v) is not float or not math.isfinite(v):
        return f"{what} must be a finite float, not {v!r}"
    if (zero_ok and v == 0.0) or lo <= v <= hi:
        return None
    return f"{what} must be {'0 or ' if zero_ok else ''}between {lo:g} and {hi:g} s, not {v:g}"


def session_problem(c: SessionCreateCmd) -> str | None:
    return (
        str_problem("session id", c.session_id, MAX_SESSION_ID_BYTES)
        or str_problem("node", c.node, MAX_NAME_BYTES)
        or str_problem("session name", c.name, MAX_KEY_BYTES, empty_ok=True)
        or (None if c.behavior in BEHAVIORS else f"behavior must be one of {BEHAVIORS}")
        or _seconds_problem("ttl_s", c.ttl_s, SESSION_TTL_MIN_S, SESSION_TTL_MAX_S, zero_ok=True)
        or _seconds_problem("lock_delay_s", c.lock_delay_s, 0.0, MAX_LOCK_DELAY_S, zero_ok=True)
    )


# ----------------------------------------------------------------------------- builders


def _op_wire(op: TxnOp) -> list[Any]:
    return [op.verb, op.key, op.value, op.flags, op.index, op.session]


def _pack(v: list[Any]) -> bytes:
    data: bytes = msgpack.packb(v, use_bin_type=True)
    return data


def cmd_op(op: TxnOp) -> bytes:
    """One single-key write as a command (``put_op`` / ``delete_op`` make the op)."""
    return _pack_op(_checked(op))


def _pack_op(op: TxnOp) -> bytes:
    return _pack([Kind.OP, *_op_wire(op)])


def cmd_writes(ops: Sequence[TxnOp]) -> bytes:
    """The command for one run of :func:`batch_groups`: a lone write is its plain
    command, more share a batch (``KVResult.of_write`` picks each one's result)."""
    return cmd_op(ops[0]) if len(ops) == 1 else cmd_batch(ops)


def cmd_batch(ops: Sequence[TxnOp]) -> bytes:
    """Single writes to distinct keys sharing one entry (module doc; ``batch_groups``)."""
    problem = batch_problem(ops)
    if problem:
        raise ConfigError(problem)
    return _pack([Kind.BATCH, [_op_wire(op) for op in ops]])


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise ConfigError(f"a KV value must be bytes, not {type(value).__name__} (encode it first)")


def put_op(
    key: str,
    value: bytes,
    *,
    flags: int = 0,
    cas: int | None = None,
    acquire: str | None = None,
    release: str | None = None,
) -> TxnOp:
    """The write of a put (``PUT /v1/kv/<key>``): plain, ``cas`` (0 = create only),
    ``acquire`` or ``release`` with a session; the last three exclude each other, as in
    Consul.  Checked: ``ConfigError`` says what to fix."""
    if sum(x is not None for x in (cas, acquire, release)) > 1:
        raise ConfigError("put takes at most one of cas, acquire and release")
    if cas is not None:
        op = TxnOp("cas", key, _as_bytes(value), flags, cas)
    elif acquire is not None or release is not None:
        verb, session = ("lock", acquire) if acquire is not None else ("unlock", release)
        op = TxnOp(verb, key, _as_bytes(value), flags, 0, session)
    else:
        op = TxnOp("set", key, _as_bytes(value), flags)
    return _checked(op)


def delete_op(key: str, *, recurse: bool = False, cas: int | None = None) -> TxnOp:
    """The write of a delete (``DELETE /v1/kv/<key>``): one key, a whole prefix, or
    ``cas`` on one key.  Checked: ``ConfigError`` says what to fix."""
    if recurse and cas is not None:
        raise ConfigError("delete takes recurse or cas, not both (as in Consul)")
    if recurse:
        return _checked(TxnOp("delete-tree", key))
    if cas is not None:
        return _checked(TxnOp("delete-cas", key, index=cas))
    return _checked(TxnOp("delete", key))


def _checked(op: TxnOp) -> TxnOp:
    problem = op_problem(op, single=True)
    if problem:
        raise ConfigError(problem)
    return op


def cmd_put(
    key: str,
    value: bytes,
    *,
    flags: int = 0,
    cas: int | None = None,
    acquire: str | None = None,
    release: str | None = None,
) -> bytes:
    """A put as a command (:func:`put_op`)."""
    return _pack_op(put_op(key, value, flags=flags, cas=cas, acquire=acquire, release=release))


def cmd_delete(key: str, *, recurse: bool = False, cas: int | None = None) -> bytes:
    """A delete as a command (:func:`delete_op`)."""
    return _pack_op(delete_op(key, recurse=recurse, cas=cas))


def check_txn(ops: Sequence[TxnOp]) -> None:
    """Raise :class:`ConfigError` saying what is wrong with ``ops``, if anything."""
    problem = txn_problem(ops)
    if problem:
        raise ConfigError(problem)


def cmd_txn(ops: Sequence[TxnOp]) -> bytes:
    """A transaction (``PUT /v1/txn``): every operation applies, or none does."""
    check_txn(ops)
    return _pack([Kind.TXN, [_op_wire(op) for op in ops]])


def cmd_session_create(
    session_id: str,
    node: str,
    *,
    name: str = "",
    ttl_s: float = 0.0,
    behavior: str = "release",
    lock_delay_s: float = DEFAULT_LOCK_DELAY_S,
) -> bytes:
    """Create a session (``PUT /v1/session/create``); the caller picks a fresh UUID."""
    c = SessionCreateCmd(session_id, node, name, behavior, float(ttl_s), float(lock_delay_s))
    problem = session_problem(c)
    if problem:
        raise ConfigError(problem)
    return _pack([Kind.SESSION_CREATE, *attrs.astuple(c)])


def _named(kind: Kind, what: str, arg: str, max_bytes: int) -> bytes:
    problem = str_problem(what, arg, max_bytes)
    if problem:
        raise ConfigError(problem)
    return _pack([kind, arg])


def cmd_session_destroy(session_id: str) -> bytes:
    return _named(Kind.SESSION_DESTROY, "session id", session_id, MAX_SESSION_ID_BYTES)


def cmd_session_renew(session_id: str) -> bytes:
    return _named(Kind.SESSION_RENEW, "session id", session_id, MAX_SESSION_ID_BYTES)


def cmd_node_failed(node: str) -> bytes:
    """Invalidate every session of ``node`` (dead or left, as the mesh decided)."""
    return _named(Kind.NODE_FAILED, "node", node, MAX_NAME_BYTES)


def cmd_expire_sessions() -> bytes:
    """Invalidate every TTL session whose ``expires_at_s`` is at or before the stamp."""
    return _pack([Kind.EXPIRE_SESSIONS])


def cmd_reset_session_timers() -> bytes:
    """Restart every TTL at the stamp: a new leader sends it (Consul renews TTLs on
    leader failover, so a slow election or clock skew cannot expire live sessions)."""
    return _pack([Kind.RESET_SESSION_TIMERS])


def cmd_reap_tombstones(upto_index: int) -> bytes:
    """Forget delete tombstones at or below ``upto_index`` (Consul's tombstone GC)."""
    problem = uint_problem("upto_index", upto_index)
    if problem:
        raise ConfigError(problem)
    return _pack([Kind.REAP_TOMBSTONES, upto_index])


def stamp(command: bytes, now_s: float) -> bytes:
    """Prefix ``command`` with the leader's wall-clock time, for the log entry."""
    if not math.isfinite(now_s):
        raise ConfigError(f"now_s must be finite, not {now_s!r}")
    return _STAMP.pack(now_s) + command


def unstamp(data: bytes) -> tuple[float, bytes]:
    """Split what :func:`stamp` made into ``(now_s, command)``; ``DecodeError`` if not."""
    if len(data) < _STAMP.size:
        raise DecodeError("entry too short for a time stamp")
    (now_s,) = _STAMP.unpack_from(data)
    if not math.isfinite(now_s):
        raise DecodeError("time stamp is not finite")
    return now_s, data[_STAMP.size :]
