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

The payloads are opaque here (the driver seals and opens them).  Every stream operation is
bounded by a timeout; a slow or silent peer costs one task for at most that long.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from meshlite._core.wire import Addr
from meshlite._crypto import (
    MAX_STREAM_FRAME_BYTES,
    STREAM_HEADER_BYTES,
    StreamFrameError,
    encode_stream_frame,
    parse_length,
)

__all__ = ["StreamHandler", "Transport"]

log = logging.getLogger("meshlite.transport")

# Largest datagram we will read.  The sender's budget is ~1,400 bytes; 64 KiB is the UDP
# maximum, so nothing legitimate is ever truncated.
MAX_DATAGRAM_BYTES = 65_535
# Binding port 0 picks the UDP port first and then asks for TCP on the same number, which
# another process may already hold; retrying a few times makes that race practically moot.
BIND_ATTEMPTS = 16
# At most this many inbound streams are served at once; more wait in the kernel backlog.
MAX_INBOUND_STREAMS = 256

StreamHandler = Callable[[bytes, Addr], Awaitable[bytes | None]]


async def _read_frame(stream: anyio.abc.ByteStream, max_bytes: int) -> bytes:
    reader = BufferedByteReceiveStream(stream)
    # parse_length refuses an oversized frame before a byte of its body is read.
    size = parse_length(await reader.receive_exactly(STREAM_HEADER_BYTES), max_bytes)
    return await reader.receive_exactly(size)


def _peer(stream: anyio.abc.SocketStream) -> Addr:
    raw = stream.extra(anyio.abc.SocketAttribute.remote_address)
    return (str(raw[0]), int(raw[1]))


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
        self._inbound = anyio.CapacityLimiter(MAX_INBOUND_STREAMS)

    @classmethod
    async def bind(cls, host: str, port: int) -> Transport:
        """Bind UDP and TCP on ``host:port`` (``port == 0`` picks a free port for both)."""
        family: Literal[socket.AddressFamily.AF_INET, socket.AddressFamily.AF_INET6] = (
            socket.AF_INET6 if ":" in host else socket.AF_INET
        )
        last: OSError | None = None
        for _ in range(BIND_ATTEMPTS if port == 0 else 1):
            udp = await anyio.create_udp_socket(family=family, local_host=host, local_port=port)
            real_port = int(udp.extra(anyio.abc.SocketAttribute.local_port))
            try:
                tcp = await anyio.create_tcp_listener(
                    local_host=host, local_port=real_port, family=family
                )
            except OSError as exc:
                await udp.aclose()
                last = exc
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            return cls(udp, tcp, (host, real_port))
        assert last is not None
        raise last

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

    async def serve_streams(self, handler: StreamHandler, timeout_s: float) -> None:
        """Accept streams until closed; each gets ``timeout_s`` to send, be handled, and read."""

        async def serve_one(stream: anyio.abc.SocketStream) -> None:
            async with stream, self._inbound:
                with anyio.move_on_after(timeout_s):
                    try:
                        request = await _read_frame(stream, self.max_frame_bytes)
                        reply = await handler(request, _peer(stream))
                        if reply is not None:
                            await stream.send(encode_stream_frame(reply, self.max_frame_bytes))
                    except (
                        OSError,
                        ValueError,
                        StreamFrameError,
                        anyio.EndOfStream,
                        anyio.IncompleteRead,
                    ) as exc:
                        log.debug("inbound stream dropped: %s", exc)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        pass

        try:
            await self._tcp.serve(serve_one)
        except anyio.ClosedResourceError:
            return

    async def request(self, dst: Addr, payload: bytes, timeout_s: float) -> bytes | None:
        """Open a stream, send one frame, return the one reply frame (``None`` on failure)."""
        with anyio.move_on_after(timeout_s):
            try:
                async with await anyio.connect_tcp(dst[0], dst[1]) as stream:
                    await stream.send(encode_stream_frame(payload, self.max_frame_bytes))
                    return await _read_frame(stream, self.max_frame_bytes)
            except (
                OSError,
                ValueError,
                StreamFrameError,
                anyio.EndOfStream,
                anyio.IncompleteRead,
            ) as exc:
                log.debug("stream to %s:%s failed: %s", dst[0], dst[1], exc)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
        return None

    async def aclose(self) -> None:
        await self._udp.aclose()
        await self._tcp.aclose()
