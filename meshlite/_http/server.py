"""Serving the HTTP API inside a running mesh: uvicorn on asyncio, Hypercorn on trio.

Theory of operation
-------------------
The mesh runs on anyio, so on either event loop, and the server is one task of the
mesh's driver: handlers run on the mesh's own loop and call it directly — no thread, no
lock.  On asyncio the server is uvicorn with httptools' C parser: per request it costs
well under half of Hypercorn's pure-Python h11 path (``benchmarks/bench_kv_http.py``:
2.5x the gets and 2x the puts per second on one core), and the API is mostly small
requests.  uvicorn runs only on asyncio, so on trio Hypercorn serves
(``hypercorn.trio.serve``); ``sniffio.current_async_library()`` picks.  Both are driven
as libraries: no global logging configuration, no signal handlers taken from the
application (uvicorn's ``capture_signals`` is switched off).

Binding is separate from serving: :meth:`HttpServer.bind` opens the listening socket
synchronously, so a taken port is an ``OSError`` from ``async with Mesh(...)`` (as the
gossip port's is), and a port of 0 is known (``address``) before anything is served.
The server adopts that socket (uvicorn as a socket object, Hypercorn via ``fd://``).

Closing (:meth:`HttpServer.aclose`, from ``Mesh.close``) first answers every blocking
query at once, then asks the server for a graceful shutdown bounded by
``GRACEFUL_TIMEOUT_S``; the driver's cancellation ends whatever is left.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.abc
import sniffio
import uvicorn
from starlette.routing import BaseRoute

from meshlite._addr import format_hostport
from meshlite._http.app import build_app
from meshlite._http.context import Api, RaftStatus, no_raft

if TYPE_CHECKING:
    from meshlite._mesh import Mesh
    from meshlite._services import Services

__all__ = ["GRACEFUL_TIMEOUT_S", "HttpServer"]

log = logging.getLogger("meshlite.http")

# In-flight requests get this long to finish at close; blocking queries are answered
# first, so only ordinary requests are waited for, and they take milliseconds.
GRACEFUL_TIMEOUT_S = 1.0
LISTEN_BACKLOG = 128  # connections queued before Hypercorn accepts them
# Hypercorn's own log ("Running on ... (CTRL + C to quit)") would duplicate ours.
_server_log = logging.getLogger("meshlite.http.server")
_server_log.setLevel(logging.WARNING)


class HttpServer:
    """The HTTP API of one mesh: bound at construction, served by :meth:`run`."""

    def __init__(
        self,
        mesh: Mesh,
        services: Services,
        bind: tuple[str, int],
        *,
        token: str | None = None,
        token_reads: bool = False,
        raft_status: RaftStatus = no_raft,
        extra_routes: Sequence[BaseRoute] = (),
        extra_openapi: dict[str, Any] | None = None,
    ) -> None:
        self._sock: socket.socket | None = _listen(*bind)  # OSError here: port taken
        self.address: tuple[str, int] = self._sock.getsockname()[:2]
        self.api = Api(mesh, services, token, token_reads, raft_status)
        self.app = build_app(self.api, extra_routes=extra_routes, extra_openapi=extra_openapi)
        self._shutdown = anyio.Event()
        self._stopped = anyio.Event()

    @property
    def url(self) -> str:
        return "http://" + format_hostport(*self.address)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until :meth:`aclose` (or cancellation)."""
        assert self._sock is not None, "an HttpServer runs once"
        sock, self._sock = self._sock, None
        fields = {"event": "http", "url": self.url}
        log.info("HTTP API listening on %s", self.url, extra={"fields": fields})
        task_status.started()
        try:
            if sniffio.current_async_library() == "trio":
                await self._serve_hypercorn_trio(sock)
            else:
                await self._serve_uvicorn(sock)
        finally:
            self._stopped.set()

    async def _serve_uvicorn(self, sock: socket.socket) -> None:
        config = uvicorn.Config(
            self.app,
            http="httptools",
            lifespan="off",
            log_config=None,  # never reconfigure the application's logging
            log_level="warning",  # uvicorn's own loggers only: no "Started server" lines
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=math.ceil(GRACEFUL_TIMEOUT_S),  # uvicorn takes whole s
        )
        server = _EmbeddedUvicorn(config)

        async def stop_on_shutdown() -> None:
            await self._shutdown.wait()
            server.should_exit = True  # uvicorn's main loop looks every 0.1 s

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(stop_on_shutdown)
                await server.serve(sockets=[sock])
                tg.cancel_scope.cancel()
        finally:
            sock.close()

    async def _serve_hypercorn_trio(self, sock: socket.socket) -> None:
        from hypercorn.config import Config
        from hypercorn.trio import serve as serve_trio

        config = Config()
        config.bind = [f"fd://{sock.detach()}"]  # Hypercorn owns the socket now
        config.errorlog = _server_log
        config.accesslog = None
        config.graceful_timeout = GRACEFUL_TIMEOUT_S
        config.include_server_header = False
        await serve_trio(cast(Any, self.app), config, shutdown_trigger=self._shutdown.wait)

    async def aclose(self) -> None:
        """Answer blocking queries, stop accepting, let in-flight requests finish."""
        self.api.stop_waits()
        if self._sock is not None:  # never served
            self._sock.close()
            self._sock = None
            return
        self._shutdown.set()
        with anyio.move_on_after(GRACEFUL_TIMEOUT_S + 1.0):
            await self._stopped.wait()


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn's server without its signal handlers: the application owns its signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        where = f"{format_hostport(host, port)} (HTTP API)"
        raise OSError(exc.errno, exc.strerror, where) from None
    except BaseException:
        sock.close()
        raise
    return sock
