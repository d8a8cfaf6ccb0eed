"""The optional front-ends of :class:`~meshlite.Mesh`: DNS, the HTTP API and mDNS.

Theory of operation
-------------------
A mixin so ``_mesh.py`` stays about membership and lifecycle.  Each front-end is off
unless asked for, imports its libraries only then (dnspython, Starlette/Hypercorn,
zeroconf), and runs inside the mesh: servers as tasks of the driver's task group (so they
stop with it), zeroconf in its own thread whose callbacks hop back onto the mesh's loop.
``dns_config`` and ``http_bind`` validate their settings in ``Mesh.__init__``, before
anything binds.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.from_thread
import anyio.lowlevel

from meshlite._addr import format_hostport, is_ip, parse_hostport
from meshlite._core import events as ev
from meshlite.errors import ConfigError

if TYPE_CHECKING:
    from meshlite._core.directory import Directory
    from meshlite._dns import DnsConfig, DnsServer
    from meshlite._driver import Driver
    from meshlite._http import HttpServer
    from meshlite._mesh import Mesh
    from meshlite._services import Services

__all__ = ["HTTP_LEADER_POLL_S", "FrontendMethods", "dns_config", "http_bind"]

log = logging.getLogger("meshlite")

# With ``http_on_leader``, how often a server compares "do I lead?" with "do I serve?".
# Leadership changes take an election timeout (0.5-1 s); a tenth of a second more to move
# the API is small, and a comparison costs nothing.
HTTP_LEADER_POLL_S = 0.1


class FrontendMethods:
    """Mixed into ``Mesh``; see the module docstring."""

    name: str
    cluster: str
    _addr: ev.Addr | None
    _closed: bool
    _left: bool
    _driver: Driver | None
    _directory: Directory | None
    _services: Services | None
    _dns: DnsServer | None
    _http: HttpServer | None
    _http_token: str | None
    _http_token_reads: bool
    _http_on_leader: bool
    _mdns: Any
    _mdns_publish: bool
    _publisher: Any

    def _running(self) -> Driver:
        raise NotImplementedError  # Mesh's

    if TYPE_CHECKING:  # RaftMethods' (after this mixin in Mesh's bases)

        def _leads(self) -> bool: ...

    @property
    def dns_address(self) -> str | None:
        """The ``host:port`` DNS is served on (the real port when bound to 0), or ``None``."""
        return None if self._dns is None else self._dns.address

    @property
    def http_address(self) -> str | None:
        """The ``host:port`` the HTTP API is served on (the real port when bound to 0),
        or ``None`` without ``http=`` (and, with ``http_on_leader``, while not leading)."""
        return None if self._http is None else format_hostport(*self._http.address)

    async def _start_dns(self, config: DnsConfig) -> None:
        from meshlite._dns import DnsServer, LiveNodes  # dnspython only when asked for

        driver = self._running()
        self._dns = await DnsServer.bind(
            config,
            node=self.name,
            directory=lambda: self._directory,
            nodes=LiveNodes(lambda: None if self._closed else driver.core),
            stats=driver.stats,
        )
        await driver.start(self._dns.serve)

    async def _start_http(self, bind: ev.Addr) -> None:
        self._http = self._make_http(bind)  # OSError: the port is taken
        await self._running().start(self._http.run)

    async def _http_follow_leader(self, bind: ev.Addr) -> None:
        """``http_on_leader``: serve on ``bind`` exactly while this server leads.

        Several servers may be given one address (on one host, or a floating address):
        whoever leads binds it, and gives it up on losing leadership.  A new leader
        whose predecessor has not let go yet (it steps down within an election timeout
        of losing its quorum; a killed one lets go at once) retries until it can bind."""
        waiting_logged = False
        while not self._closed:
            leads = self._leads()
            if leads and self._http is None:
                try:
                    await self._start_http(bind)
                    waiting_logged = False
                except OSError as exc:
                    if not waiting_logged:
                        log.info("this server leads; waiting to bind the HTTP API: %s", exc)
                        waiting_logged = True
            elif not leads and self._http is not None:
                server, self._http = self._http, None
                log.info("HTTP API on %s closed: this server no longer leads", server.url)
                await server.aclose()
            await anyio.sleep(HTTP_LEADER_POLL_S)

    def _make_http(self, bind: ev.Addr) -> HttpServer:
        from meshlite._http import (
            HttpServer,  # Starlette, Hypercorn only if asked
            metrics,
        )
        from meshlite._http.kv import store_routes
        from meshlite._http.kv_openapi import PATHS as STORE_PATHS
        from meshlite._http.kv_query import raft_status

        assert self._services is not None
        mesh = cast("Mesh", self)
        return HttpServer(
            mesh,
            self._services,
            bind,
            token=self._http_token,
            token_reads=self._http_token_reads,
            # The Raft seams: /v1/status/* from mesh.leader() and mesh.raft_peers(), and
            # the replicated store's routes (/v1/kv, /v1/txn, /v1/session) on mesh.kv,
            # served by every peer (a peer that is not a server forwards to the leader).
            raft_status=raft_status(mesh),
            extra_routes=[*store_routes(), *metrics.routes()],
            extra_openapi={**STORE_PATHS, **metrics.PATHS},
        )

    def _make_publisher(self) -> Any:
        if not self._mdns_publish:
            return None
        from meshlite._mdns_publish import Publisher  # zeroconf only when asked for

        assert self._addr is not None
        # The advertised IP picks the interfaces to multicast on, as for mdns=True.
        self._publisher = Publisher(self.name, self._addr[0])
        return self._publisher

    def _start_mdns(self) -> None:
        from meshlite._mdns import MdnsDiscovery  # zeroconf is only imported when asked for

        token = anyio.lowlevel.current_token()
        assert self._addr is not None

        def found(addr: ev.Addr) -> None:  # runs on zeroconf's thread
            with contextlib.suppress(RuntimeError):  # our loop is gone: the mesh is closing
                anyio.from_thread.run_sync(self._on_mdns_peer, addr, token=token)

        self._mdns = MdnsDiscovery(self.name, self._addr, self.cluster, found)
        self._mdns.start()

    def _on_mdns_peer(self, addr: ev.Addr) -> None:
        driver = self._driver
        if driver is None or self._left:
            return
        known = {(m.address, m.port) for m in driver.alive_peers()}
        if addr not in known and addr != self._addr:
            log.info("mdns: found peer at %s; joining", format_hostport(*addr))
            driver.feed(ev.JoinRequested((addr,)))


def dns_config(bind: str | None, domain: str, ttl_s: int) -> DnsConfig | None:
    if bind is None:
        return None
    from meshlite._dns import DnsConfig  # dnspython only when asked for

    return DnsConfig.create(bind, domain, ttl_s)


def http_on_leader_setting(on_leader: bool, bind: ev.Addr | None, server: bool) -> bool:
    if not on_leader:
        return False
    if not server:
        raise ConfigError("http_on_leader is for servers: give server=True too")
    if bind is None:
        raise ConfigError("http_on_leader is set but http is not: give http='host:port' too")
    return True


def http_bind(bind: str | None, token: str | None) -> ev.Addr | None:
    if token is not None and (not isinstance(token, str) or not token.strip()):
        raise ConfigError("http_token must be a non-empty string (or None for no token)")
    if bind is None:
        if token is not None:
            raise ConfigError("http_token is set but http is not: give http='host:port' too")
        return None
    host, port = parse_hostport(bind, what="http", default_port=8500, allow_port_zero=True)
    if not is_ip(host):
        raise ConfigError(f"http {bind!r}: the host must be an IP address to bind to")
    return host, port
