"""The wire form of KV and session calls forwarded to a Raft server, and of their answers.

Theory of operation
-------------------
Consul's clients reach the servers by RPC (``agent/consul/rpc.go``) multiplexed over one
connection per server; ours too (``Driver.call``, ``meshlite._rpc_mux``), over the mesh
port, each call marked with the message kind ``Kind.RPC``.  A call is the msgpack array
``[Kind.RPC, method, args]``; ``args`` is a list whose shape the method fixes
(:data:`CALLS`).  An answer is ``[0, result]`` or ``[1, error_kind, text, leader_hint]``
where ``error_kind`` is one of :data:`ERROR_KINDS`.

A ``batch`` call carries up to :data:`MAX_BATCH_CALLS` encoded ``put`` and ``delete``
calls (:data:`BATCHABLE`) that a client had in flight to the same server at once
(``_kv_coalesce.py``); its answer is the list of their encoded answers, in order, each
exactly what the call alone would have been answered.

Everything that arrives is remote input: :func:`decode_call` and :func:`decode_reply`
check every field and raise only :class:`DecodeError`; the server turns that into an
error answer, never an exception.  Value types travel as the snapshot encodes them
(``kv_snapshot.entry_to_wire`` / ``session_to_wire``), so there is one encoding of a
``KVEntry`` in the project.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
import msgpack

from meshlite._core.kv import KVResult, TxnOp
from meshlite._core.kv_snapshot import (
    entry_from_wire,
    entry_to_wire,
    session_from_wire,
    session_to_wire,
)
from meshlite._core.kv_types import TxnError, TxnResult
from meshlite._core.messages import Kind
from meshlite._core.wire_checks import (
    DecodeError,
    check_bool,
    check_bytes,
    check_str,
    check_uint,
    unpack,
)
from meshlite._raft_server_kv import READS, KVRead

__all__ = [
    "BATCHABLE",
    "CALLS",
    "ERROR_KINDS",
    "MAX_BATCH_CALLS",
    "Call",
    "RpcError",
    "decode_call",
    "decode_reply",
    "encode_call",
    "encode_error",
    "encode_result",
]

# Error kinds an answer may carry (each maps to one exception on the caller's side).
ERROR_KINDS = ("config", "not_leader", "bad_request", "unknown")
# The calls a client may send together in one ``batch`` call, and at most how many.
BATCHABLE = frozenset({"put", "delete"})
MAX_BATCH_CALLS = 64


@attrs.frozen
class Call:
    method: str
    args: tuple[Any, ...]


@attrs.frozen
class RpcError:
    kind: str
    text: str
    leader_hint: str | None


def _opt(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else check(v)


def _float(v: Any) -> float:
    if type(v) is float and math.isfinite(v):
        return v
    if type(v) is int:
        return float(v)
    raise DecodeError("expected a finite number")


def _op(v: Any) -> TxnOp:
    if type(v) is not list or len(v) != 6:
        raise DecodeError("a txn op is a 6-field array")
    verb, key, value, flags, index, session = v
    return TxnOp(
        check_str(verb),
        check_str(key),
        check_bytes(value),
        check_uint(flags),
        check_uint(index),
        None if session is None else check_str(session),
    )


def _what(v: Any) -> str:
    if v not in READS:
        raise DecodeError(f"unknown read {v!r}")
    return str(v)


def _ops(v: Any) -> list[TxnOp]:
    if type(v) is not list:
        raise DecodeError("txn ops must be an array")
    return [_op(x) for x in v]


def _calls(v: Any) -> list[bytes]:
    if type(v) is not list or not 1 <= len(v) <= MAX_BATCH_CALLS:
        raise DecodeError(f"a batch is an array of 1 to {MAX_BATCH_CALLS} calls")
    return [check_bytes(c) for c in v]


_s, _os, _u, _ou, _b = check_str, _opt(check_str), check_uint, _opt(check_uint), check_bool
# method -> the checker of each positional argument
CALLS: dict[str, tuple[Callable[[Any], Any], ...]] = {
    "put": (_s, check_bytes, _u, _ou, _os, _os),  # key value flags cas acquire release
    "delete": (_s, _b, _ou),  # key recurse cas
    "txn": (_ops,),
    "session_create": (_os, _s, _float, _s, _float),  # node name ttl behavior lock_delay
    "session_destroy": (_s,),
    "session_renew": (_s,),
    "read": (_what, _s, _os, _s, _ou, _opt(_float)),  # what key sep consistency index wait
    "state": (),  # does this server hold Raft state? (bootstrap safety)
    "batch": (_calls,),  # encoded put/delete calls, answered one by one
}


def encode_call(method: str, *args: Any) -> bytes:
    assert len(args) == len(CALLS[method]), method
    wire = [_arg_to_wire(a) for a in args]
    data: bytes = msgpack.packb([int(Kind.RPC), method, wire], use_bin_type=True)
    return data


def _arg_to_wire(a: Any) -> Any:
    if isinstance(a, list | tuple) and a and isinstance(a[0], TxnOp):
        return [[o.verb, o.key, o.value, o.flags, o.index, o.session] for o in a]
    return a


def decode_call(data: bytes) -> Call:
    doc = unpack(data, "rpc call")
    if type(doc) is not list or len(doc) != 3 or doc[0] != Kind.RPC:
        raise DecodeError("an rpc call is [kind, method, args]")
    method, args = doc[1], doc[2]
    checks = CALLS.get(method) if type(method) is str else None
    if checks is None:
        raise DecodeError(f"unknown rpc method {method!r}")
    if type(args) is not list or len(args) != len(checks):
        raise DecodeError(f"{method}: expected {len(checks)} arguments")
    return Call(method, tuple(check(a) for check, a in zip(checks, args, strict=True)))


# ---------------------------------------------------------------------- results


def _result_to_wire(r: KVResult) -> list[Any]:
    return [
        r.index,
        r.ok,
        r.error,
        [[t.op_index, entry_to_wire(t.entry)] for t in r.results],
        [[e.op_index, e.what] for e in r.errors],
    ]


def _result_from_wire(v: Any) -> KVResult:
    if type(v) is not list or len(v) != 5:
        raise DecodeError("a txn result is a 5-field array")
    index, ok, error, results, errors = v
    if type(results) is not list or type(errors) is not list:
        raise DecodeError("txn results and errors are arrays")
    return KVResult(
        check_uint(index),
        check_bool(ok),
        None if error is None else check_str(error),
        results=tuple(TxnResult(check_uint(i), entry_from_wire(e)) for i, e in map(_pair, results)),
        errors=tuple(TxnError(check_uint(i), check_str(w)) for i, w in map(_pair, errors)),
    )


def _pair(v: Any) -> tuple[Any, Any]:
    if type(v) is not list or len(v) != 2:
        raise DecodeError("expected a pair")
    return v[0], v[1]


def _value_to_wire(what: str, value: Any) -> Any:
    if what == "get":
        return None if value is None else entry_to_wire(value)
    if what == "list":
        return [entry_to_wire(e) for e in value]
    if what == "session_info":
        return None if value is None else session_to_wire(value)
    if what in ("session_list", "session_node"):
        return [session_to_wire(s) for s in value]
    return list(value)  # keys


def _value_from_wire(what: str, v: Any) -> Any:
    if what in ("get", "session_info"):
        decode = entry_from_wire if what == "get" else session_from_wire
        return None if v is None else decode(v)
    if type(v) is not list:
        raise DecodeError(f"{what}: expected an array")
    if what == "list":
        return [entry_from_wire(e) for e in v]
    if what == "keys":
        return [check_str(k) for k in v]
    return [session_from_wire(s) for s in v]


def encode_result(method: str, args: tuple[Any, ...], value: Any) -> bytes:
    """``[0, result]`` for what ``method`` returned."""
    if method == "txn":
        wire: Any = _result_to_wire(value)
    elif method in ("session_create", "session_renew"):
        wire = None if value is None else session_to_wire(value)
    elif method == "read":
        read: KVRead[Any] = value
        wire = [_value_to_wire(args[0], read.value), read.index, read.lag, read.leader]
    else:
        wire = value  # put/delete/destroy: bool; state: bool; batch: the answers' bytes
    data: bytes = msgpack.packb([0, wire], use_bin_type=True)
    return data


def encode_error(kind: str, text: str, leader_hint: str | None = None) -> bytes:
    assert kind in ERROR_KINDS, kind
    data: bytes = msgpack.packb([1, kind, text, leader_hint], use_bin_type=True)
    return data


def decode_reply(method: str, args: tuple[Any, ...], data: bytes) -> Any:
    """The result of a call (:class:`RpcError` for an error answer); ``DecodeError`` on garbage."""
    doc = unpack(data, "rpc reply")
    if type(doc) is not list or not doc:
        raise DecodeError("an rpc reply is an array")
    if doc[0] == 1 and len(doc) == 4:
        kind, text, hint = doc[1], check_str(doc[2]), doc[3]
        if kind not in ERROR_KINDS:
            raise DecodeError(f"unknown rpc error kind {kind!r}")
        return RpcError(kind, text, None if hint is None else check_str(hint))
    if doc[0] != 0 or len(doc) != 2:
        raise DecodeError("an rpc reply is [0, result] or [1, kind, text, hint]")
    return _result_of(method, args, doc[1])


def _result_of(method: str, args: tuple[Any, ...], v: Any) -> Any:
    if method == "batch":
        if type(v) is not list or len(v) != len(args[0]):
            raise DecodeError("a batch answer is an array of one answer per call")
        return [check_bytes(a) for a in v]
    if method == "txn":
        return _result_from_wire(v)
    if method in ("session_create", "session_renew"):
        return None if v is None else session_from_wire(v)
    if method == "read":
        if type(v) is not list or len(v) != 4:
            raise DecodeError("a read answer is [value, index, lag, leader]")
        leader = None if v[3] is None else check_str(v[3])
        return KVRead(_value_from_wire(args[0], v[0]), check_uint(v[1]), check_uint(v[2]), leader)
    return check_bool(v)
