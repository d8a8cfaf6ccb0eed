"""A client's concurrent puts and deletes to one server travel as one ``batch`` call.

Theory of operation
-------------------
A forwarded write costs both ends far more per call than per byte: routing, a sealed
frame, a task and a dispatch on the leader, an answer frame, a wake-up per side.  An
application with many tasks writing at once (a worker pool, a request handler per
connection) pays that for every write.  :class:`CallCoalescer` gathers the puts and
deletes (``_kv_wire.BATCHABLE``) that tasks of this process start in the same turn of
the event loop for the same server, and sends them as one ``batch`` call (up to
``MAX_BATCH_CALLS`` calls and ``MAX_BATCH_BYTES``); the leader answers each as if it had
come alone, and its writes share Raft entries (``_kv_batcher.py``).

No call waits for company: the first call of a turn spawns the task that sends, and
that task runs right after the tasks already runnable — the calls that joined in the
meantime go with it, a lone call goes alone as a plain call.  Under load the batches
form by themselves: the answers of one batch wake their writers together, and their
next calls leave together.

:meth:`CallCoalescer.call` keeps ``Driver.call``'s contract for each call, so the KV
client's retry rules are unchanged: ``NotSentError`` when the batch certainly reached no
handler (every call in it may be retried), ``None`` when no usable answer came (each
outcome unknown), else the call's own answer.  A caller cancelled before its batch is
sent leaves it; after that its write goes on without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from meshlite._core.wire_checks import DecodeError
from meshlite._kv_wire import MAX_BATCH_CALLS, RpcError, decode_reply, encode_call
from meshlite._transport import NotSentError

if TYPE_CHECKING:
    from meshlite._core.wire import Addr
    from meshlite._driver import Driver

__all__ = ["MAX_BATCH_BYTES", "CallCoalescer"]

# Calls larger than this go alone, and a batch stops growing past it: one frame of a
# few hundred KiB keeps a big value from delaying the small writes behind it.
MAX_BATCH_BYTES = 256 * 1024


class _Pending:
    __slots__ = ("done", "error", "payload", "reply", "sent")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.done = anyio.Event()
        self.sent = False  # taken by a sending task: it answers, whatever happens
        self.reply: bytes | None = None
        self.error: NotSentError | None = None


class CallCoalescer:
    """Sends concurrent batchable calls to one server together (module doc)."""

    def __init__(self, running: Callable[[], Driver]) -> None:
        self._running = running
        self._open: dict[Addr, list[_Pending]] = {}  # calls waiting for their sender
        self.calls = self.batches = 0  # sent so far: calls, and batch calls among them

    async def call(self, dst: Addr, payload: bytes, timeout_s: float) -> bytes | None:
        """``Driver.call(dst, payload, timeout_s)``, possibly sent with others."""
        driver = self._running()
        if len(payload) > MAX_BATCH_BYTES:
            return await driver.call(dst, payload, timeout_s)
        pending = _Pending(payload)
        waiting = self._open.get(dst)
        if waiting is None:
            waiting = self._open[dst] = []
            driver.spawn(lambda: self._send(driver, dst, timeout_s))
        waiting.append(pending)
        try:
            await pending.done.wait()
        except BaseException:
            if not pending.sent:
                waiting.remove(pending)
            raise
        if pending.error is not None:
            raise pending.error
        return pending.reply

    async def _send(self, driver: Driver, dst: Addr, timeout_s: float) -> None:
        waiting = self._open.pop(dst, [])
        for p in waiting:
            p.sent = True
        groups = _groups(waiting)
        if len(groups) == 1:
            await self._send_group(driver, dst, timeout_s, groups[0])
            return
        async with anyio.create_task_group() as tg:
            for group in groups:
                tg.start_soon(self._send_group, driver, dst, timeout_s, group)

    async def _send_group(
        self, driver: Driver, dst: Addr, timeout_s: float, group: list[_Pending]
    ) -> None:
        replies: list[bytes | None] = [None] * len(group)
        error: NotSentError | None = None
        try:
            if len(group) == 1:
                replies[0] = await driver.call(dst, group[0].payload, timeout_s)
            else:
                replies = await self._batch(driver, dst, timeout_s, group)
        except NotSentError as exc:
            error = exc
        finally:  # cancelled too (the mesh is stopping): every caller is told
            self.calls += len(group)
            self.batches += len(group) > 1
            for p, reply in zip(group, replies, strict=True):
                p.reply, p.error = reply, error
                p.done.set()

    async def _batch(
        self, driver: Driver, dst: Addr, timeout_s: float, group: list[_Pending]
    ) -> list[bytes | None]:
        calls = [p.payload for p in group]
        reply = await driver.call(dst, encode_call("batch", calls), timeout_s)
        if reply is None:
            return [None] * len(group)
        try:
            answers = decode_reply("batch", (calls,), reply)
        except DecodeError:
            return [None] * len(group)
        if isinstance(answers, RpcError):  # refused as a whole: each caller is told so
            return [reply] * len(group)
        return list(answers)


def _groups(waiting: list[_Pending]) -> list[list[_Pending]]:
    """Consecutive runs of at most ``MAX_BATCH_CALLS`` calls and ``MAX_BATCH_BYTES``."""
    groups: list[list[_Pending]] = []
    size = 0
    for p in waiting:
        full = size + len(p.payload) > MAX_BATCH_BYTES
        if not groups or len(groups[-1]) >= MAX_BATCH_CALLS or full:
            groups.append([])
            size = 0
        groups[-1].append(p)
        size += len(p.payload)
    return groups
