"""The KV API of a Raft server: writes through the log, reads in Consul's three modes.

Theory of operation
-------------------
Mixed into :class:`meshlite._raft_server.RaftServer`, which owns the state it uses
(``kv``, ``node``, the batcher, the ``_changed`` event and the clock).  Writes build a
command with the ``kv_commands`` builders (bad arguments raise ``ConfigError`` before
anything is proposed), stamp it with the leader's ``time.time()`` (``kv_commands.stamp``)
and wait for it to apply here (``RaftNode.propose``); puts and deletes of one key go
through the ``WriteBatcher`` (``_kv_batcher.py``), which lets writes arriving together
share an entry.  A refused command (an unknown session) raises ``ConfigError`` with the
state machine's reason.

Reads, all through :meth:`KVApi.read` (``mesh.kv`` wraps it as ``get``/``list``/``keys``),
follow Consul's consistency modes (``agent/consul/rpc.go`` ``blockingQuery`` and
``consistentRead``): ``"default"`` serves the leader's local state without a quorum
round (a deposed leader that has not noticed may answer stale: up to an election timeout
after it lost its quorum, or as long as it was paused — docs/reliability.md);
``"consistent"`` runs ReadIndex first (thesis §6.4); ``"stale"`` serves any server's
local state and reports its known lag (``commit - applied``).  With ``index=``, a read
blocks until ``X-Consul-Index`` of what it reads (``KVStore.key_index`` or
``prefix_index``) exceeds ``index``, or ``wait_s`` (Consul: default 5 min, max 10) ends.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Generic, Literal, TypeVar

import anyio
import attrs

from meshlite._core.kv import (
    KVResult,
    KVStore,
    Session,
    TxnOp,
    cmd_session_create,
    cmd_session_destroy,
    cmd_session_renew,
    cmd_txn,
    delete_op,
    put_op,
    stamp,
)
from meshlite._core.kv_types import DEFAULT_LOCK_DELAY_S, READ_VERBS
from meshlite._core.raft import Role
from meshlite._kv_batcher import WriteBatcher
from meshlite._raft_node import RaftNode
from meshlite.errors import ConfigError, NotLeaderError

__all__ = ["CONSISTENCY_MODES", "READS", "Consistency", "KVApi", "KVRead"]

T = TypeVar("T")
Consistency = Literal["default", "consistent", "stale"]
CONSISTENCY_MODES = ("default", "consistent", "stale")
# What ``read`` may fetch; each has its own value shape.
READS = ("get", "list", "keys", "session_info", "session_list", "session_node")

# Blocking reads: Consul's default wait (5 min) and its maximum (10 min).
DEFAULT_WAIT_S = 300.0
MAX_WAIT_S = 600.0


@attrs.frozen
class KVRead(Generic[T]):
    """A read's answer with Consul's query meta.

    ``index`` is ``X-Consul-Index`` (pass it back as ``index=`` to block for a change);
    ``lag`` is this server's known lag, ``commit - applied`` entries (0 once caught up);
    ``leader`` the leader this server knows (``X-Consul-KnownLeader``), or ``None``.
    """

    value: T
    index: int
    lag: int
    leader: str | None


def _refused_raises(result: KVResult) -> KVResult:
    """A command the state machine refused (an unknown session, say) is a ConfigError."""
    if result.error is not None:
        raise ConfigError(result.error)
    return result


class KVApi:
    """Consul's KV and session calls on one server (see the module doc)."""

    name: str
    kv: KVStore
    node: RaftNode
    _changed: anyio.Event
    _clock: Callable[[], float]
    _batcher: WriteBatcher

    async def _propose(self, command: bytes) -> KVResult:
        result = await self.node.propose(stamp(command, self._clock()))
        assert isinstance(result, KVResult)
        return result

    async def _write(self, command: bytes) -> KVResult:
        return _refused_raises(await self._propose(command))

    # ------------------------------------------------------------------ KV writes

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        flags: int = 0,
        cas: int | None = None,
        acquire: str | None = None,
        release: str | None = None,
    ) -> bool:
        """Consul's ``PUT /v1/kv/<key>``: False on a stale ``cas`` or a lock not taken."""
        op = put_op(key, value, flags=flags, cas=cas, acquire=acquire, release=release)
        return _refused_raises(await self._batcher.write(op)).ok

    async def delete(self, key: str, *, recurse: bool = False, cas: int | None = None) -> bool:
        """Consul's ``DELETE /v1/kv/<key>``: False on a stale ``cas``."""
        op = delete_op(key, recurse=recurse, cas=cas)
        return _refused_raises(await self._batcher.write(op)).ok

    async def write_many(self, ops: Sequence[TxnOp]) -> builtins.list[KVResult | Exception]:
        """Single-key writes (``put_op`` / ``delete_op``) proposed together: each one's
        result, or the ``NotLeaderError`` / ``ConfigError`` it alone would raise."""
        outcomes = await self._batcher.write_many(ops)
        return [
            ConfigError(o.error) if isinstance(o, KVResult) and o.error is not None else o
            for o in outcomes
        ]

    async def txn(self, ops: Sequence[TxnOp]) -> KVResult:
        """All-or-nothing transaction; read-only ones are served locally (``TxnRO``)."""
        if all(op.verb in READ_VERBS for op in ops):
            self._require_leader()
            return self.kv.read_txn(ops)
        return await self._propose(cmd_txn(ops))

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
        """Create a session bound to ``node`` (default: this server); returns it."""
        command = cmd_session_create(
            str(uuid.uuid4()),
            self.name if node is None else node,
            name=name,
            ttl_s=ttl_s,
            behavior=behavior,
            lock_delay_s=lock_delay_s,
        )
        session = (await self._write(command)).session
        assert session is not None
        return session

    async def session_destroy(self, session_id: str) -> bool:
        """Invalidate a session; False if it did not exist."""
        return bool((await self._write(cmd_session_destroy(session_id))).invalidated)

    async def session_renew(self, session_id: str) -> Session | None:
        """Restart a session's TTL; None if the session is gone."""
        result = await self._write(cmd_session_renew(session_id))
        return result.session if result.ok else None

    # ------------------------------------------------------------------ reads

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
        """Any read by name (``READS``): what forwarded calls and the HTTP API use.

        ``key`` is the key, prefix, session id or node, as ``what`` needs."""
        fetch: Callable[[], Any]
        current: Callable[[], int] = lambda: self.kv.sessions_index  # noqa: E731
        if what == "get":
            fetch, current = lambda: self.kv.get(key), lambda: self.kv.key_index(key)
        elif what in ("list", "keys"):
            current = lambda: self.kv.prefix_index(key)  # noqa: E731
            fetch = (
                (lambda: self.kv.list(key))
                if what == "list"
                else (lambda: self.kv.keys(key, separator))
            )
        elif what == "session_info":
            fetch = lambda: self.kv.session(key)  # noqa: E731
        elif what == "session_list":
            fetch = self._sessions
        elif what == "session_node":
            fetch = lambda: self.kv.node_sessions(key)  # noqa: E731
        else:
            raise ConfigError(f"unknown read {what!r}; expected one of {READS}")
        return await self._read(consistency, fetch, current, index, wait_s)

    def _sessions(self) -> builtins.list[Session]:
        return self.kv.sessions()

    async def _read(
        self,
        consistency: Consistency,
        fetch: Callable[[], T],
        current: Callable[[], int],
        index: int | None,
        wait_s: float | None,
    ) -> KVRead[T]:
        if consistency not in CONSISTENCY_MODES:
            raise ConfigError(
                f"consistency must be one of {CONSISTENCY_MODES}, not {consistency!r}"
            )
        if consistency == "consistent":
            await self.node.read_barrier()  # NotLeaderError on a follower
        elif consistency == "default":
            self._require_leader()
        if index:
            wait = DEFAULT_WAIT_S if wait_s is None else wait_s
            with anyio.move_on_after(max(0.0, min(wait, MAX_WAIT_S))):
                while current() <= index:
                    await self._changed.wait()
        return KVRead(fetch(), current(), self.lag(), self.node.core.leader)

    def _require_leader(self) -> None:
        if self.node.core.role is not Role.LEADER:
            raise NotLeaderError(self.node.core.leader)

    # ------------------------------------------------------------------ status

    def lag(self) -> int:
        """Committed entries this server knows of and has not applied yet."""
        return max(0, self.node.core.log.committed - int(self.node.applied))
