"""``mesh.lock(key)``: a distributed lock on the replicated KV store, as Consul's ``api.Lock``.

Theory of operation
-------------------
The recipe of Consul's ``api/lock.go`` (and its leader-election guide):

1. Create a session bound to this peer (behavior ``release``): if the peer dies or
   leaves, the mesh declares it failed, the leader invalidates the session and the
   lock is released — after the session's *lock delay*, during which nobody can take
   it, so a holder that was only cut off has time to notice before someone else acts.
2. Try ``put(key, value, acquire=session)``.  True: held.  False: someone holds it (or
   it is in its lock delay): block on the key (``get(index=...)``) until it changes and
   try again; a refused acquire of a free key (lock delay) retries after a pause.
3. While held, a monitor blocks on the key; if the key stops naming our session (the
   session was invalidated, or an operator deleted the key) ``lost`` is set.  Code that
   acts on the lock should check ``lock.lost`` (or ``lock.held``) before each step.
4. On exit: release the key and destroy the session (both bounded, and shielded from
   cancellation so a cancelled holder still lets go).

Mutual exclusion rests on the KV store's linearizable ``acquire``: at most one session
holds a key at any index.  "Held" is only ever as fresh as the last answer; that is why
the lock delay exists (Chubby's sequencer problem; Consul documents the same).
"""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from meshlite.errors import ConfigError, MeshliteError

if TYPE_CHECKING:
    from meshlite._kv_client import KV

__all__ = ["Lock"]

# Pause before retrying an acquire refused while the key is free: it is in its lock
# delay (Consul's api.Lock waits DefaultLockRetryTime = 5 s; a shorter pause costs one
# cheap write and makes hand-over faster).
RETRY_S = 0.5
# Blocking-query wait while watching a held key (Consul's DefaultMonitorRetryTime is 2 s
# between failed queries; the query itself waits up to its wait time).
WATCH_WAIT_S = 60.0
# Bound on release + session destroy at exit (each is one Raft write).
RELEASE_TIMEOUT_S = 10.0


class Lock:
    """``async with mesh.lock(key) as lock:`` — see the module doc."""

    def __init__(
        self,
        kv: KV,
        key: str,
        value: bytes = b"",
        *,
        lock_delay_s: float = 15.0,
        session_ttl_s: float = 0.0,
    ) -> None:
        if not isinstance(key, str) or not key:
            raise ConfigError("lock: the key must be a non-empty string")
        self._kv = kv
        self.key = key
        self._value = value
        self._lock_delay_s = lock_delay_s
        self._ttl_s = session_ttl_s
        self.session: str | None = None
        self.lost = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None

    @property
    def held(self) -> bool:
        """Acquired and not known to be lost."""
        return self.session is not None and not self.lost.is_set()

    async def __aenter__(self) -> Lock:
        if self.session is not None:
            raise ConfigError(f"lock {self.key!r} is already held by this object")
        session = await self._kv.session_create(
            name=f"lock {self.key}", ttl_s=self._ttl_s, lock_delay_s=self._lock_delay_s
        )
        self.session = session.id
        try:
            await self._acquire(session.id)
            self._tg = anyio.create_task_group()
            await self._tg.__aenter__()
            self._tg.start_soon(self._monitor, session.id)
        except BaseException:
            await self._cleanup()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)
            self._tg = None
        await self._cleanup()

    async def _acquire(self, session: str) -> None:
        index = None
        while True:
            entry = await self._kv.get(self.key, index=index, wait_s=WATCH_WAIT_S)
            if entry is not None and entry.session == session:
                return
            if entry is None or entry.session is None:
                if await self._kv.put(self.key, self._value, acquire=session):
                    return
                await anyio.sleep(RETRY_S)  # free but refused: in its lock delay
                index = None
            else:
                index = entry.modify_index  # held by another: wait for a change

    async def _monitor(self, session: str) -> None:
        index = None
        while True:
            try:
                read = await self._kv.read("get", self.key, index=index, wait_s=WATCH_WAIT_S)
            except MeshliteError:
                await anyio.sleep(RETRY_S)  # no leader for a while: keep watching
                continue
            if read.value is None or read.value.session != session:
                self.lost.set()
                return
            index = read.index

    async def _cleanup(self) -> None:
        session, self.session = self.session, None
        if session is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_TIMEOUT_S):
            try:
                if not self.lost.is_set():
                    await self._kv.put(self.key, self._value, release=session)
            except MeshliteError:
                pass  # destroying the session below releases it too
            with contextlib.suppress(MeshliteError):  # a node-bound session ends anyway
                await self._kv.session_destroy(session)  # when this peer leaves
