"""Group commit for Raft storage: concurrent async saves share one transaction and one sync.

Theory of operation
-------------------
A durable save costs one sync of the sqlite WAL (milliseconds on real disks) whether it
carries one entry or hundreds, so throughput comes from putting many writes behind each
sync.  The usual Raft driver gets that for free: it persists one ``Ready`` at a time in
a worker thread, and the proposals that arrive meanwhile land in the next ``Ready``
(etcd's raft node loop works the same way).  :class:`GroupCommitter` is for drivers with
several writers of their own: callers ``await committer.save(...)``; whoever holds the
lock flushes every save queued so far in ONE :meth:`RaftStorage.save_many` call, and all
of them return together — the leader/follower scheme of LevelDB's ``DBImpl::Write``
writer queue, where the first waiter writes the whole group.

Order: saves are written in the order ``save`` was called (the queue is appended to
synchronously, before any await), which is what keeps entry indexes consecutive.
Failure: a batch is one transaction, so one bad write fails every save in the batch, and
each caller sees the error.  Cancellation: a flush that started always finishes (it is
shielded; a half-abandoned sqlite transaction helps nobody), so a cancelled caller's write
may still be durable; a caller cancelled before its flush starts is taken off the queue.
The sqlite work runs in ``anyio.to_thread`` workers; see ``_raft_storage`` on threads.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import anyio.to_thread
import attrs

from meshlite._core.raft.types import Entry, HardState, Snapshot
from meshlite._raft_storage import RaftStorage, Write

__all__ = ["GroupCommitter"]


@attrs.define(eq=False)
class _Waiter:
    write: Write
    done: bool = False
    error: Exception | None = None


class GroupCommitter:
    """``await save(...)`` from many tasks; one transaction per group of queued saves."""

    def __init__(self, storage: RaftStorage) -> None:
        self._storage = storage
        self._queue: list[_Waiter] = []
        self._lock = anyio.Lock()  # FIFO: the flusher role passes to the oldest waiter
        self.flushes = 0  # transactions made (saves / flushes = the group size)
        self.saves = 0

    async def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry] = (),
        snapshot: Snapshot | None = None,
    ) -> None:
        """Persist like :meth:`RaftStorage.save`, sharing the sync with concurrent callers."""
        waiter = _Waiter(Write(hard_state, tuple(entries), snapshot))
        self._queue.append(waiter)
        try:
            async with self._lock:
                if not waiter.done:  # nobody flushed us while we queued for the lock
                    await self._flush()
        except BaseException:
            if not waiter.done and waiter in self._queue:
                self._queue.remove(waiter)
            raise
        if waiter.error is not None:
            raise waiter.error

    async def _flush(self) -> None:
        group, self._queue = self._queue, []
        error: Exception | None = None
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(self._storage.save_many, [w.write for w in group])
            except Exception as exc:
                error = exc
        self.flushes += 1
        self.saves += len(group)
        for waiter in group:
            waiter.done = True
            waiter.error = error
