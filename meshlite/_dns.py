"""The DNS interface of a mesh: UDP and TCP on one address, answered from local memory.

Theory of operation
-------------------
``Mesh(dns="127.0.0.1:8600")`` binds a UDP socket and a TCP listener on the same port
(Consul's ``ports.dns``; port 0 picks one for both) and serves them as tasks of the mesh,
so they stop with it.  Every query is answered by the sans-I/O
:class:`~meshlite._core.dns_answer.Answerer` from the peer's directory (the ready tuples
``discover()`` reads) and the SWIM core's member table: no I/O, no await, no lock — the
answer is computed on the event loop in a few hundred microseconds.

* UDP: one datagram in, at most one out; the answerer fits the reply to 512 bytes (or the
  client's EDNS0 size) and sets TC when it had to cut answers, and the client retries...
* ...over TCP (RFC 7766): each message carries a two-byte length prefix; a connection may
  carry many queries, one after another, and is closed after ``TCP_IDLE_S`` without one.
  At most ``MAX_TCP_CONNECTIONS`` are served at once; more wait in the backlog.

Malformed packets are dropped and counted (``mesh.stats["dns_drop_malformed"]``, with
the other ``dns_*`` counters in the driver's stats), never raised; socket errors drop one
packet or one connection, never the server.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping

import anyio
import anyio.abc
import attrs
from anyio.streams.buffered import BufferedByteReceiveStream

from meshlite._addr import format_hostport, is_ip, parse_hostport
from meshlite._core.directory import Directory
from meshlite._core.dns_answer import Answerer, check_ttl_s
from meshlite._core.dns_names import make_domain
from meshlite._core.swim import SwimCore
from meshlite._transport import bind_udp_tcp
from meshlite.errors import ConfigError

__all__ = ["DNS_PORT", "DnsConfig", "DnsServer", "LiveNodes"]

log = logging.getLogger("meshlite.dns")

DNS_PORT = 8600  # Consul's ports.dns, so resolver configs written for Consul fit
# RFC 7766 6.2.3 asks servers to let idle connections go after "a few seconds"; clients
# that retry after TC send their query at once, so this only bounds abandoned ones.
TCP_IDLE_S = 10.0
# Concurrent TCP connections served; TCP is the fallback for large answers, so a handful
# of clients at once is normal and hundreds means something is wrong.
MAX_TCP_CONNECTIONS = 128
MAX_DATAGRAM_BYTES = 65_535
_LENGTH_PREFIX_BYTES = 2  # RFC 1035 4.2.2
_LIVE = frozenset({"alive", "suspect"})  # as discovery: suspect is not yet down


@attrs.frozen
class DnsConfig:
    """Where and how to serve DNS; :meth:`create` checks what a user passes."""

    host: str
    port: int
    domain: str = "meshlite"
    ttl_s: int = 0

    @classmethod
    def create(cls, bind: str, domain: str, ttl_s: int) -> DnsConfig:
        host, port = parse_hostport(bind, default_port=DNS_PORT, what="dns", allow_port_zero=True)
        if not is_ip(host):
            raise ConfigError(f"dns {bind!r}: the host must be an IP address to bind to")
        make_domain(domain)  # each raises ConfigError with the reason
        return cls(host, port, domain, check_ttl_s(ttl_s))


class LiveNodes(Mapping[str, str]):
    """Live members (alive or suspect) as ``name -> address``, read from the core on demand."""

    def __init__(self, core: Callable[[], SwimCore | None]) -> None:
        self._core = core

    def __getitem__(self, name: str) -> str:
        core = self._core()
        member = None if core is None else core.member(name)
        if member is None or member.status not in _LIVE:
            raise KeyError(name)
        return member.address

    def __iter__(self) -> Iterator[str]:
        core = self._core()
        members = [] if core is None else core.members()
        return iter([m.name for m in members if m.status in _LIVE])

    def __len__(self) -> int:
        return sum(1 for _ in self)


class DnsServer:
    """A bound UDP socket and TCP listener answering with one :class:`Answerer`."""

    def __init__(
        self,
        udp: anyio.abc.UDPSocket,
        tcp: anyio.abc.Listener[anyio.abc.SocketStream],
        answerer: Answerer,
        directory: Callable[[], Directory | None],
        nodes: Mapping[str, str],
    ) -> None:
        self._udp = udp
        self._tcp = tcp
        self.answerer = answerer
        self._directory = directory
        self._nodes = nodes
        self._connections = anyio.CapacityLimiter(MAX_TCP_CONNECTIONS)
        self.address = format_hostport(
            str(udp.extra(anyio.abc.SocketAttribute.local_address)[0]),
            int(udp.extra(anyio.abc.SocketAttribute.local_port)),
        )

    @classmethod
    async def bind(
        cls,
        config: DnsConfig,
        *,
        node: str,
        directory: Callable[[], Directory | None],
        nodes: Mapping[str, str],
        stats: Counter[str] | None = None,
    ) -> DnsServer:
        """Bind both sockets: an ``OSError`` naming ``host:port (DNS)`` as its ``filename``
        if the address is taken or not this host's (the agent prints that name)."""
        answerer = Answerer(
            config.domain, node=node, ttl_s=config.ttl_s, rng=random.Random(), stats=stats
        )
        try:
            udp, tcp = await bind_udp_tcp(config.host, config.port)
        except OSError as exc:
            where = f"{format_hostport(config.host, config.port)} (DNS)"
            raise OSError(exc.errno, exc.strerror, where) from None
        return cls(udp, tcp, answerer, directory, nodes)

    @property
    def stats(self) -> Counter[str]:
        return self.answerer.stats

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Answer until cancelled or closed."""
        domain = self.answerer.domain.to_text()
        fields = {"event": "dns", "address": self.address, "domain": domain}
        log.info(
            "DNS answering for %s on %s (UDP and TCP)",
            domain,
            self.address,
            extra={"fields": fields},
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._serve_udp)
            tg.start_soon(self._serve_tcp)
            task_status.started()

    async def aclose(self) -> None:
        await self._udp.aclose()
        await self._tcp.aclose()

    def answer(self, query: bytes, *, tcp: bool) -> bytes | None:
        return self.answerer.respond(
            query, self._directory(), self._nodes, tcp=tcp, serial=int(time.time())
        )

    # ------------------------------------------------------------------ UDP

    async def _serve_udp(self) -> None:
        while True:
            try:
                query, (host, port) = await self._udp.receive()
            except OSError as exc:  # e.g. ICMP port unreachable after a reply, on Linux
                log.debug("dns: udp receive error: %s", exc)
                continue
            except (anyio.ClosedResourceError, anyio.EndOfStream, anyio.BrokenResourceError):
                return
            reply = self.answer(query, tcp=False)
            if reply is None:
                continue
            try:
                await self._udp.sendto(reply, host, port)
            except OSError as exc:
                self.stats["dns_send_errors"] += 1
                log.debug("dns: udp send to %s:%s failed: %s", host, port, exc)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return

    # ------------------------------------------------------------------ TCP

    async def _serve_tcp(self) -> None:
        try:
            await self._tcp.serve(self._serve_connection)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return

    async def _serve_connection(self, stream: anyio.abc.SocketStream) -> None:
        async with stream, self._connections:
            reader = BufferedByteReceiveStream(stream)
            try:
                while await self._one_tcp_query(reader, stream):
                    pass
            except (OSError, TimeoutError, anyio.EndOfStream, anyio.IncompleteRead) as exc:
                log.debug("dns: tcp connection closed: %s", exc)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass

    async def _one_tcp_query(
        self, reader: BufferedByteReceiveStream, stream: anyio.abc.SocketStream
    ) -> bool:
        """Read one length-prefixed query and write its reply; ``False`` to hang up."""
        with anyio.fail_after(TCP_IDLE_S):
            prefix = await reader.receive_exactly(_LENGTH_PREFIX_BYTES)
            size = int.from_bytes(prefix, "big")
            if size == 0:
                return False
            query = await reader.receive_exactly(size)
        reply = self.answer(query, tcp=True)
        if reply is None:  # unparsable: the stream's framing cannot be trusted any more
            return False
        with anyio.fail_after(TCP_IDLE_S):
            await stream.send(len(reply).to_bytes(_LENGTH_PREFIX_BYTES, "big") + reply)
        return True
