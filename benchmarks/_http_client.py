"""Two HTTP/1.1 keep-alive clients for the KV-over-HTTP benchmark, one request at a time each.

Theory of operation
-------------------
A load generator in Python measures itself unless each request costs it little.
:class:`RawConnection` is the cheap one: one asyncio stream with ``TCP_NODELAY``, the
request's bytes prepared in advance (:class:`Call`), the answer parsed by hand (status
line, ``Content-Length`` or chunked body) — a few microseconds of Python per request,
so the numbers are the server's.  It honours ``Connection: close`` (Hypercorn closes a
keep-alive connection after 1000 requests) by reconnecting for the next request.
:class:`HttpxConnection` does the same through an
``httpx.AsyncClient`` limited to one connection: a real client library's costs, which on
two cores dominate once a few dozen requests are in flight (httpx's pool and anyio
streams cost about a millisecond of CPU per request), so it measures the client as much
as the server.  Both expose ``send(call) -> (status, body)`` and ``aclose()``; a failed
request raises ``OSError`` (or an httpx error) and the connection reconnects on the next.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import attrs
import httpx

__all__ = ["Call", "Connection", "HttpxConnection", "RawConnection", "call"]

Check = Callable[[int, bytes], bool]  # (status, body) -> the answer is the expected one


@attrs.frozen
class Call:
    """One request, ready to send: ``raw`` is its whole HTTP/1.1 form."""

    method: str
    path: str
    body: bytes
    raw: bytes
    ok: Check


def call(host: str, port: int, method: str, path: str, body: bytes, ok: Check) -> Call:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return Call(method, path, body, head.encode() + body, ok)


class RawConnection:
    """One keep-alive connection; the cheapest client Python can be (module docstring)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, request: Call) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            self._writer.get_extra_info("socket").setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
            )
        self._writer.write(request.raw)
        try:
            status, body, close = await self._response()
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            await self.aclose()  # reconnect on the next request
            raise OSError(f"{request.method} {request.path}: {exc!r}") from None
        if close:  # e.g. Hypercorn's keep_alive_max_requests (1000) was reached
            await self.aclose()
        return status, body

    async def _response(self) -> tuple[int, bytes, bool]:
        reader = self._reader
        assert reader is not None
        status = int((await reader.readuntil(b"\r\n")).split(b" ", 2)[1])
        length, chunked, close = 0, False, False
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if not chunked:
            return status, await reader.readexactly(length), close
        body = bytearray()
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")  # the empty trailer
        return status, bytes(body), close

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer, self._reader = None, None


class HttpxConnection:
    """The same, through ``httpx.AsyncClient`` with one keep-alive connection."""

    def __init__(self, host: str, port: int) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        self._client = httpx.AsyncClient(
            base_url=f"http://{host}:{port}", limits=limits, timeout=30.0
        )

    async def send(self, request: Call) -> tuple[int, bytes]:
        r = await self._client.request(request.method, request.path, content=request.body)
        return r.status_code, r.content

    async def aclose(self) -> None:
        await self._client.aclose()


Connection = RawConnection | HttpxConnection
