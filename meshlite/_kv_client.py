"""``mesh.kv``: the replicated key/value store and sessions, from any peer.

Theory of operation
-------------------
Every call goes to the Raft leader, as Consul's RPCs do (``agent/consul/rpc.go``
``forward``): on a server that leads, straight to its :class:`RaftServer`; anywhere
else, as a sealed call (multiplexed with the others on one connection per
server, ``_rpc_mux``) to the server believed to lead (``Mesh.leader()``: the Raft
core's view on a server, the leader's gossip meta elsewhere).  A ``not_leader`` answer
names the leader it knows; the call follows that hint.  With no leader known, any alive
server is asked.  This repeats, with a short backoff, for at most ``hold_s`` (Consul's
``rpc_hold_timeout``, 7 s) — long enough to ride out an election — and then raises
:class:`NoLeaderError`.

Retrying is only done when it is safe.  A read is always safe.  A write is retried only
when it certainly did not apply: no connection could be made (``NotSentError``), or the
server refused it before proposing (``not_leader``).  A write that was sent and got no
answer raises :class:`OutcomeUnknownError` — re-sending a ``cas`` put could apply it
twice.  Puts and deletes that this process's tasks send to the same server at the same
moment go together as one call (``_kv_coalesce.py``), each with its own answer.
``consistency="stale"`` reads on a server are answered from its own replica.
"""

from __future__ import annotations

import builtins
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from meshlite._core.kv import KVEntry, KVResult, Session, TxnOp
from meshlite._core.kv_types import DEFAULT_LOCK_DELAY_S
from meshlite._core.wire_checks import DecodeError
from meshlite._kv_coalesce import CallCoalescer
from meshlite._kv_serve import dispatch
from meshlite._kv_wire import BATCHABLE, RpcError, decode_reply, encode_call
from meshlite._raft_server_kv import MAX_WAIT_S, Consistency, KVRead
from meshlite._transport import NotSentError
from meshlite.errors import (
    ConfigError,
    MeshliteError,
    NoLeaderError,
    NotLeaderError,
    OutcomeUnknownError,
)

if TYPE_CHECKING:
    from meshlite._core.wire import Addr
    from meshlite._driver import Driver
    from meshlite._raft_server import RaftServer

__all__ = ["HOLD_S", "KV"]

# Consul's rpc_hold_timeout: how long a call waits for a leader before giving up.
HOLD_S = 7.0
# Backoff between attempts while no leader answers: an election takes ~0.5-1 s.
RETRY_MIN_S, RETRY_MAX_S = 0.02, 0.5
# A forwarded call that is not a blocking read answers within this (a proposal times
# out on the server after PROPOSE_TIMEOUT_S = 10 s); a little more, for the network.
CALL_TIMEOUT_S = 12.0


class _Host(Protocol):
    """What ``KV`` needs from its Mesh (see ``_mesh_raft.RaftMethods``)."""

    name: str

    def _running(self) -> Driver: ...
    def _raft_local(self) -> RaftServer | None: ...
    def _raft_leader_name(self) -> str | None: ...
    def _server_addrs(self) -> dict[str, Addr]: ...
    def _node_alive(self, name: str) -> bool: ...


class KV:
    """The KV and session API of one peer (``mesh.kv``); see the module doc."""

    def __init__(self, host: _Host, *, hold_s: float = HOLD_S) -> None:
        self._host = host
        self._hold_s = hold_s
        self._rng = random.Random()
        self._coalescer = CallCoalescer(host._running)

    # ------------------------------------------------------------------ writes

    async def put(
        self,
        key: str,
        value: bytes | str,
        *,
        flags: int = 0,
        cas: int | None = None,
        acquire: str | None = None,
        release: str | None = None,
    ) -> bool:
        """Set ``key``; False when ``cas`` is stale (``cas=0``: only if absent) or the
        lock named by ``acquire``/``release`` was not taken/held by that session."""
        data = value.encode() if isinstance(value, str) else value
        if not isinstance(data, bytes):
            raise ConfigError(f"value must be bytes or str, not {type(value).__name__}")
        return bool(await self._call("put", key, data, flags, cas, acquire, release))

    async def delete(self, key: str, *, recurse: bool = False, cas: int | None = None) -> bool:
        """Delete ``key`` (every key under it with ``recurse``); False on a stale ``cas``."""
        return bool(await self._call("delete", key, bool(recurse), cas))

    async def txn(self, ops: Sequence[TxnOp]) -> KVResult:
        """Up to 64 operations, applied all or none (Consul's ``/v1/txn``)."""
        result: KVResult = await self._call("txn", list(ops))
        return result

    # ------------------------------------------------------------------ reads

    async def get(
        self,
        key: str,
        *,
        consistency: Consistency = "default",
        index: int | None = None,
        wait_s: float | None = None,
    ) -> KVEntry | None:
        """The entry, or None; with ``index``, block until its ModifyIndex passes it."""
        read = await self.read("get", key, consistency=consistency, index=index, wait_s=wait_s)
        entry: KVEntry | None = read.value
        return entry

    async def list(
        self,
        prefix: str = "",
        *,
        consistency: Consistency = "default",
        index: int | None = None,
        wait_s: float | None = None,
    ) -> builtins.list[KVEntry]:
        """Every entry under ``prefix``, in key order."""
        read = await self.read("list", prefix, consistency=consistency, index=index, wait_s=wait_s)
        entries: builtins.list[KVEntry] = read.value
        return entries

    async def keys(
        self,
        prefix: str = "",
        separator: str | None = None,
        *,
        consistency: Consistency = "default",
        index: int | None = None,
        wait_s: float | None = None,
    ) -> builtins.list[str]:
        """Keys under ``prefix``, each cut after the first ``separator`` past the prefix."""
        read = await self.read(
            "keys", prefix, separator, consistency=consistency, index=index, wait_s=wait_s
        )
        keys: builtins.list[str] = read.value
        return keys

    async def read(
        self,
        what: str,
        key: str = "",
        separator: str | None = None,
        *,
        consistency: Consistency = "default",
        index: int | None = None,
        wait_s: float | None = None,
    ) -> KVRead[Any]:
        """Any read with Consul's query meta (``KVRead.index`` is ``X-Consul-Index``).

        ``what`` is one of ``get``, ``list``, ``keys``, ``session_info``,
        ``session_list``, ``session_node``; ``key`` the key, prefix, session or node."""
        if wait_s is not None and not wait_s >= 0:
            raise ConfigError(f"wait_s must be >= 0, got {wait_s!r}")
        wait = None if wait_s is None else float(wait_s)
        read: KVRead[Any] = await self._call("read", what, key, separator, consistency, index, wait)
        return read

    def local(self, key: str) -> KVEntry | None:
        """This server's replica of ``key``, synchronously (a stale read: no network, no
        leader).  ``ConfigError`` on a peer that is not a Raft server."""
        server = self._host._raft_local()
        if server is None:
            raise ConfigError("kv.local: this peer is not a Raft server (server=True)")
        return server.kv.get(key)

    # ------------------------------------------------------------------ sessions

    async def session_create(
        self,
        node: str | None = None,
        *,
        name: str = "",
        ttl_s: float = 0.0,
        behavior: str = "release",
        lock_delay_s: float = DEFAULT_LOCK_DELAY_S,
    ) -> Session:
        """A session bound to ``node`` (default: this peer): invalidated when that peer
        fails or leaves, or after ``2 * ttl_s`` without a renewal (``ttl_s > 0``)."""
        node = self._host.name if node is None else node
        session: Session = await self._call(
            "session_create", node, name, float(ttl_s), behavior, float(lock_delay_s)
        )
        return session

    async def session_destroy(self, session_id: str) -> bool:
        """Invalidate a session (its locks are released or deleted); False if unknown."""
        return bool(await self._call("session_destroy", session_id))

    async def session_renew(self, session_id: str) -> Session | None:
        """Restart a session's TTL; None if the session is gone."""
        session: Session | None = await self._call("session_renew", session_id)
        return session

    async def session_info(self, session_id: str, **kw: Any) -> KVRead[Session | None]:
        return await self.read("session_info", session_id, **kw)

    async def session_list(self, **kw: Any) -> KVRead[builtins.list[Session]]:
        return await self.read("session_list", **kw)

    async def session_node(self, node: str, **kw: Any) -> KVRead[builtins.list[Session]]:
        return await self.read("session_node", node, **kw)

    # ------------------------------------------------------------------ routing

    async def _call(self, method: str, *args: Any) -> Any:
        host = self._host
        is_read = method == "read"
        stale = is_read and args[3] == "stale"
        deadline = anyio.current_time() + self._hold_s
        hint: str | None = None
        unreachable: set[str] = set()  # servers this call could not connect to
        for attempt in range(10_000):  # bounded by the deadline in practice
            local = host._raft_local()
            target = hint or host._raft_leader_name()
            if local is not None and (stale or target in (None, host.name)):
                try:
                    return await dispatch(local, method, args, host._node_alive)
                except NotLeaderError as exc:
                    hint = exc.leader_hint
            else:
                answer = await self._forward(method, args, target, unreachable)
                if not isinstance(answer, RpcError):
                    return answer
                hint = self._settle(answer, is_read)
                if answer.kind == "unreachable" and set(host._server_addrs()) - unreachable:
                    continue  # another server at once: it knows the new leader
            if hint == host.name:
                hint = None
            if anyio.current_time() >= deadline:
                break
            await anyio.sleep(min(RETRY_MAX_S, RETRY_MIN_S * 2**attempt))
        raise NoLeaderError(
            f"kv {method}: no Raft leader answered within {self._hold_s:g}s"
            " (are servers running, with bootstrap_expect of them up?)"
        )

    def _settle(self, err: RpcError, is_read: bool) -> str | None:
        """Raise what the caller must see; return the leader hint to retry with."""
        if err.kind == "config":
            raise ConfigError(err.text)
        if err.kind == "unknown":
            raise OutcomeUnknownError(err.text)
        if err.kind == "bad_request":
            raise MeshliteError(f"the server refused the call: {err.text}")
        if err.kind == "lost" and not is_read:
            raise OutcomeUnknownError(err.text)
        return err.leader_hint

    async def _forward(
        self, method: str, args: tuple[Any, ...], target: str | None, unreachable: set[str]
    ) -> Any:
        addrs = self._host._server_addrs()
        if target is None or target not in addrs or target in unreachable:
            # A crashed leader stays "alive" in gossip for a few seconds: ask the others,
            # who know the new leader as soon as it is elected.
            candidates = sorted(set(addrs) - unreachable) or sorted(addrs)
            if not candidates:
                return RpcError("not_leader", "no server is alive", None)
            if len(candidates) == len(addrs):
                unreachable.clear()
            target = self._rng.choice(candidates)
        timeout = CALL_TIMEOUT_S
        if method == "read" and args[4]:  # a blocking read
            timeout += MAX_WAIT_S if args[5] is None else min(args[5], MAX_WAIT_S)
        payload = encode_call(method, *args)
        try:
            if method in BATCHABLE:  # sent with this process's other writes in flight
                reply = await self._coalescer.call(addrs[target], payload, timeout)
            else:
                reply = await self._host._running().call(addrs[target], payload, timeout)
        except NotSentError:
            unreachable.add(target)
            return RpcError("unreachable", f"{target} is unreachable", None)
        text = f"{method}: {target} did not answer; the outcome is unknown"
        if reply is None:
            return RpcError("lost", text, None)
        try:
            return decode_reply(method, args, reply)
        except DecodeError:
            return RpcError("lost", text, None)
