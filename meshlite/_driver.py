"""The one loop: feeds inputs to the SWIM core and performs the effects it returns.

Theory of operation
-------------------
The core is a pure state machine; this driver is the only code that gives it time and
I/O.  Everything runs on one anyio event loop (asyncio or trio), so ``feed()`` — which
calls ``core.handle(input, now)`` and then dispatches the effects — never interleaves with
itself and needs no locks.  ``feed()`` is synchronous on purpose: sends are queued to a
sender task, streams are spawned as tasks, replies and member events are handed over
without awaiting.  That way an API call such as ``set_meta`` reaches the core at once and
a slow socket can never stall the state machine.

Timers: a single task sleeps until ``core.next_deadline()``; whenever ``feed()`` makes the
deadline earlier it wakes that task.  Spurious wake-ups are harmless by contract.

Security at the edge: every datagram and stream frame goes through the sealer first.  A
frame that fails (no key, wrong key, another cluster, replay) is dropped and counted, and
the first refusal per (source host, reason) is logged once at WARNING so an operator sees
*why* a peer is not admitted without a log flood.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.memory import MemoryObjectSendStream

from meshlite._channel_seal import CHANNEL_HEADER_BYTES, ChannelOpener, ChannelSealer
from meshlite._core import events as ev
from meshlite._core.swim import SwimCore
from meshlite._core.wire import Kind, peek_kind
from meshlite._crypto import AuthError, Sealer
from meshlite._rpc_mux import MUX_HEADER_BYTES, MuxClient, serve_mux
from meshlite._transport import Channel, FrameHandler, Transport

__all__ = ["Driver"]

log = logging.getLogger("meshlite")

# Outgoing datagrams wait here for the sender task.  A burst (push/pull merge of a large
# cluster triggers many alive broadcasts, but those are piggybacked, not sent one by one)
# stays far below this; beyond it we drop, as a full NIC queue would.
SEND_QUEUE_DEPTH = 4096
# Distinct (host, reason) refusals remembered for log-once; beyond this we stop logging
# new ones rather than grow without bound under a spoofed-source flood.
MAX_REFUSALS_LOGGED = 1024
# A subscriber to member events that falls this far behind loses events (and we count it)
# instead of making the mesh buffer without bound.
WATCH_BUFFER = 4096

_REFUSAL_TEXT = {
    "auth": "not encrypted with any installed key (wrong key?) or for another cluster label",
    "label": "from another cluster label",
    "plaintext": "not encrypted, but this mesh requires a key",
    "encrypted": "encrypted, but this mesh has no key configured",
    "replay": "replayed (a nonce seen before)",
    "stale": "too old or from the future (check clocks)",
    "channel": "a channel frame out of sequence or from another channel (replay or splice?)",
}


class Driver:
    """Owns one :class:`SwimCore`, one :class:`Transport` and one :class:`Sealer`."""

    def __init__(
        self,
        core: SwimCore,
        transport: Transport,
        sealer: Sealer,
        keyring_handler: Callable[[bytes], bytes],
        *,
        name: str,
        tcp_timeout_s: float,
    ) -> None:
        self.core = core
        self.name = name
        self.tcp_timeout_s = tcp_timeout_s
        self.transport = transport
        self.sealer = sealer
        self.stats: Counter[str] = Counter()
        self._keyring_handler = keyring_handler
        self._send_tx, self._send_rx = anyio.create_memory_object_stream[tuple[bytes, ev.Addr]](
            SEND_QUEUE_DEPTH
        )
        self._wake = anyio.Event()
        self._progress = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self.stopped = anyio.Event()
        self._stream_ids = itertools.count(1)
        self._replies: dict[int, _Slot] = {}
        self._refused: set[tuple[str, str]] = set()
        self.watchers: set[MemoryObjectSendStream[ev.MemberEvent]] = set()
        self.on_user_message: Callable[[bytes], None] | None = None
        self.on_user_state: Callable[[bytes, bool], None] | None = None
        self.on_member: Callable[[ev.MemberEvent], None] | None = None
        # Channel frames (long-lived one-way streams, e.g. Raft), opened: plaintext, source.
        self.on_channel_message: Callable[[bytes, ev.Addr], None] | None = None
        # Forwarded KV/session calls (``Kind.RPC`` over multiplexed connections), set on
        # Raft servers only.
        self.rpc_handler: Callable[[bytes], Awaitable[bytes]] | None = None
        self._muxes: dict[ev.Addr, MuxClient] = {}  # one connection per server called
        self._mux_locks: dict[ev.Addr, anyio.Lock] = {}

    # ------------------------------------------------------------------ running

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._receive_loop)
                tg.start_soon(self._send_loop)
                tg.start_soon(self._timer_loop)
                tg.start_soon(
                    self.transport.serve_streams,
                    self._on_stream,
                    self.tcp_timeout_s,
                    self._accept_channel,
                    self._serve_mux,
                )
                task_status.started()
        finally:
            self._tg = None
            self.stopped.set()

    async def start(self, fn: Callable[..., Coroutine[Any, Any, None]]) -> None:
        """Run ``fn(task_status=...)`` as a task of the driver; return once it started."""
        assert self._tg is not None, "driver not running"
        await self._tg.start(fn)

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``fn`` as a task that lives and dies with the driver."""
        assert self._tg is not None, "driver not running"
        self._tg.start_soon(fn)

    async def stop(self) -> None:
        """Cancel every task of the driver and wait until they have finished."""
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await self.stopped.wait()

    def feed(self, inp: ev.Input) -> None:
        """Hand one input to the core and carry out its effects (never awaits)."""
        before = self.core.next_deadline()
        for effect in self.core.handle(inp, anyio.current_time()):
            self._perform(effect)
        if self.core.next_deadline() < before:
            self._wake.set()
        self._progress.set()
        self._progress = anyio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds; re-checked after every input the core takes."""
        while not predicate():
            await self._progress.wait()

    # ------------------------------------------------------------------ effects

    def _perform(self, effect: ev.Effect) -> None:
        if isinstance(effect, ev.SendPacket):
            self._queue_packet(effect.data, effect.dst)
        elif isinstance(effect, ev.SendStream):
            assert self._tg is not None, "driver not running"
            self._tg.start_soon(self._stream_request, effect)
        elif isinstance(effect, ev.ReplyStream):
            slot = self._replies.pop(effect.stream_id, None)
            if slot is not None:
                slot.set(effect.data)
        elif isinstance(effect, ev.MemberChanged):
            if self.on_member is not None:
                self.on_member(effect.event)
            self._publish(effect.event)
        elif isinstance(effect, ev.Log):
            log.log(effect.level, "%s", effect.message)
        elif isinstance(effect, ev.UserMessage):
            if self.on_user_message is not None:
                self.on_user_message(effect.payload)
        elif isinstance(effect, ev.UserStateMerged) and self.on_user_state is not None:
            self.on_user_state(effect.state, effect.join)

    def _queue_packet(self, plaintext: bytes, dst: ev.Addr) -> None:
        frame = self.sealer.seal(plaintext, time.time())
        try:
            self._send_tx.send_nowait((frame, dst))
        except anyio.WouldBlock:
            self.stats["drop_send_queue_full"] += 1

    def _publish(self, event: ev.MemberEvent) -> None:
        for watcher in list(self.watchers):
            try:
                watcher.send_nowait(event)
            except anyio.WouldBlock:
                self.stats["drop_watch_slow_consumer"] += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self.watchers.discard(watcher)

    # ------------------------------------------------------------------ tasks

    async def _send_loop(self) -> None:
        async for frame, dst in self._send_rx:
            await self.transport.send_packet(frame, dst)
            self.stats["packets_sent"] += 1
            self.stats["bytes_sent"] += len(frame)

    async def _receive_loop(self) -> None:
        async for frame, src in self.transport.packets():
            self.stats["packets_received"] += 1
            self.stats["bytes_received"] += len(frame)
            plaintext = self._open(frame, src)
            if plaintext is not None:
                self.feed(ev.PacketReceived(src, plaintext))

    async def _timer_loop(self) -> None:
        while True:
            delay = self.core.next_deadline() - anyio.current_time()
            if delay > 0:
                self._wake = anyio.Event()
                with anyio.move_on_after(min(delay, 3600.0)):
                    await self._wake.wait()
            if anyio.current_time() >= self.core.next_deadline():
                self.feed(ev.TimerFired())
            # Give packets and streams a turn even if a deadline is overdue.
            await anyio.lowlevel.checkpoint()

    async def request(self, dst: ev.Addr, plaintext: bytes, timeout_s: float) -> bytes | None:
        """One sealed request/reply exchange over a stream; ``None`` if it failed."""
        frame = self.sealer.seal(plaintext, time.time())
        reply = await self.transport.request(dst, frame, timeout_s)
        return None if reply is None else self._open(reply, dst)

    async def call(self, dst: ev.Addr, plaintext: bytes, timeout_s: float) -> bytes | None:
        """A sealed RPC over the multiplexed connection to ``dst`` (``meshlite._rpc_mux``):
        ``NotSentError`` if it certainly reached no handler, ``None`` if no answer came
        (sent, outcome unknown), else the answer."""
        client = self._muxes.get(dst)
        if client is None or not client.fresh():
            client = await self._connect_mux(dst, timeout_s)
        return await client.call(plaintext, timeout_s)

    async def _connect_mux(self, dst: ev.Addr, timeout_s: float) -> MuxClient:
        # One connection per peer, however many callers find none at once.
        lock = self._mux_locks.setdefault(dst, anyio.Lock())
        async with lock:
            client = self._muxes.get(dst)
            if client is not None and client.fresh():
                return client
            if client is not None:
                await client.aclose()
            stream = await self.transport.connect_mux(dst, timeout_s)
            sealer, opener = ChannelSealer(self.sealer), ChannelOpener(self.sealer)
            client = MuxClient(
                stream,
                open_frame=lambda frame: self._open_in(opener, frame, dst),
                seal_frame=lambda plaintext: sealer.seal(plaintext, time.time()),
                max_frame_bytes=self.transport.max_frame_bytes,
                max_body_bytes=self._max_mux_body(),
            )
            self._muxes[dst] = client
            self.spawn(client.run)
            return client

    async def _serve_mux(
        self, reader: BufferedByteReceiveStream, stream: anyio.abc.SocketStream, src: ev.Addr
    ) -> None:
        sealer, opener = ChannelSealer(self.sealer), ChannelOpener(self.sealer)
        await serve_mux(
            reader,
            stream,
            open_frame=lambda frame: self._open_in(opener, frame, src),
            seal_frame=lambda plaintext: sealer.seal(plaintext, time.time()),
            handler=self._on_rpc,
            max_frame_bytes=self.transport.max_frame_bytes,
            max_body_bytes=self._max_mux_body(),
        )

    async def _on_rpc(self, plaintext: bytes) -> bytes | None:
        """One call from a multiplexed connection; None: not served here (refused)."""
        if self.rpc_handler is None or peek_kind(plaintext) != Kind.RPC:
            return None  # not a server (or not a call): the caller tries another
        return await self.rpc_handler(plaintext)

    def _max_mux_body(self) -> int:
        overhead = self.sealer.overhead_bytes + CHANNEL_HEADER_BYTES + MUX_HEADER_BYTES
        return self.transport.max_frame_bytes - overhead

    async def _stream_request(self, effect: ev.SendStream) -> None:
        reply = await self.request(effect.dst, effect.data, effect.timeout_s)
        self.feed(ev.StreamReplied(effect.req_id, reply))

    async def _on_stream(self, frame: bytes, src: ev.Addr) -> bytes | None:
        plaintext = self._open(frame, src)
        if plaintext is None:
            return None
        if peek_kind(plaintext) == Kind.KEYRING_REQUEST:
            # Sealed with the keyring as it is *before* the operation is applied would be
            # nicer, but the handler mutates the keyring first; the primary key only changes
            # on "use", whose sender already has that key installed, so the reply opens.
            return self.sealer.seal(self._keyring_handler(plaintext), time.time())
        # The core answers a stream within the same handle() call or not at all (garbage,
        # a ping meant for another name), so there is nothing to wait for.
        stream_id = next(self._stream_ids)
        slot = _Slot()
        self._replies[stream_id] = slot
        self.feed(ev.StreamReceived(stream_id, src, plaintext))
        self._replies.pop(stream_id, None)
        return None if slot.data is None else self.sealer.seal(slot.data, time.time())

    async def open_channel(self, dst: ev.Addr, timeout_s: float) -> Channel | None:
        """A channel to ``dst`` that seals what it sends: ``await channel.send(plaintext)``
        (frames bound to the channel, see ``meshlite._channel_seal``)."""
        sealer = ChannelSealer(self.sealer)
        return await self.transport.open_channel(
            dst, timeout_s, lambda plaintext: sealer.seal(plaintext, time.time())
        )

    def seal(self, plaintext: bytes) -> bytes:
        """One sealed frame (for a one-shot stream or a datagram; channels seal themselves)."""
        return self.sealer.seal(plaintext, time.time())

    def _accept_channel(self, src: ev.Addr) -> FrameHandler:
        """Each inbound channel gets an opener of its own: its id and next frame number."""
        opener = ChannelOpener(self.sealer)
        return lambda frame: self._on_channel_frame(opener, frame, src)

    def _on_channel_frame(self, opener: ChannelOpener, frame: bytes, src: ev.Addr) -> bool:
        """Keep a channel only while its frames authenticate, follow on, and someone listens."""
        if self.on_channel_message is None:
            return False
        plaintext = self._open_in(opener, frame, src)
        if plaintext is None:
            return False
        self.on_channel_message(plaintext, src)
        return True

    def _open_in(self, opener: ChannelOpener, frame: bytes, src: ev.Addr) -> bytes | None:
        """A channel-bound frame opened, or None (counted and logged once: close it)."""
        try:
            return opener.open(frame, time.time())
        except AuthError as exc:
            self.stats[f"drop_{exc.reason}"] += 1
            self._log_refusal(src, exc.reason, exc.detail)
            return None

    # ------------------------------------------------------------------ security edge

    def _open(self, frame: bytes, src: ev.Addr) -> bytes | None:
        try:
            return self.sealer.open(frame, time.time())
        except AuthError as exc:
            self.stats[f"drop_{exc.reason}"] += 1
            self._log_refusal(src, exc.reason, exc.detail)
            return None

    def _log_refusal(self, src: ev.Addr, reason: str, detail: str) -> None:
        key = (src[0], reason)
        if key in self._refused or len(self._refused) >= MAX_REFUSALS_LOGGED:
            return
        self._refused.add(key)
        text = _REFUSAL_TEXT.get(reason, reason)
        log.warning(
            "refusing traffic from %s: %s [%s] (reported once per host and reason)",
            src[0],
            text,
            detail,
        )

    # ------------------------------------------------------------------ helpers

    def alive_peers(self) -> list[ev.Member]:
        me = self.name
        return [m for m in self.core.members() if m.name != me and m.status == "alive"]


class _Slot:
    """The reply box for one inbound stream."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: bytes | None = None

    def set(self, data: bytes) -> None:
        self.data = data


def backoff_s(attempt: int, base_s: float = 1.0, cap_s: float = 30.0) -> float:
    """Join retry delay: exponential from ``base_s``, capped at ``cap_s`` (Consul's retry_join
    waits 30 s between attempts; we start faster so a seed that is a second late costs a second)."""
    return min(cap_s, base_s * math.pow(2, max(0, attempt)))
