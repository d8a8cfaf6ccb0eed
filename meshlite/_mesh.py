"""``Mesh``: one peer of the mesh, as an async context manager.

Theory of operation
-------------------
``Mesh.__init__`` validates every argument at once (a malformed address, key, label or
profile is a :class:`ConfigError` there, before anything binds).  ``start()`` binds UDP
and TCP on one port, builds the SWIM core and the driver, and starts joining: the seeds
are retried in the background with exponential backoff until one answers, so peers can
start in any order (Consul's ``retry_join``).  Leaving the ``async with`` block leaves
gracefully — a ``Dead`` message about ourselves, which others record as *left*, not
*dead* — and then closes the sockets.

Everything the application reads (``members()``) comes from the core's memory: no I/O.
"""

from __future__ import annotations

import logging
import os
import random
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from meshlite._addr import advertise_address, format_hostport, is_ip, parse_hostport
from meshlite._core import events as ev
from meshlite._core.config import SwimConfig
from meshlite._core.directory import Directory
from meshlite._core.swim import SwimCore
from meshlite._core.wire import MAX_META_BYTES, MAX_NAME_BYTES
from meshlite._crypto import Keyring, Sealer, parse_key
from meshlite._driver import WATCH_BUFFER, Driver, backoff_s
from meshlite._keyring_ops import KeyringMethods, apply_request, no_keyring
from meshlite._mesh_frontends import (
    FrontendMethods,
    dns_config,
    http_bind,
    http_on_leader_setting,
)
from meshlite._mesh_raft import (
    DEFAULT_DEAD_SERVER_S,
    SERVER_META_KEY,
    SERVER_META_VALUE,
    RaftMethods,
    is_server,
    raft_settings,
)
from meshlite._mesh_services import ServiceMethods
from meshlite._services import Services
from meshlite._transport import Transport
from meshlite.errors import ConfigError, NotRunningError

if TYPE_CHECKING:
    from meshlite._core.raft import RaftConfig
    from meshlite._dns import DnsServer
    from meshlite._http import HttpServer
    from meshlite._kv_client import KV
    from meshlite._raft_server import RaftServer

__all__ = ["SERVER_META_KEY", "Mesh"]

log = logging.getLogger("meshlite")

PROFILES = {"lan": SwimConfig.lan, "local": SwimConfig.local}


def _parse_keys(key: str | bytes | Sequence[str | bytes] | None) -> Keyring | None:
    if key is None:
        return None
    keys = [key] if isinstance(key, str | bytes) else list(key)
    if not keys:
        raise ConfigError("key: an empty key list; pass None to disable encryption")
    return Keyring([parse_key(k) for k in keys])


def _check_meta(meta: Mapping[str, str] | None) -> dict[str, str]:
    out = dict(meta or {})
    for k, v in out.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ConfigError(f"meta must map strings to strings; got {k!r}: {v!r}")
    size = sum(len(k.encode()) + len(v.encode()) for k, v in out.items())
    if size > MAX_META_BYTES:
        raise ConfigError(f"meta is {size} bytes encoded; the limit is {MAX_META_BYTES}")
    return out


def _check_name(name: str | None) -> str:
    name = socket.gethostname() if name is None else name
    if not isinstance(name, str) or not name or len(name.encode()) > MAX_NAME_BYTES:
        raise ConfigError(f"name must be a non-empty string of at most {MAX_NAME_BYTES} bytes")
    return name


class Mesh(ServiceMethods, FrontendMethods, KeyringMethods, RaftMethods):
    """One peer.  See the module docstring and ``docs/`` for the whole story."""

    def __init__(
        self,
        name: str | None = None,
        bind: str = "127.0.0.1:7946",
        *,
        advertise: str | None = None,
        join: Sequence[str] = (),
        key: str | bytes | Sequence[str | bytes] | None = None,
        cluster: str = "",
        server: bool = False,
        bootstrap_expect: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        raft: RaftConfig | None = None,
        dead_server_s: float = DEFAULT_DEAD_SERVER_S,
        meta: Mapping[str, str] | None = None,
        mdns: bool = False,
        mdns_publish: bool = False,
        dns: str | None = None,
        dns_domain: str = "meshlite",
        dns_ttl_s: int = 0,
        http: str | None = None,
        http_token: str | None = None,
        http_token_reads: bool = False,
        http_on_leader: bool = False,
        profile: str = "lan",
        config: SwimConfig | None = None,
        seed: int | None = None,
    ) -> None:
        self.name = _check_name(name)
        self._bind = parse_hostport(bind, what="bind", allow_port_zero=True)
        if not is_ip(self._bind[0]):
            raise ConfigError(f"bind {bind!r}: the host must be an IP address to bind to")
        self._advertise = None if advertise is None else parse_hostport(advertise, what="advertise")
        if isinstance(join, str):
            raise ConfigError("join must be a list of 'host:port' strings, not one string")
        self._seeds = [parse_hostport(j, what="join address") for j in join]
        self._keyring = _parse_keys(key)
        if not isinstance(cluster, str) or len(cluster.encode()) > 255:
            raise ConfigError("cluster must be a string of at most 255 bytes")
        self.cluster = cluster
        self.server = bool(server)
        raft_settings(self.server, bootstrap_expect, data_dir, dead_server_s)
        self._bootstrap_expect = bootstrap_expect
        self._data_dir = data_dir
        self._raft_config = raft
        self._dead_server_s = dead_server_s
        self._raft: RaftServer | None = None
        self._raft_meta: dict[str, str] = {}  # this server's Raft standing, gossiped
        self._kv: KV | None = None
        self._routes_seen = None  # RaftMethods._routes
        self._meta = _check_meta(meta)
        if config is None:
            if profile not in PROFILES:
                known = ", ".join(sorted(PROFILES))
                raise ConfigError(f"profile {profile!r} is unknown; expected one of: {known}")
            config = PROFILES[profile]()
        self.config = config
        self._mdns_enabled = mdns
        self._mdns_publish = mdns_publish
        self._dns_config = dns_config(dns, dns_domain, dns_ttl_s)
        self._dns: DnsServer | None = None
        # The Consul-compatible HTTP API (meshlite._http): off unless an address is given.
        self._http_bind = http_bind(http, http_token)
        self._http_token = http_token
        self._http_token_reads = bool(http_token_reads)
        self._http_on_leader = http_on_leader_setting(http_on_leader, self._http_bind, self.server)
        self._http: HttpServer | None = None
        self._left_event: anyio.Event | None = None  # wait_left's, created on first use
        self._services: Services | None = None
        self._directory: Directory | None = None  # the services' index: discover's fast path
        self._rng = random.Random(seed)  # the core's, so a seeded peer's choices replay
        self._jitter = random.Random()  # join backoff jitter: not part of the core's replay
        self._driver: Driver | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._addr: ev.Addr | None = None
        self._left = False
        self._closed = False
        self._mdns: Any = None
        self._publisher: Any = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        """Bind, start the loop and begin joining.  Raises ``OSError`` if the bind fails."""
        if self._tg is not None or self._closed:
            raise RuntimeError("this Mesh has already been started; a Mesh runs once")
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            await self._start(self._tg)
        except BaseException:
            # Nothing runs in the group yet that could fail: end it cleanly and let the
            # caller see the bind error itself, not an exception group around it.
            await self.close()
            await self._tg.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        assert self._tg is not None
        cancelled = exc_info[0] is not None and issubclass(
            exc_info[0], anyio.get_cancelled_exc_class()
        )
        try:
            if not cancelled:
                await self.leave()
            await self.close()
        except BaseException as exc:
            await self.close()
            await self._tg.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return await self._tg.__aexit__(*exc_info)

    async def _start(self, tg: anyio.abc.TaskGroup) -> None:
        transport = await Transport.bind(*self._bind)
        self._addr = self._advertise or advertise_address(transport.local)
        now = anyio.current_time()
        meta = self._gossip_meta()
        services = Services(
            self.name,
            self._addr[0],
            lambda broadcast: self._running().feed(broadcast),
            lambda: [m.name for m in self._running().core.members()],
            publisher=self._make_publisher(),
        )
        core = SwimCore(
            self.name,
            self._addr,
            self.config,
            self._rng,
            now,
            meta=meta,
            local_state=services.directory.local_state,
        )
        sealer = Sealer(self._keyring, self.cluster)
        keyring = self._keyring
        handler = (lambda pt: apply_request(keyring, pt)) if keyring is not None else no_keyring
        timeout_s = self.config.tcp_timeout_s
        self._driver = Driver(
            core, transport, sealer, handler, name=self.name, tcp_timeout_s=timeout_s
        )
        await tg.start(self._driver.run)
        self._driver.on_user_message = services.on_broadcast
        self._driver.on_user_state = services.on_state
        self._driver.on_member = services.on_member
        await self._driver.start(services.run)
        self._services, self._directory = services, services.directory
        if self.server:
            await self._start_raft(self._driver)
        if self._dns_config is not None:
            await self._start_dns(self._dns_config)
        if (http := self._http_bind) is not None and self._http_on_leader:
            self._driver.spawn(lambda: self._http_follow_leader(http))
        elif http is not None:
            await self._start_http(http)
        if self._seeds:
            self._driver.spawn(self._join_loop)
        if self._mdns_enabled:
            self._start_mdns()
        log.debug(
            "mesh started: name=%s address=%s cluster=%r encryption=%s",
            self.name,
            self.address,
            self.cluster,
            "on" if self._keyring is not None else "off",
        )

    async def leave(self) -> None:
        """Tell the mesh we are going (others record *left*, not *dead*); idempotent."""
        if self._left or self._closed:
            return
        driver = self._running()
        await self._leave_raft()
        others_alive = bool(driver.alive_peers())
        driver.feed(ev.LeaveRequested())  # a repeat after a cancelled leave is harmless
        with anyio.move_on_after(self.config.leave_propagate_s):
            await driver.wait_for(lambda: driver.core.pending_broadcasts() == 0)
        if others_alive:
            # Serf's LeavePropagateDelay: stay up a little after the goodbye went out, so
            # probes already in flight are answered and peers hear "left" before they can
            # suspect us (without it a loaded peer may record "dead").  Alone: no one to tell.
            await anyio.sleep(self.config.leave_propagate_s)
        self._left = True  # only now: a cancelled leave can be completed by calling again
        if self._left_event is not None:
            self._left_event.set()

    async def wait_left(self) -> None:
        """Return once this peer has left the mesh (``leave()`` from anywhere, such as the
        HTTP API's ``PUT /v1/agent/leave``)."""
        if not self._left:
            if self._left_event is None:
                self._left_event = anyio.Event()
            await self._left_event.wait()

    async def close(self) -> None:
        """Stop without leaving (others will notice a failure); idempotent.

        Safe to call in any order across several meshes: the sockets close and the tasks
        stop here; the ``async with`` block itself ends where it was written.
        """
        if self._closed:
            return
        self._closed = True
        # Shielded: a close interrupted half-way would leak sockets and a thread.  Every
        # step is bounded (mDNS goodbyes take at most a few seconds).
        with anyio.CancelScope(shield=True):
            if self._http is not None:  # first: in-flight requests still see the mesh
                await self._http.aclose()
            if self._services is not None:
                self._services.close()
                self._directory = None
            if self._publisher is not None:
                publisher, self._publisher = self._publisher, None
                await anyio.to_thread.run_sync(publisher.close)  # goodbyes; bounded
            if self._mdns is not None:
                mdns, self._mdns = self._mdns, None
                await anyio.to_thread.run_sync(mdns.close)
            if self._driver is not None:
                for watcher in list(self._driver.watchers):
                    watcher.close()
                await self._driver.stop()
                await self._driver.transport.aclose()
            self._close_raft()  # after the driver: its tasks used the storage
            if self._dns is not None:
                await self._dns.aclose()

    # ------------------------------------------------------------------ membership

    @property
    def address(self) -> str:
        """The ``host:port`` other peers reach us at (the real port when bound to 0)."""
        if self._addr is None:
            raise NotRunningError("the mesh is not started; use `async with Mesh(...)`")
        return format_hostport(*self._addr)

    def members(self) -> list[ev.Member]:
        """Every member this peer knows, itself included, sorted by name."""
        members = self._running().core.members()
        leader = self._raft_leader_name()
        return [self._public(m, leader) for m in members]

    def watch_members(self) -> AsyncIterator[ev.MemberEvent]:
        """Every membership change from the moment of this call, until the mesh closes.

        The subscription starts here, not at the first ``__anext__``, so no event that
        happens between the call and the first iteration is missed.
        """
        driver = self._running()
        tx, rx = anyio.create_memory_object_stream[ev.MemberEvent](WATCH_BUFFER)
        driver.watchers.add(tx)
        return self._watch(driver, tx, rx)

    async def _watch(
        self,
        driver: Driver,
        tx: MemoryObjectSendStream[ev.MemberEvent],
        rx: MemoryObjectReceiveStream[ev.MemberEvent],
    ) -> AsyncIterator[ev.MemberEvent]:
        try:
            async with rx:
                async for event in rx:
                    member = self._public(event.member, self._raft_leader_name())
                    yield ev.MemberEvent(event.kind, member)
        finally:
            driver.watchers.discard(tx)
            tx.close()

    async def set_meta(self, meta: Mapping[str, str]) -> None:
        """Replace this peer's meta; gossiped with a new incarnation."""
        self._meta = _check_meta(meta)
        self._running().feed(ev.MetaChanged(self._gossip_meta()))

    @property
    def stats(self) -> dict[str, int]:
        """Counters: packets and bytes, drops by reason, probes, suspicions, ..."""
        driver = self._running()
        return {**driver.core.stats, **driver.stats}

    # ------------------------------------------------------------------ internals

    def _running(self) -> Driver:
        if self._driver is None or self._closed:
            raise NotRunningError("the mesh is not running; use `async with Mesh(...)` first")
        return self._driver

    def _gossip_meta(self) -> dict[str, str]:
        if not self.server:
            return dict(self._meta)
        return {**self._meta, **self._raft_meta, SERVER_META_KEY: SERVER_META_VALUE}

    def _public(self, m: ev.Member, leader: str | None = None) -> ev.Member:
        server = is_server(m)
        return attrs.evolve(m, server=server, leader=server and m.name == leader)

    async def _join_loop(self) -> None:
        driver = self._running()
        for attempt in range(1_000_000):  # bounded only by the mesh's lifetime in practice
            seeds = await self._resolve_seeds()
            if not seeds and all(is_ip(host) for host, _ in self._seeds):
                return  # the only seed listed is this peer itself: nothing to join
            if seeds:
                driver.feed(ev.JoinRequested(tuple(seeds)))
                with anyio.move_on_after(self.config.tcp_timeout_s):
                    await driver.wait_for(lambda: bool(driver.alive_peers()))
            if driver.alive_peers():
                log.info(
                    "joined the mesh through %s", ", ".join(format_hostport(*a) for a in seeds)
                )
                return
            delay = backoff_s(attempt) * (0.8 + 0.4 * self._jitter.random())
            log.warning(
                "join: no seed answered (%s); retrying in %.1fs",
                ", ".join(format_hostport(*s) for s in self._seeds),
                delay,
            )
            await anyio.sleep(delay)

    async def _resolve_seeds(self) -> list[ev.Addr]:
        out: list[ev.Addr] = []
        for host, port in self._seeds:
            if is_ip(host):
                out.append((host, port))
                continue
            try:
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            except OSError as exc:
                log.warning("join: cannot resolve %s: %s", host, exc)
                continue
            out.extend((str(info[4][0]), port) for info in infos)
        return [a for a in dict.fromkeys(out) if a != self._addr]
