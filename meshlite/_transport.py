"""UDP and TCP on one port, on anyio: the only module that knows sockets.

Theory of operation
-------------------
Gossip (probes, acks, piggybacked broadcasts) travels as UDP datagrams.  Request/response
exchanges that do not fit a datagram or need reliability (push/pull anti-entropy, the
fallback ping, keyring operations) use short-lived TCP streams on the *same* port number,
as memberlist does, so an operator opens one port.  A stream carries exactly one request
frame and one reply frame, each ``length(4, big-endian) | payload`` (the stream framing
of ``meshlite._crypto``); a frame longer than ``max_frame_bytes`` is refused before it is
read, so a peer cannot make us allocate.

*Channels* are the long-lived kind, for traffic too frequent for a connection each (Raft's
appends and heartbeats between servers, as etcd's rafthttp streams them): the opener
sends ``CHANNEL_MAGIC`` instead of a first length, then any number of frames, one way.
The magic can never be a frame length (it exceeds any frame limit), so an old peer
refuses a channel as an oversized frame.  Each accepted channel gets its own frame
handler from the channel handler (a factory, called with the peer's address), which says
per frame whether to keep the channel; a channel idle for ~``channel_idle_s`` is closed.
The sending end may apply a ``seal`` function to each payload under its send lock, so
frames leave in the order they were sealed: the driver binds them to the channel with
an id and sequence numbers (``meshlite._channel_seal``), checked by the frame handler.
Replies, if any, travel on the other side's own channel.

*Multiplexed connections* carry many concurrent calls both ways (forwarded KV calls, see
``meshlite._rpc_mux``): the opener sends ``MUX_MAGIC``, and the accepted connection is
handed whole to the mux handler.

The payloads are opaque here (the driver seals and opens them).  Every stream operation is
bounded by a timeout; a slow or silent peer costs one task for at most that long.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.memory import MemoryObjectReceiveStream

from meshlite._core.wire import Addr
from meshlite._crypto import (
    MAX_STREAM_FRAME_BYTES,
    STREAM_HEADER_BYTES,
    StreamFrameError,
    encode_stream_frame,
    parse_length,
)

__all__ = [
    "CHANNEL_MAGIC",
    "MUX_MAGIC",
    "Channel",
    "ChannelHandler",
    "FrameHandler",
    "MuxHandler",
    "NotSentError",
    "StreamHandler",
    "Transport",
    "bind_udp_tcp",
    "next_batch",
]

log = logging.getLogger("meshlite.transport")

# Largest datagram we will read.  The sender's budget is ~1,400 bytes; 64 KiB is the UDP
# maximum, so nothing legitimate is ever truncated.
MAX_DATAGRAM_BYTES = 65_535
# Binding port 0 picks the UDP port first and then asks for TCP on the same number, which
# another process may already hold; retrying a few times makes that race practically moot.
BIND_ATTEMPTS = 16
# At most this many inbound streams are served at once; more wait in the kernel backlog.
MAX_INBOUND_STREAMS = 256

# Sent instead of a first frame length to open a channel; 0xFF... exceeds every frame limit.
CHANNEL_MAGIC = b"\xffMLC"
# The same, for a multiplexed connection (``meshlite._rpc_mux``).
MUX_MAGIC = b"\xffMLM"
# A channel with no frame for this long is closed (Raft heartbeats arrive every ~50 ms).
CHANNEL_IDLE_S = 60.0
# A channel's idle deadline moves once it has come this fraction of CHANNEL_IDLE_S closer,
# not at every frame: a cancel scope per frame (or moving a deadline) costs 7-15 us on
# asyncio, more than opening the frame.  So a channel closes after 7/8 to all of
# ``channel_idle_s`` of silence.
IDLE_DEADLINE_STEP = 1 / 8

# Connecting to a live peer on loopback or a LAN takes well under a millisecond; a
# connect that has not completed in this long will not (the peer is gone or filtered).
CONNECT_TIMEOUT_S = 2.0


class NotSentError(Exception):
    """A call certainly reached no handler (no connection, or refused): safe to retry."""


StreamHandler = Callable[[bytes, Addr], Awaitable[bytes | None]]
FrameHandler = Callable[[bytes], bool]  # one channel's frames; False: close the channel
ChannelHandler = Callable[[Addr], FrameHandler]  # called once per accepted channel
# Serves one accepted multiplexed connection until it ends (MUX_MAGIC already read).
MuxHandler = Callable[[BufferedByteReceiveStream, anyio.abc.SocketStream, Addr], Awaitable[None]]


async def _read_body(reader: BufferedByteReceiveStream, header: bytes, max_bytes: int) -> bytes:
    # parse_length refuses an oversized frame before a byte of its body is read.
    return await reader.receive_exactly(parse_length(header, max_bytes))


async def _read_frame(stream: anyio.abc.ByteStream, max_bytes: int) -> bytes:
    reader = BufferedByteReceiveStream(stream)
    return await _read_body(reader, await reader.receive_exactly(STREAM_HEADER_BYTES), max_bytes)


_STREAM_ERRORS = (OSError, ValueError, StreamFrameError, anyio.EndOfStream, anyio.IncompleteRead)
_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError)


class Channel:
    """The sending end of a channel to one peer; ``send`` frames until ``aclose``."""

    def __init__(
        self,
        stream: anyio.abc.SocketStream,
        max_frame_bytes: int,
        seal: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self._stream = stream
        self._max = max_frame_bytes
        self._seal = seal
        self._lock = anyio.Lock()  # whole frames, never interleaved, sent in sealed order

    async def send(self, payload: bytes) -> None:
        """Seal (if the channel has a ``seal``) and write one frame.

        Raises ``OSError``/``anyio.BrokenResourceError`` if the peer is gone, and
        ``ValueError`` if the frame exceeds ``max_frame_bytes`` (a sealed frame that is
        not sent breaks the channel's sequence: the peer closes it at the next frame)."""
        await self.send_many((payload,))

    async def send_many(self, payloads: Iterable[bytes]) -> None:
        """Seal and write several frames, in order, with one write: one system call for
        a batch instead of one per frame.  Raises as :meth:`send`; on ``ValueError``
        none of the batch is sent."""
        # Uncontended (one writer task per channel, the usual case), take the lock without
        # the turn of the event loop ``async with`` costs: that turn delays every frame.
        try:
            self._lock.acquire_nowait()
        except anyio.WouldBlock:
            await self._lock.acquire()
        try:
            seal, limit = self._seal, self._max
            frames = [encode_stream_frame(p if seal is None else seal(p), limit) for p in payloads]
            await self._stream.send(b"".join(frames))
        finally:
            self._lock.release()

    async def aclose(self) -> None:
        await self._stream.aclose()


async def next_batch(
    rx: MemoryObjectReceiveStream[bytes], max_messages: int, max_bytes: int
) -> list[bytes]:
    """The next message, and those queued behind it, up to ``max_messages`` or (about)
    ``max_bytes``: what a channel's writer sends with one :meth:`Channel.send_many`."""
    batch = [await rx.receive()]
    size = len(batch[0])
    while len(batch) < max_messages and size < max_bytes:
        try:
            batch.append(rx.receive_nowait())
        except anyio.WouldBlock:
            break
        size += len(batch[-1])
    return batch


def _peer(stream: anyio.abc.SocketStream) -> Addr:
    raw = stream.extra(anyio.abc.SocketAttribute.remote_address)
    return (str(raw[0]), int(raw[1]))


async def bind_udp_tcp(
    host: str, port: int
) -> tuple[anyio.abc.UDPSocket, anyio.abc.Listener[anyio.abc.SocketStream]]:
    """A UDP socket and a TCP listener on the same ``host:port`` (the mesh port, DNS).

    ``host`` is an IP address, bound as is: no name lookup, so binding works where
    ``getaddrinfo``'s ``AI_ADDRCONFIG`` would refuse (a container or network namespace
    with only a loopback interface).  With ``port == 0`` UDP picks the number first and
    TCP asks for the same one, which another process may hold: retried up to
    ``BIND_ATTEMPTS`` times."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    last: OSError | None = None
    for _ in range(BIND_ATTEMPTS if port == 0 else 1):
        udp_sock = _bound(family, socket.SOCK_DGRAM, host, port)
        real_port = int(udp_sock.getsockname()[1])
        try:
            tcp_sock = _bound(family, socket.SOCK_STREAM, host, real_port)
        except OSError as exc:
            udp_sock.close()
            last = exc
            if exc.errno != errno.EADDRINUSE:
                raise
            continue
        udp = await anyio.abc.UDPSocket.from_socket(udp_sock)
        return udp, await anyio.abc.SocketListener.from_socket(tcp_sock)
    assert last is not None
    raise last


def _bound(
    family: socket.AddressFamily, kind: socket.SocketKind, host: str, port: int
) -> socket.socket:
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            # As anyio's listeners: rebinding a port with connections in TIME_WAIT works.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Transport:
    """A bound UDP socket plus a TCP listener on the same host and port."""

    def __init__(
        self,
        udp: anyio.abc.UDPSocket,
        tcp: anyio.abc.Listener[anyio.abc.SocketStream],
        local: Addr,
    ) -> None:
        self._udp = udp
        self._tcp = tcp
        self.local = local
        self.max_frame_bytes = MAX_STREAM_FRAME_BYTES
        self.channel_idle_s = CHANNEL_IDLE_S
        self._inbound = anyio.CapacityLimiter(MAX_INBOUND_STREAMS)

    @classmethod
    async def bind(cls, host: str, port: int) -> Transport:
        """Bind UDP and TCP on ``host:port`` (``port == 0`` picks a free port for both)."""
        udp, tcp = await bind_udp_tcp(host, port)
        return cls(udp, tcp, (host, int(udp.extra(anyio.abc.SocketAttribute.local_port))))

    async def send_packet(self, data: bytes, dst: Addr) -> None:
        """Best effort, like UDP itself: a send error is logged at debug and dropped."""
        try:
            await self._udp.sendto(data, dst[0], dst[1])
        except OSError as exc:
            log.debug("udp send to %s:%s failed: %s", dst[0], dst[1], exc)

    async def packets(self) -> AsyncIterator[tuple[bytes, Addr]]:
        while True:
            try:
                data, (host, port) = await self._udp.receive()
            except OSError as exc:  # e.g. ICMP port unreachable surfacing on Linux
                log.debug("udp receive error: %s", exc)
                continue
            except (anyio.ClosedResourceError, anyio.EndOfStream):
                return
            yield data, (str(host), int(port))

    async def serve_streams(
        self,
        handler: StreamHandler,
        timeout_s: float,
        channel_handler: ChannelHandler | None = None,
        mux_handler: MuxHandler | None = None,
    ) -> None:
        """Accept streams until closed; each gets ``timeout_s`` to send, be handled, and read.
        Channels and multiplexed connections (see the module docstring) go to
        ``channel_handler`` and ``mux_handler``, if there are such."""

        async def serve_one(stream: anyio.abc.SocketStream) -> None:
            async with stream, self._inbound:
                reader = BufferedByteReceiveStream(stream)
                try:
                    with anyio.fail_after(timeout_s):
                        header = await reader.receive_exactly(STREAM_HEADER_BYTES)
                    if header == CHANNEL_MAGIC and channel_handler is not None:
                        await self._serve_channel(reader, channel_handler(_peer(stream)))
                        return
                    if header == MUX_MAGIC and mux_handler is not None:
                        await mux_handler(reader, stream, _peer(stream))
                        return
                    with anyio.fail_after(timeout_s):
                        request = await _read_body(reader, header, self.max_frame_bytes)
                    # The handler bounds its own time: a forwarded blocking KV read may
                    # rightly take minutes; everything else answers at once.
                    reply = await handler(request, _peer(stream))
                    if reply is not None:
                        with anyio.fail_after(timeout_s):
                            await stream.send(encode_stream_frame(reply, self.max_frame_bytes))
                except (*_STREAM_ERRORS, TimeoutError) as exc:
                    log.debug("inbound stream dropped: %s", exc)
                except _GONE:
                    pass

        try:
            await self._tcp.serve(serve_one)
        except anyio.ClosedResourceError:
            return

    async def _serve_channel(
        self, reader: BufferedByteReceiveStream, on_frame: FrameHandler
    ) -> None:
        idle_s = self.channel_idle_s
        step_s = idle_s * IDLE_DEADLINE_STEP
        with anyio.CancelScope(deadline=anyio.current_time() + idle_s) as idle:
            while True:
                header = await reader.receive_exactly(STREAM_HEADER_BYTES)
                frame = await _read_body(reader, header, self.max_frame_bytes)
                if not on_frame(frame):
                    return
                now = anyio.current_time()
                if now + idle_s - idle.deadline >= step_s:
                    idle.deadline = now + idle_s
        raise TimeoutError(f"channel idle for {idle_s:g} s")

    async def open_channel(
        self, dst: Addr, timeout_s: float, seal: Callable[[bytes], bytes] | None = None
    ) -> Channel | None:
        """Connect a channel to ``dst`` (``None`` if it cannot be reached in ``timeout_s``);
        its ``send`` applies ``seal`` to every payload, in order (see :class:`Channel`)."""
        with anyio.move_on_after(timeout_s):
            try:
                stream = await anyio.connect_tcp(dst[0], dst[1])
            except OSError as exc:
                log.debug("channel to %s:%s failed: %s", dst[0], dst[1], exc)
                return None
            try:
                await stream.send(CHANNEL_MAGIC)
            except (OSError, *_GONE):
                await stream.aclose()
                return None
            return Channel(stream, self.max_frame_bytes, seal)
        return None

    async def request(self, dst: Addr, payload: bytes, timeout_s: float) -> bytes | None:
        """Open a stream, send one frame, return the one reply frame (``None`` on failure)."""
        with anyio.move_on_after(timeout_s):
            try:
                async with await anyio.connect_tcp(dst[0], dst[1]) as stream:
                    await stream.send(encode_stream_frame(payload, self.max_frame_bytes))
                    return await _read_frame(stream, self.max_frame_bytes)
            except _STREAM_ERRORS as exc:
                log.debug("stream to %s:%s failed: %s", dst[0], dst[1], exc)
            except _GONE:
                pass
        return None

    async def connect_mux(self, dst: Addr, timeout_s: float) -> anyio.abc.SocketStream:
        """A connection to ``dst`` announced as multiplexed; :class:`NotSentError` if none
        could be made within ``timeout_s`` (at most ``CONNECT_TIMEOUT_S``)."""
        try:
            with anyio.fail_after(min(timeout_s, CONNECT_TIMEOUT_S)):
                stream = await anyio.connect_tcp(dst[0], dst[1])
        except (OSError, TimeoutError) as exc:
            raise NotSentError(f"cannot connect to {dst[0]}:{dst[1]}: {exc}") from exc
        try:
            await stream.send(MUX_MAGIC)
        except (OSError, *_GONE) as exc:
            await stream.aclose()
            raise NotSentError(f"cannot connect to {dst[0]}:{dst[1]}: {exc}") from exc
        return stream

    async def aclose(self) -> None:
        await self._udp.aclose()
        await self._tcp.aclose()
