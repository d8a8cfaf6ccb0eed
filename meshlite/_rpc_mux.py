"""Multiplexed RPC: many concurrent calls over one long-lived TCP connection per peer.

Theory of operation
-------------------
Forwarded KV calls used to open a TCP connection each (connect, accept, a task, close):
on a leader taking writes from a few busy clients that was most of its CPU.  Consul
multiplexes its RPCs over one connection per server with yamux; this is the same idea,
cut down to what request/reply needs.

The caller connects and sends ``MUX_MAGIC`` instead of a first frame length (as channels
do with theirs, ``meshlite._transport``), then request frames; the acceptor answers on
the same connection.  Frames are ``length(4) | sealed(...)``: each direction is sealed
as a channel of its own (``meshlite._channel_seal``: bound to the connection by id and
frame number, so nothing can be replayed, reordered or spliced in), and the plaintext
is::

    call_id(4, big-endian) | status(1) | body

Requests carry status ``CALL``.  Answers come back in any order, matched by id, with
``OK`` (the body is the handler's answer), ``REFUSED`` (the request never reached a
handler: none here, or ``MAX_IN_FLIGHT`` calls are already running on this connection),
``TOO_LARGE`` (the handler's answer would not fit in a frame) or ``FAILED`` (the handler
raised: a bug, logged where it happened).

What a caller learns, as with a connection per call: :class:`NotSentError` when the
request certainly reached no handler (no connection could be made, or ``REFUSED``) —
safe to retry anywhere; ``None`` when it was sent and no usable answer came (timeout,
connection lost, ``TOO_LARGE``, ``FAILED``) — the outcome is unknown.

Each end has one writer task per connection; callers and handlers only queue their
frames.  The writer sends whatever queued up since its last write as one batch (one
system call for the answers of a whole Raft commit, or for the puts of many tasks), and
nobody's cancellation can cut a frame short, which would put the stream out of step for
every other call.  The acceptor counts a call in flight until its answer is written, so
``MAX_IN_FLIGHT`` also bounds the answers queued for a client that stops reading.

Connection life: the caller keeps one connection per peer and drops it when the peer
closes it, a frame fails to open, a call times out with no answer to any call since it
was sent (the peer is gone or cut off), or it has been idle (nothing in flight, nothing
sent) for ``CLIENT_IDLE_S``; the next call connects again.  The acceptor closes a connection
with nothing in flight and no frame for ``SERVER_IDLE_S`` — four times longer, so it
never closes one that a caller still considers fresh (no request is lost to that race).
When the connection ends, the acceptor cancels the calls still running for it: nobody
is left to read their answers (a write already proposed to Raft still commits).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Final

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from meshlite._crypto import STREAM_HEADER_BYTES, StreamFrameError, parse_length
from meshlite._transport import MUX_MAGIC, Channel, NotSentError, next_batch

__all__ = [
    "CLIENT_IDLE_S",
    "MAX_IN_FLIGHT",
    "MUX_HEADER_BYTES",
    "MUX_MAGIC",
    "SERVER_IDLE_S",
    "MuxClient",
    "serve_mux",
]

log = logging.getLogger("meshlite.transport")

# call id (4) + status (1)
MUX_HEADER_BYTES: Final = 5
CALL, OK, REFUSED, TOO_LARGE, FAILED = 0, 1, 2, 3, 4
# Calls one connection may have running at once on the acceptor.  A call is ~1 KiB of
# state; a client has a handful of busy tasks, or many blocking reads (each holds a call
# for up to its wait): 1,024 serves both, and bounds what one connection can pin.
MAX_IN_FLIGHT: Final = 1024
# A writer's batch: at most this many frames or bytes in one write.
BATCH_FRAMES, BATCH_BYTES = 256, 1 << 20
# The caller retires a connection idle this long (the acceptor waits 4x as long).
CLIENT_IDLE_S: Final = 30.0
SERVER_IDLE_S: Final = 4 * CLIENT_IDLE_S

OpenFrame = Callable[[bytes], bytes | None]  # a received frame's plaintext; None: refused
SealFrame = Callable[[bytes], bytes]
Handler = Callable[[bytes], Awaitable[bytes | None]]  # None: not for us (answered REFUSED)
Written = Callable[[int], None]  # told how many frames each write carried

_GONE = (
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    anyio.IncompleteRead,
    StreamFrameError,
)


def _header(call_id: int, status: int) -> bytes:
    return call_id.to_bytes(4, "big") + bytes((status,))


def _parse(plaintext: bytes) -> tuple[int, int, bytes] | None:
    if len(plaintext) < MUX_HEADER_BYTES:
        return None
    return int.from_bytes(plaintext[:4], "big"), plaintext[4], plaintext[MUX_HEADER_BYTES:]


async def _next_frame(
    reader: BufferedByteReceiveStream, max_frame_bytes: int, open_frame: OpenFrame
) -> tuple[int, int, bytes] | None:
    """The next frame's (call id, status, body); None when it does not open or parse."""
    header = await reader.receive_exactly(STREAM_HEADER_BYTES)
    frame = await reader.receive_exactly(parse_length(header, max_frame_bytes))
    plaintext = open_frame(frame)
    return None if plaintext is None else _parse(plaintext)


# ---------------------------------------------------------------------- both ends


class _Writer:
    """The one task that writes a connection's frames, in batches (module docstring)."""

    def __init__(self, channel: Channel, written: Written | None = None) -> None:
        # Unbounded: callers are bounded elsewhere (in-flight calls, waiting tasks).
        self._tx, self._rx = anyio.create_memory_object_stream[bytes](math.inf)
        self._channel = channel
        self._written = written

    def put(self, plaintext: bytes) -> None:
        self._tx.send_nowait(plaintext)

    async def run(self) -> None:
        """Write until the connection fails (raises one of ``_GONE``)."""
        while True:
            batch = await next_batch(self._rx, BATCH_FRAMES, BATCH_BYTES)
            await self._channel.send_many(batch)
            if self._written is not None:
                self._written(len(batch))


# ---------------------------------------------------------------------- acceptor


async def serve_mux(
    reader: BufferedByteReceiveStream,
    stream: anyio.abc.SocketStream,
    *,
    open_frame: OpenFrame,
    seal_frame: SealFrame,
    handler: Handler,
    max_frame_bytes: int,
    max_body_bytes: int,
    idle_s: float = SERVER_IDLE_S,
    max_in_flight: int = MAX_IN_FLIGHT,
) -> None:
    """Serve one accepted connection (``MUX_MAGIC`` already read) until it ends."""
    in_flight = 0  # calls handed to the handler whose answer is not written yet
    unwritten: list[bool] = []  # per queued frame: does it end a call in flight?
    last = time.monotonic()

    def on_written(frames: int) -> None:
        nonlocal in_flight, last
        ended = sum(unwritten[:frames])
        del unwritten[:frames]
        in_flight -= ended
        last = time.monotonic()

    writer = _Writer(Channel(stream, max_frame_bytes, seal_frame), on_written)

    def answer(call_id: int, status: int, body: bytes = b"", *, ends_call: bool = True) -> None:
        unwritten.append(ends_call)
        writer.put(_header(call_id, status) + body)

    async def run(call_id: int, request: bytes) -> None:
        try:
            body = await handler(request)
        except Exception:
            log.exception("a multiplexed call's handler failed")
            answer(call_id, FAILED)
            return
        if body is None:
            answer(call_id, REFUSED)
        elif len(body) > max_body_bytes:
            log.warning("an answer of %d bytes does not fit in a frame", len(body))
            answer(call_id, TOO_LARGE)
        else:
            answer(call_id, OK, body)

    async def write() -> None:
        try:
            await writer.run()
        except (*_GONE, ValueError) as exc:
            log.debug("multiplexed connection ended: %s", exc)
        tg.cancel_scope.cancel()

    async def close_when_idle() -> None:
        while True:
            await anyio.sleep(idle_s / 8)
            if in_flight == 0 and time.monotonic() - last >= idle_s:
                tg.cancel_scope.cancel()
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(write)
        tg.start_soon(close_when_idle)
        try:
            while True:
                parsed = await _next_frame(reader, max_frame_bytes, open_frame)
                if parsed is None or parsed[1] != CALL:
                    break  # refused or malformed: close the connection
                last = time.monotonic()
                call_id, _status, request = parsed
                if in_flight >= max_in_flight:
                    answer(call_id, REFUSED, ends_call=False)
                    continue
                in_flight += 1
                tg.start_soon(run, call_id, request)
        except _GONE as exc:
            log.debug("multiplexed connection ended: %s", exc)
        tg.cancel_scope.cancel()


# ---------------------------------------------------------------------- caller


class _Waiter:
    __slots__ = ("body", "done", "status")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.status = -1  # -1: the connection ended first
        self.body = b""


class MuxClient:
    """The calling end of one connection; :meth:`run` writes calls and reads answers
    until the connection ends."""

    def __init__(
        self,
        stream: anyio.abc.SocketStream,
        *,
        open_frame: OpenFrame,
        seal_frame: SealFrame,
        max_frame_bytes: int,
        max_body_bytes: int,
        idle_s: float = CLIENT_IDLE_S,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self._stream = stream
        self._reader = BufferedByteReceiveStream(stream)
        self._writer = _Writer(Channel(stream, max_frame_bytes, seal_frame))
        self._open = open_frame
        self._max = max_frame_bytes
        self._idle_s = idle_s
        self._pending: dict[int, _Waiter] = {}
        self._ids = itertools.count(1)
        self._last = time.monotonic()
        self._last_answer = -1.0  # when the peer last answered anything
        self.closed = False

    def fresh(self) -> bool:
        """Open, and busy or used within ``idle_s``: safe to send one more call on."""
        if self.closed:
            return False
        return bool(self._pending) or time.monotonic() - self._last < self._idle_s

    async def run(self) -> None:
        """Write the calls, hand each answer to its caller; when the connection ends,
        wake every caller still waiting."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write, tg.cancel_scope)
                await self._read()
                tg.cancel_scope.cancel()
        finally:
            self.closed = True
            for waiter in self._pending.values():
                waiter.done.set()
            with anyio.CancelScope(shield=True):
                await self._stream.aclose()

    async def _write(self, scope: anyio.CancelScope) -> None:
        try:
            await self._writer.run()
        except (*_GONE, ValueError) as exc:
            log.debug("multiplexed connection ended: %s", exc)
        scope.cancel()

    async def _read(self) -> None:
        try:
            while True:
                parsed = await _next_frame(self._reader, self._max, self._open)
                if parsed is None:
                    return
                self._last_answer = time.monotonic()
                call_id, status, body = parsed
                waiter = self._pending.get(call_id)
                if waiter is not None and status != CALL:
                    waiter.status, waiter.body = status, body
                    waiter.done.set()
        except _GONE as exc:
            log.debug("multiplexed connection ended: %s", exc)

    async def call(self, request: bytes, timeout_s: float) -> bytes | None:
        """The answer to ``request``; see the module docstring for the failure cases."""
        if len(request) > self.max_body_bytes:
            raise ValueError(f"a call of {len(request)} bytes exceeds {self.max_body_bytes}")
        if self.closed:
            raise NotSentError("the connection is closed")
        call_id = next(self._ids) & 0xFFFF_FFFF
        waiter = self._pending[call_id] = _Waiter()
        self._last = sent_at = time.monotonic()
        self._writer.put(_header(call_id, CALL) + request)
        try:
            with anyio.move_on_after(timeout_s):
                await waiter.done.wait()
        finally:
            del self._pending[call_id]
            self._last = time.monotonic()
        if waiter.status == OK:
            return waiter.body
        if waiter.status == REFUSED:
            raise NotSentError("the peer refused the call before handling it")
        if waiter.status < 0 and self._last_answer < sent_at and not self.closed:
            # Not a word from the peer since: it is gone or cut off, and the next call
            # should find that out by connecting, not by waiting out its own timeout.
            await self.aclose()
        return None

    async def aclose(self) -> None:
        self.closed = True
        with anyio.CancelScope(shield=True):
            await self._stream.aclose()
