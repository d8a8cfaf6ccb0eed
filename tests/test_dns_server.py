"""DNS on real sockets: dnspython's resolver and query functions against in-process meshes.

Every name form, NXDOMAIN, REFUSED, truncation with the TCP retry, and hostile packets,
on both anyio backends (dnspython picks its asyncio or trio backend to match).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import dns.asyncbackend
import dns.asyncquery
import dns.asyncresolver
import dns.flags
import dns.message
import dns.rcode
import dns.resolver
import dns.reversename
import pytest
from meshes import eventually

from meshlite import ConfigError, Mesh, TCPCheck

pytestmark = pytest.mark.anyio
TIMEOUT_S = 5.0


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def pair(**dns_options: object) -> AsyncIterator[tuple[Mesh, Mesh]]:
    """Peer ``a`` serves DNS; peer ``b`` joins it and registers services there."""
    async with Mesh(
        "a",
        "127.0.0.1:0",
        profile="local",
        dns="127.0.0.1:0",
        **dns_options,  # type: ignore[arg-type]
    ) as a:
        async with Mesh("b", "127.0.0.1:0", profile="local", join=[a.address]) as b:
            await eventually(lambda: len(a.members()) == 2)
            yield a, b


def backend() -> Any:
    """dnspython's backend for the running loop (its default is sniffed once, then cached)."""
    return dns.asyncbackend.get_backend(dns.asyncbackend.sniff())


class Resolver:
    """dnspython's stub resolver, asking only the mesh, on the running backend."""

    def __init__(self, mesh: Mesh, *, edns: int = 0) -> None:
        assert mesh.dns_address is not None
        host, port = mesh.dns_address.rsplit(":", 1)
        self.stub = dns.asyncresolver.Resolver(configure=False)
        self.stub.nameservers = [host]
        self.stub.port = int(port)
        self.stub.lifetime = TIMEOUT_S
        self.stub.use_edns(edns)

    async def resolve(self, qname: str, rdtype: str = "A") -> dns.resolver.Answer:
        return await self.stub.resolve(qname, rdtype, search=False, backend=backend())


async def query(mesh: Mesh, name: str, rdtype: str = "A") -> dns.message.Message:
    assert mesh.dns_address is not None
    host, port = mesh.dns_address.rsplit(":", 1)
    q = dns.message.make_query(name, rdtype)
    return await dns.asyncquery.udp(q, host, timeout=TIMEOUT_S, port=int(port), backend=backend())


async def answers(resolver: Resolver, name: str, rdtype: str) -> set[str]:
    return {rd.to_text() for rd in await resolver.resolve(name, rdtype)}


async def test_every_name_form(anyio_backend: str) -> None:
    async with pair() as (a, b):
        await b.register("web", 8080, id="web-1", tags=["v1"])
        await a.register("web", 8081, id="web-2", tags=["v2"], address="127.0.0.7")
        await b.register("db", 5432, check=TCPCheck("127.0.0.1:1", interval_s=0.2, timeout_s=0.2))
        await eventually(lambda: len(a.discover("web")) == 2)
        r = Resolver(a)
        assert await answers(r, "web.service.meshlite.", "A") == {"127.0.0.1", "127.0.0.7"}
        srv = await r.resolve("web.service.meshlite.", "SRV")
        targets = {rd.port: rd.target.to_text() for rd in srv}
        assert targets == {8080: "b.node.meshlite.", 8081: "7f000007.addr.meshlite."}
        glue = {rrset.name.to_text() for rrset in srv.response.additional}
        assert glue == {"b.node.meshlite.", "7f000007.addr.meshlite."}
        assert {rd.port for rd in await r.resolve("V1.web.service.meshlite.", "SRV")} == {8080}
        assert {rd.port for rd in await r.resolve("_web._tcp.service.meshlite.", "SRV")} == {
            8080,
            8081,
        }
        assert {rd.port for rd in await r.resolve("_web._v2.service.meshlite.", "SRV")} == {8081}
        assert await answers(r, "b.node.meshlite.", "A") == {"127.0.0.1"}
        assert await answers(r, "7f000007.addr.meshlite.", "A") == {"127.0.0.7"}
        ptr = dns.reversename.from_address("127.0.0.7").to_text()
        assert await answers(r, ptr, "PTR") == {"web.service.meshlite."}
        assert await answers(r, "meshlite.", "NS") == {"a.node.meshlite."}
        for missing in ("db.service.meshlite.", "nope.service.meshlite.", "c.node.meshlite."):
            with pytest.raises(dns.resolver.NXDOMAIN):
                await r.resolve(missing, "A")
        with pytest.raises(dns.resolver.NoAnswer):  # NODATA: the name exists, not as AAAA
            await r.resolve("web.service.meshlite.", "AAAA")
        refused = await query(a, "example.com.")
        assert refused.rcode() == dns.rcode.REFUSED and not refused.flags & dns.flags.RA


async def test_truncated_udp_answers_are_retried_over_tcp(anyio_backend: str) -> None:
    async with Mesh("a", "127.0.0.1:0", profile="local", dns="127.0.0.1:0") as a:
        for i in range(60):
            await a.register("big", 9000 + i, id=f"big-{i}", address=f"10.1.0.{i + 1}")
        udp = await query(a, "big.service.meshlite.")  # no EDNS0: 512 bytes at most
        assert udp.flags & dns.flags.TC and not udp.answer
        assert a.dns_address is not None
        host, port = a.dns_address.rsplit(":", 1)
        q = dns.message.make_query("big.service.meshlite.", "A")
        full, used_tcp = await dns.asyncquery.udp_with_fallback(
            q, host, timeout=TIMEOUT_S, port=int(port), backend=backend()
        )
        assert used_tcp and len(full.answer[0]) == 60
        resolver = Resolver(a, edns=-1)  # a plain stub resolver: it retries over TCP itself
        assert len(await answers(resolver, "big.service.meshlite.", "A")) == 60
        assert a.stats["dns_truncated"] >= 2


async def test_a_peer_that_leaves_leaves_dns(anyio_backend: str) -> None:
    async with pair() as (a, b):
        await b.register("api", 7000)
        await eventually(lambda: bool(a.discover("api")))
        r = Resolver(a)
        assert await answers(r, "api.service.meshlite.", "A") == {"127.0.0.1"}
        assert await answers(r, "B.Node.MeshLite.", "A") == {"127.0.0.1"}
        await b.leave()
        await eventually(lambda: not a.discover("api"))
        for name in ("api.service.meshlite.", "b.node.meshlite."):
            with pytest.raises(dns.resolver.NXDOMAIN):
                await r.resolve(name, "A")


async def test_garbage_is_dropped_and_counted_and_service_goes_on(anyio_backend: str) -> None:
    async with Mesh(
        "a", "127.0.0.1:0", profile="local", dns="127.0.0.1:0", dns_domain="consul", dns_ttl_s=5
    ) as a:
        await a.register("web", 80)
        assert a.dns_address is not None
        host, port = a.dns_address.rsplit(":", 1)
        async with await anyio.create_udp_socket(local_host="127.0.0.1") as udp:
            for junk in (b"\x01", b"\xff" * 40, b"not a dns message at all"):
                await udp.sendto(junk, host, int(port))
        async with await anyio.connect_tcp(host, int(port)) as stream:
            await stream.send(b"\x00\x05hello")  # a framed message that is not DNS
            with anyio.fail_after(TIMEOUT_S), pytest.raises(anyio.EndOfStream):
                await stream.receive()  # ... and the server hangs up
        reply = await query(a, "web.service.consul.")
        assert {rd.to_text() for rd in reply.answer[0]} == {"127.0.0.1"}
        assert reply.answer[0].ttl == 5
        await eventually(lambda: a.stats["dns_drop_malformed"] >= 4)
        assert a.stats["dns_drop_malformed"] == 4  # three datagrams and one TCP message


async def test_one_tcp_connection_carries_several_queries(anyio_backend: str) -> None:
    async with Mesh("a", "127.0.0.1:0", profile="local", dns="127.0.0.1:0") as a:
        await a.register("web", 80)
        assert a.dns_address is not None
        host, port = a.dns_address.rsplit(":", 1)
        queries = [
            dns.message.make_query(n, "A") for n in ("web.service.meshlite.", "a.node.meshlite.")
        ]
        wire = b"".join(q.to_wire(prepend_length=True) for q in queries)
        async with await anyio.connect_tcp(host, int(port)) as stream:
            await stream.send(wire)  # pipelined: both before reading (RFC 7766 6.2.1.1)
            received = b""
            with anyio.fail_after(TIMEOUT_S):
                while len(_split(received)) < 2:
                    received += await stream.receive()
        replies = [dns.message.from_wire(m) for m in _split(received)]
        assert [r.id for r in replies] == [q.id for q in queries]
        assert all(r.rcode() == dns.rcode.NOERROR and r.answer for r in replies)


def _split(data: bytes) -> list[bytes]:
    out = []
    while len(data) >= 2 and len(data) >= 2 + int.from_bytes(data[:2], "big"):
        size = int.from_bytes(data[:2], "big")
        out.append(data[2 : 2 + size])
        data = data[2 + size :]
    return out


async def test_bad_settings_and_a_taken_port_fail_at_once(anyio_backend: str) -> None:
    with pytest.raises(ConfigError, match="dns"):
        Mesh("a", "127.0.0.1:0", dns="not an address!")
    with pytest.raises(ConfigError, match="dns"):
        Mesh("a", "127.0.0.1:0", dns="localhost:53")
    with pytest.raises(ConfigError, match="dns_domain"):
        Mesh("a", "127.0.0.1:0", dns="127.0.0.1:0", dns_domain="a..b")
    with pytest.raises(ConfigError, match="dns_ttl_s"):
        Mesh("a", "127.0.0.1:0", dns="127.0.0.1:0", dns_ttl_s=-1)
    async with Mesh("a", "127.0.0.1:0", profile="local", dns="127.0.0.1:0") as a:
        assert a.dns_address is not None
        with pytest.raises(OSError):
            async with Mesh("b", "127.0.0.1:0", profile="local", dns=a.dns_address):
                pass
    assert Mesh("c", "127.0.0.1:0").dns_address is None
