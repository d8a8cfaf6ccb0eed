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

A session is bound to a node, which must be an alive member of the mesh here (Consul
refuses a session for a node missing from its catalog): otherwise the leader would
invalidate it at once for a failed node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio

from meshlite._core.wire_checks import DecodeError
from meshlite._kv_wire import (
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
    try:
        value = await dispatch(server, call.method, call.args, node_alive)
    except NotLeaderError as exc:
        return encode_error("not_leader", str(exc), exc.leader_hint)
    except ConfigError as exc:
        return encode_error("config", str(exc))
    except OutcomeUnknownError as exc:
        return encode_error("unknown", str(exc))
    return encode_result(call.method, call.args, value)
