"""One KV or session call on a Raft server: the same code for local and forwarded calls.

Theory of operation
-------------------
:func:`dispatch` runs a call (``_kv_wire.CALLS``) against this server's
:class:`RaftServer` and returns its value or raises what the caller should see:
``NotLeaderError`` (forward elsewhere), ``ConfigError`` (bad arguments, a refused
command), ``OutcomeUnknownError`` (proposed, but no result within
``PROPOSE_TIMEOUT_S``: this leader was deposed or cut off and cannot tell whether the
entry committed).  :func:`serve` wraps it for a forwarded call: remote bytes in, sealed
answer bytes out, never an exception (garbage becomes a ``bad_request`` answer).

A ``batch`` call (a client's concurrent puts and deletes, ``_kv_wire.BATCHABLE``) is
answered call by call, each exactly as if it had come alone; its writes reach the
``WriteBatcher`` together (``RaftServer.write_many``), so they share Raft entries.

A session is bound to a node, which must be an alive member of the mesh here (Consul
refuses a session for a node missing from its catalog): otherwise the leader would
invalidate it at once for a failed node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio

from meshlite._core.kv import TxnOp, delete_op, put_op
from meshlite._core.wire_checks import DecodeError
from meshlite._kv_wire import (
    BATCHABLE,
    Call,
    decode_call,
    encode_error,
    encode_result,
)
from meshlite._raft_server import RaftServer
from meshlite.errors import ConfigError, NotLeaderError, OutcomeUnknownError

__all__ = ["PROPOSE_TIMEOUT_S", "dispatch", "serve"]

log = logging.getLogger("meshlite.raft")

# A write that has not applied here in this long will not on this leader: it was
# deposed or partitioned (check-quorum steps it down within an election timeout, ~1 s).
# Consul's RPC hold timeout is 7 s; we answer "unknown outcome" a little later.
PROPOSE_TIMEOUT_S = 10.0


async def dispatch(
    server: RaftServer, method: str, args: tuple[Any, ...], node_alive: Callable[[str], bool]
) -> Any:
    """Run ``method(*args)`` on ``server``; see the module doc for what it raises."""
    if method == "read":
        what, key, sep, consistency, index, wait_s = args
        return await server.read(
            what, key, sep, consistency=consistency, index=index, wait_s=wait_s
        )
    if method == "state":
        status = server.core.status()
        return bool(status["term"] or status["last_index"])
    if method == "session_create" and not node_alive(args[0]):
        raise ConfigError(f"session: node {args[0]!r} is not an alive member of the mesh")
    with anyio.move_on_after(PROPOSE_TIMEOUT_S):
        return await _write(server, method, args)
    raise OutcomeUnknownError(
        f"{method}: no result in {PROPOSE_TIMEOUT_S:g}s; it may or may not have been applied"
    )


async def _write(server: RaftServer, method: str, args: tuple[Any, ...]) -> Any:
    if method == "put":
        key, value, flags, cas, acquire, release = args
        return await server.put(key, value, flags=flags, cas=cas, acquire=acquire, release=release)
    if method == "delete":
        key, recurse, cas = args
        return await server.delete(key, recurse=recurse, cas=cas)
    if method == "txn":
        return await server.txn(args[0])
    if method == "session_create":
        node, name, ttl_s, behavior, lock_delay_s = args
        return await server.session_create(
            node, name=name, ttl_s=ttl_s, behavior=behavior, lock_delay_s=lock_delay_s
        )
    if method == "session_destroy":
        return await server.session_destroy(args[0])
    if method == "session_renew":
        return await server.session_renew(args[0])
    raise ConfigError(f"unknown call {method!r}")


async def serve(server: RaftServer, data: bytes, node_alive: Callable[[str], bool]) -> bytes:
    """Answer one forwarded call (``data`` opened, ``Kind.RPC``); never raises."""
    try:
        call = decode_call(data)
    except DecodeError as exc:
        return encode_error("bad_request", str(exc))
    if call.method == "batch":
        return encode_result(call.method, call.args, await _serve_batch(server, call.args[0]))
    try:
        value = await dispatch(server, call.method, call.args, node_alive)
    except (NotLeaderError, ConfigError, OutcomeUnknownError) as exc:
        return _error_answer(exc)
    return encode_result(call.method, call.args, value)


def _error_answer(exc: Exception) -> bytes:
    if isinstance(exc, NotLeaderError):
        return encode_error("not_leader", str(exc), exc.leader_hint)
    if isinstance(exc, ConfigError):
        return encode_error("config", str(exc))
    return encode_error("unknown", str(exc))


def _op_of(call: Call) -> TxnOp:
    """The write of a batched call (``DecodeError`` for a call that is not a put or a
    delete, ``ConfigError`` for bad arguments)."""
    if call.method not in BATCHABLE:
        raise DecodeError(f"{call.method!r} is not sent in a batch")
    if call.method == "put":
        key, value, flags, cas, acquire, release = call.args
        return put_op(key, value, flags=flags, cas=cas, acquire=acquire, release=release)
    key, recurse, cas = call.args
    return delete_op(key, recurse=recurse, cas=cas)


async def _serve_batch(server: RaftServer, calls: list[bytes]) -> list[bytes]:
    """One answer per call of a ``batch``, in order (module doc)."""
    answers: list[bytes | None] = [None] * len(calls)
    ops: list[TxnOp] = []
    sent: list[tuple[int, Call]] = []  # (position, call) of each op proposed
    for i, data in enumerate(calls):
        try:
            call = decode_call(data)
            ops.append(_op_of(call))
            sent.append((i, call))
        except DecodeError as exc:
            answers[i] = encode_error("bad_request", str(exc))
        except ConfigError as exc:
            answers[i] = encode_error("config", str(exc))
    outcomes: list[Any] = []
    if ops:
        with anyio.move_on_after(PROPOSE_TIMEOUT_S):
            outcomes = await server.write_many(ops)
    unknown = OutcomeUnknownError(
        f"no result in {PROPOSE_TIMEOUT_S:g}s; it may or may not have been applied"
    )
    for n, (i, call) in enumerate(sent):
        outcome = outcomes[n] if outcomes else unknown
        if isinstance(outcome, Exception):
            answers[i] = _error_answer(outcome)
        else:
            answers[i] = encode_result(call.method, call.args, outcome.ok)
    done = [a for a in answers if a is not None]
    assert len(done) == len(calls), "every call of a batch is answered"
    return done
