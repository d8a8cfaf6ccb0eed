"""Zero-configuration LAN join: advertise this peer over mDNS/DNS-SD and browse for others.

Theory of operation.  Each peer with ``mdns=True`` registers the DNS-SD service instance
``<node-name>._meshlite._udp.local.`` (RFC 6763) whose SRV/A records point at its gossip
address and whose TXT record carries a protocol version and a short hash of the cluster
label (see :mod:`meshlite._mdns_plan` for names, TXT and address choice).  It also browses
the same service type continuously (RFC 6762 §5.2 continuous querying, python-zeroconf's
``ServiceBrowser`` with its back-off), so a peer that starts later is found from its own
announcements.  Every browsed instance that is not ourselves, speaks our protocol version
and carries our cluster hash is resolved and reported once per address to ``on_found``;
the driver then joins it like a seed.  Goodbye packets (TTL 0, RFC 6762 §10.1) are sent on
:meth:`MdnsDiscovery.close`.

Threading.  python-zeroconf is asyncio-only, and meshlite may run under trio, so this module
never touches the caller's event loop: :meth:`~MdnsDiscovery.start` spawns one daemon thread
that runs its own ``asyncio`` loop with an ``AsyncZeroconf``.  ``on_found`` is called from
that thread; the caller must hop it onto its own loop (``anyio.from_thread``, trio's
``TrioToken.run_sync_soon``, asyncio's ``call_soon_threadsafe``).  :meth:`close` blocks for
at most :data:`CLOSE_TIMEOUT_S`; async callers should run it in a worker thread.

Failure policy.  mDNS is a convenience: if it cannot work (no multicast-capable interface,
port 5353 unusable, the wrong interface named) one warning goes to the ``meshlite.mdns``
logger and the mesh carries on with its seed addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ifaddr
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from meshlite._mdns_plan import (
    SERVICE_TYPE,
    Plan,
    choose_address,
    instance_name,
    make_plan,
    server_name,
    txt_matches,
    txt_properties,
)
from meshlite.errors import ConfigError, NotRunningError

__all__ = ["CLOSE_TIMEOUT_S", "SERVICE_TYPE", "MdnsDiscovery"]

log = logging.getLogger("meshlite.mdns")

# Goodbyes take python-zeroconf ~0.25 s (three packets 125 ms apart) and socket teardown
# a few ms; 3 s leaves room on a loaded machine while keeping shutdown snappy.
CLOSE_TIMEOUT_S = 3.0
# How long to wait for SRV/TXT/A after a PTR arrives.  Announcements carry all of them at
# once, so this only matters for a peer that answers slowly; 3 s is zeroconf's default.
RESOLVE_TIMEOUT_MS = 3000

IFF_UP = 0x1  # <linux/if.h>: the interface is administratively up

OnFound = Callable[[tuple[str, int]], None]


def _down(adapters: list[ifaddr.Adapter]) -> frozenset[str]:
    """Names of interfaces that are administratively down (Linux sysfs; elsewhere: none)."""
    down = set()
    for adapter in adapters:
        try:
            flags = int(Path(f"/sys/class/net/{adapter.name}/flags").read_text(), 16)
        except (OSError, ValueError):
            continue  # not Linux, or the interface vanished: let zeroconf try it
        if not flags & IFF_UP:
            down.add(adapter.name)
    return frozenset(down)


def _validate(name: str, addr: tuple[str, int], cluster: str, interfaces: Any) -> None:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"mDNS node name must be a non-empty string, got {name!r}")
    if not isinstance(cluster, str):
        raise ConfigError(f"cluster label must be a string, got {cluster!r}")
    host, port = addr
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(
            f"mDNS needs the bound IP address (e.g. '0.0.0.0' or '10.0.0.5'), got {host!r}"
        ) from None
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"mDNS needs the real bound port (1-65535), got {port!r}")
    if interfaces is not None and (
        isinstance(interfaces, str) or not all(isinstance(i, str) and i for i in interfaces)
    ):
        raise ConfigError(
            f"interfaces must be a list of interface names or IP addresses, got {interfaces!r}"
        )


async def open_zeroconf(
    host: str, interfaces: list[str] | None, warn: Callable[[str], None]
) -> tuple[AsyncZeroconf, Plan] | None:
    """An AsyncZeroconf on the interfaces planned for ``host`` (``_mdns_plan``) and the
    plan; on any failure ``warn(why)`` and None: mDNS is optional, the mesh runs on."""
    try:
        adapters = list(ifaddr.get_adapters())
        plan = make_plan(host, interfaces, adapters, _down(adapters))
    except OSError as exc:
        warn(f"cannot list network interfaces ({exc})")
        return None
    problems = "; ".join(plan.problems)
    if not plan.interfaces or not plan.advertise:
        warn(f"no usable network interface{f' ({problems})' if problems else ''}")
        return None
    if problems:
        log.warning("mDNS on %s: leaving out %s", host, problems)
    version = {frozenset({4}): IPVersion.V4Only, frozenset({6}): IPVersion.V6Only}
    try:
        azc = AsyncZeroconf(
            interfaces=list(plan.interfaces), ip_version=version.get(plan.families, IPVersion.All)
        )
        await azc.zeroconf.async_wait_for_start()
    except Exception as exc:  # zeroconf raises OSError, RuntimeError and its own errors
        warn(f"cannot open the mDNS sockets ({type(exc).__name__}: {exc})")
        return None
    if not getattr(azc.zeroconf.engine, "senders", True):
        await azc.async_close()
        warn("no interface accepted multicast")
        return None
    return azc, plan


def stop_thread(
    loop: asyncio.AbstractEventLoop | None,
    stop: asyncio.Event | None,
    thread: threading.Thread | None,
    what: str,
) -> None:
    """Set ``stop`` on ``loop`` and join ``thread`` for at most ``CLOSE_TIMEOUT_S`` (+1 s)."""
    if loop is not None and stop is not None:
        # RuntimeError: the loop already finished, nothing left to stop.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stop.set)
    if thread is None or thread is threading.current_thread():
        return  # never started, or closed from its own thread: cannot join ourselves
    thread.join(CLOSE_TIMEOUT_S + 1.0)
    if thread.is_alive():
        log.warning("%s did not stop within %.1f s", what, CLOSE_TIMEOUT_S)


class MdnsDiscovery:
    """Advertise ``addr`` on the LAN and report peers of the same ``cluster`` to ``on_found``.

    ``addr`` is the gossip ``(ip, port)`` peers should join; an unspecified IP (``0.0.0.0``
    or ``::``) advertises the addresses of the interfaces zeroconf multicasts on.
    ``interfaces`` (names like ``"eth0"`` or IP addresses) restricts those interfaces.
    ``on_found`` runs on the mDNS thread, once per peer and address; it must be quick and
    thread-safe.
    """

    def __init__(
        self,
        name: str,
        addr: tuple[str, int],
        cluster: str,
        on_found: OnFound,
        interfaces: list[str] | None = None,
    ) -> None:
        _validate(name, addr, cluster, interfaces)
        self.name = name
        self.addr = addr
        self.cluster = cluster
        self._on_found = on_found
        self._interfaces = None if interfaces is None else list(interfaces)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._closed = False
        # Loop-thread state: the instance name we registered (zeroconf may rename it on a
        # conflict), what we reported per instance, and in-flight resolutions.
        self._own_instance = instance_name(name)
        self._reported: dict[str, tuple[str, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._plan: Plan | None = None

    # -- caller side -------------------------------------------------------------------

    def start(self) -> None:
        """Start advertising and browsing in a background thread; returns at once."""
        with self._lock:
            if self._closed:
                raise NotRunningError("this MdnsDiscovery was closed; create a new one")
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._thread_main, name=f"meshlite-mdns-{self.name}", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Send goodbyes, stop browsing and join the thread (at most ``CLOSE_TIMEOUT_S``)."""
        with self._lock:
            self._closed = True
            loop, stop, thread = self._loop, self._stop, self._thread
        stop_thread(loop, stop, thread, f"mDNS thread for {self.name!r}")

    # -- mDNS thread -------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:
            log.warning("mDNS discovery for %r stopped on an error", self.name, exc_info=True)

    async def _main(self) -> None:
        stop = asyncio.Event()
        with self._lock:
            if self._closed:
                return
            self._loop, self._stop = asyncio.get_running_loop(), stop
        azc = await self._open()
        if azc is None:
            return
        browser = AsyncServiceBrowser(azc.zeroconf, SERVICE_TYPE, handlers=[self._on_change])
        register = asyncio.ensure_future(self._register(azc))
        try:
            await stop.wait()
        finally:
            for task in (register, *self._tasks):
                task.cancel()
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await browser.async_cancel()
                    await azc.async_close()  # sends the goodbyes, then closes the sockets
            except TimeoutError:
                log.warning("mDNS for %r: shutdown took over %.1f s", self.name, CLOSE_TIMEOUT_S)

    async def _open(self) -> AsyncZeroconf | None:
        """Plan the interfaces and open zeroconf; on failure warn once and return None."""
        opened = await open_zeroconf(self.addr[0], self._interfaces, self._warn)
        if opened is None:
            return None
        azc, self._plan = opened
        return azc

    def _warn(self, why: str) -> None:
        if self._interfaces is not None:
            where = f"interfaces {', '.join(self._interfaces)}"
        elif ipaddress.ip_address(self.addr[0]).is_unspecified:
            where = "all interfaces"
        else:
            where = f"the interface that owns {self.addr[0]}"
        log.warning(
            "mDNS discovery disabled for %r on %s: %s; "
            "the mesh keeps running, join it with seed addresses instead",
            self.name,
            where,
            why,
        )

    async def _register(self, azc: AsyncZeroconf) -> None:
        assert self._plan is not None
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            self._own_instance,
            port=self.addr[1],
            properties=txt_properties(self.cluster),
            server=server_name(self.name),
            parsed_addresses=list(self._plan.advertise),
        )
        try:
            # Probing (RFC 6762 §8.1) may find our name taken (a stale twin, a duplicate
            # node name): take the renamed instance rather than give up on mDNS.
            await azc.async_register_service(info, allow_name_change=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._warn(f"cannot register {info.name} ({type(exc).__name__}: {exc})")
            return
        self._own_instance = info.name
        log.debug("mDNS: registered %s at %s port %d", info.name, self._plan.advertise, info.port)

    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        """Browser callback (loop thread, must not block): resolve in a task."""
        if state_change is ServiceStateChange.Removed:
            self._reported.pop(name, None)
            return
        if self._is_own(name):
            return
        task = asyncio.ensure_future(self._resolve(zeroconf, service_type, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _is_own(self, name: str) -> bool:
        return name.lower() == self._own_instance.lower()  # DNS names ignore case

    async def _resolve(self, zeroconf: Zeroconf, service_type: str, name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(zeroconf, RESOLVE_TIMEOUT_MS) or info.port is None:
            log.debug("mDNS: %s did not resolve", name)
            return
        if self._is_own(name):
            return  # zeroconf renamed our instance while this resolution was in flight
        if not txt_matches(info.decoded_properties, self.cluster):
            log.debug("mDNS: %s is another cluster or protocol version", name)
            return
        assert self._plan is not None
        host = choose_address(info.parsed_addresses(), self._plan.local_networks)
        if host is None:
            return
        found = (host, info.port)
        if found == self.addr or self._reported.get(name) == found:
            return
        self._reported[name] = found
        log.debug("mDNS: found %s at %s:%d", name, host, info.port)
        try:
            self._on_found(found)
        except Exception:
            log.exception("mDNS on_found callback failed for %s", name)
