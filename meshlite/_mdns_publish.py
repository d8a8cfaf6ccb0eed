"""DNS-SD publishing of a peer's registered services (``Mesh(mdns_publish=True)``).

Theory of operation
-------------------
Each service this peer registers is also announced over multicast DNS (RFC 6762) as a
DNS-SD instance (RFC 6763), so ordinary browsers — python-zeroconf, ``avahi-browse``,
Bonjour — see it without knowing about meshlite: type ``_<name>._tcp.local.``, instance
``<id>@<node>``, SRV/A with the port and address, TXT ``tags=a,b`` plus the meta.
:mod:`meshlite._mdns_records` decides those records (and why they look so); a
*critical* instance is withdrawn until it recovers, as Consul's DNS interface does.

Threading: python-zeroconf is asyncio-only and a mesh may run under trio, so
:class:`Publisher` owns one daemon thread with its own asyncio loop, exactly as
:mod:`meshlite._mdns` does, and uses the same interface plan (a peer bound to 127.0.0.1
multicasts only on ``lo``).  :meth:`Publisher.publish` / :meth:`~Publisher.unpublish`
are thread-safe and never block: they record the wanted state, and on that loop
(:class:`ServicePublisher`) one task per service registers, updates or withdraws its
records until they match — services probe in parallel, and a burst of changes to one
service costs one announcement of its last state.
:meth:`Publisher.close` sends the goodbyes (TTL 0, RFC 6762 §10.1) and blocks for at
most ``CLOSE_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import threading
from collections.abc import Sequence

from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from meshlite._health import Instance
from meshlite._mdns import CLOSE_TIMEOUT_S, open_zeroconf, stop_thread
from meshlite._mdns_records import Wanted, wanted
from meshlite.errors import ConfigError

__all__ = ["Publisher", "ServicePublisher"]

log = logging.getLogger("meshlite.mdns")

# ---------------------------------------------------------------------------- on the loop


def _info(want: Wanted) -> AsyncServiceInfo:
    return AsyncServiceInfo(
        want.type,
        want.name,
        port=want.port,
        properties=dict(want.properties),
        server=want.server,
        parsed_addresses=list(want.addresses),
    )


class ServicePublisher:
    """Keeps an :class:`AsyncZeroconf`'s registrations equal to the wanted services.

    Every method runs on ``azc``'s event loop.  :meth:`want` records a service's wanted
    records (None: withdraw) and returns at once; one task per service then registers,
    updates or withdraws until what is on the link is the latest wanted state, so
    services probe in parallel (RFC 6762 §8.1 probing takes about a second each) and a
    burst of changes to one service ends in one announcement of its last state.
    """

    def __init__(self, azc: AsyncZeroconf) -> None:
        self._azc = azc
        self._wanted: dict[str, Wanted | None] = {}
        self._current: dict[str, tuple[Wanted, AsyncServiceInfo]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def want(self, service_id: str, wanted: Wanted | None) -> None:
        self._wanted[service_id] = wanted
        if service_id not in self._tasks:
            task = asyncio.ensure_future(self._reconcile(service_id))
            self._tasks[service_id] = task
            task.add_done_callback(lambda _t: self._tasks.pop(service_id, None))

    def names(self) -> dict[str, str]:
        """Service id -> the instance name on the link (zeroconf may have renamed it)."""
        return {sid: info.name for sid, (_w, info) in self._current.items()}

    async def _reconcile(self, sid: str) -> None:
        while True:
            want = self._wanted.get(sid)
            current = self._current.get(sid)
            if (None if current is None else current[0]) == want or not await self._apply(
                sid, want, current
            ):
                break
        if self._wanted.get(sid, 0) is None and sid not in self._current:
            del self._wanted[sid]  # withdrawn: forget it

    async def _apply(
        self, sid: str, want: Wanted | None, current: tuple[Wanted, AsyncServiceInfo] | None
    ) -> bool:
        try:
            if current is not None and (want is None or want.type != current[0].type):
                del self._current[sid]
                await (await self._azc.async_unregister_service(current[1]))
                log.debug("mDNS: withdrew %s", current[1].name)
                current = None
            if want is None:
                return True
            info = _info(want)
            if current is not None:  # same type: keep the (maybe renamed) instance name
                info.name = current[1].name
                await (await self._azc.async_update_service(info))
            else:  # probing renames on a conflict rather than failing
                await (await self._azc.async_register_service(info, allow_name_change=True))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # zeroconf raises its own errors, OSError, RuntimeError
            log.warning("mDNS: cannot publish service %r (%s: %s)", sid, type(exc).__name__, exc)
            return False
        self._current[sid] = (want, info)
        log.debug("mDNS: published %s port %d %s", info.name, want.port, dict(want.properties))
        return True

    async def close(self) -> None:
        """Stop reconciling and send goodbyes for everything published (RFC 6762 §10.1)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._current.clear()
        await self._azc.async_unregister_all_services()


# ---------------------------------------------------------------------------- the thread


class Publisher:
    """DNS-SD publishing for one peer: thread-safe, non-blocking ``publish``/``unpublish``.

    ``node`` is the peer's name; ``host`` the IP address its gossip socket advertises,
    which picks the interfaces to multicast on as :class:`~meshlite._mdns.MdnsDiscovery`
    does (``interfaces`` overrides).  The thread and the mDNS sockets start with the
    first ``publish``.  If mDNS cannot work here, one warning goes to the
    ``meshlite.mdns`` logger and publishing is off; the mesh carries on.
    """

    def __init__(self, node: str, host: str, *, interfaces: Sequence[str] | None = None) -> None:
        if not isinstance(node, str) or not node:
            raise ConfigError(f"node name must be a non-empty string, got {node!r}")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"mDNS publishing needs an IP address, got {host!r}") from None
        self.node = node
        self.host = host
        self._interfaces = None if interfaces is None else list(interfaces)
        self._lock = threading.Lock()
        self._pending: dict[str, Instance | None] = {}  # until the loop runs
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._closed = False
        # Loop-thread state.
        self._publisher: ServicePublisher | None = None
        self._own: tuple[str, ...] = ()
        self._warned: set[str] = set()

    # -- caller side -------------------------------------------------------------------

    def publish(self, instance: Instance) -> None:
        """Announce ``instance`` (again, if it changed); withdrawn while it is critical."""
        self._submit(instance.id, instance)

    def unpublish(self, service_id: str) -> None:
        """Withdraw a service (goodbye packets); unknown ids are ignored."""
        self._submit(service_id, None)

    def _submit(self, service_id: str, instance: Instance | None) -> None:
        with self._lock:
            if self._closed:
                return  # the mesh is closing: close() withdraws everything anyway
            loop = self._loop
            if loop is None:
                self._pending[service_id] = instance
                self._start()
                return
        with contextlib.suppress(RuntimeError):  # the loop just ended: nothing to do
            loop.call_soon_threadsafe(self._on_loop, service_id, instance)

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._thread_main, name=f"meshlite-mdns-publish-{self.node}", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Withdraw every service, close the sockets and join the thread (bounded)."""
        with self._lock:
            self._closed = True
            loop, stop, thread = self._loop, self._stop, self._thread
        stop_thread(loop, stop, thread, f"mDNS publishing for {self.node!r}")

    # -- mDNS thread -------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:
            log.warning("mDNS publishing for %r stopped on an error", self.node, exc_info=True)

    async def _main(self) -> None:
        azc = await self._open()
        if azc is None:
            return
        stop = asyncio.Event()
        self._publisher = ServicePublisher(azc)
        with self._lock:
            self._loop, self._stop = asyncio.get_running_loop(), stop
            pending, self._pending = self._pending, {}
            if self._closed:
                stop.set()
        for service_id, instance in pending.items():
            self._on_loop(service_id, instance)
        try:
            await stop.wait()
        finally:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await self._publisher.close()
                    await azc.async_close()
            except TimeoutError:
                log.warning("mDNS publishing for %r: shutdown took over %.1f s", self.node,
                            CLOSE_TIMEOUT_S)  # fmt: skip

    async def _open(self) -> AsyncZeroconf | None:
        """The interface plan of ``_mdns`` and an AsyncZeroconf on it; None (warned) if
        mDNS cannot work here."""
        opened = await open_zeroconf(self.host, self._interfaces, self._disabled)
        if opened is None:
            return None
        azc, plan = opened
        self._own = plan.advertise
        return azc

    def _disabled(self, why: str) -> None:
        log.warning(
            "mDNS publishing disabled for %r: %s; services stay discoverable in the mesh",
            self.node,
            why,
        )
        with self._lock:
            self._closed = True  # later publishes are dropped, not queued forever
            self._pending.clear()

    def _on_loop(self, service_id: str, instance: Instance | None) -> None:
        assert self._publisher is not None
        want = None
        if instance is not None:
            try:
                want = wanted(instance, self.node, self._own)
            except ValueError:
                self._warn_host(instance)
        self._publisher.want(service_id, want)

    def _warn_host(self, instance: Instance) -> None:
        if instance.id not in self._warned:
            self._warned.add(instance.id)
            log.warning(
                "mDNS: service %r has the host name %r, not an IP address: not published "
                "(DNS-SD needs address records)",
                instance.id,
                instance.address,
            )
