"""The sans-I/O DNS answerer: Consul's names and rcodes, truncation, and hostile input.

Replies are read back with dnspython's parser; a real Directory (fed catalog records and
member events, as on a running peer) is what the answers come from.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlite._core.catalog import Record, encode_record
from meshlite._core.directory import Directory
from meshlite._core.dns_answer import CLASSIC_UDP_BYTES, Answerer
from meshlite._core.dns_names import make_domain
from meshlite._core.events import Member, MemberEvent, MemberEventKind
from meshlite.errors import ConfigError

SELF = "observer"
Rcode = dns.rcode.Rcode


class World:
    """A directory as one peer sees it, plus the live nodes' addresses."""

    def __init__(self) -> None:
        self.directory = Directory(SELF, 1)
        self.nodes: dict[str, str] = {SELF: "127.0.0.1"}
        self._version = 10

    def node(self, name: str, address: str, *, up: bool = True) -> World:
        member = Member(name, address, 7946, "alive", 1)
        self.directory.on_member(MemberEvent(MemberEventKind.JOIN, member))
        if up:
            self.nodes[name] = address
        else:
            dead = Member(name, address, 7946, "dead", 1)
            self.directory.on_member(MemberEvent(MemberEventKind.DEAD, dead))
        return self

    def service(
        self, node: str, sid: str, name: str, address: str, port: int, **kw: object
    ) -> World:
        self._version += 1
        record = Record(node, sid, self._version, name, address, port, **kw)  # type: ignore[arg-type]
        self.directory.on_broadcast(encode_record(record), 0.0)
        return self


def standard() -> World:
    return (
        World()
        .node("a", "10.0.0.1")
        .node("b", "10.0.0.2")
        .node("gone", "10.0.0.9", up=False)
        .node("six", "fd00::6")
        .service("a", "web-1", "web", "10.0.0.1", 8080, tags=("v1", "primary"))
        .service("b", "web-2", "web", "10.0.1.2", 8081, tags=("v2",))  # not b's own address
        .service("six", "web-3", "web", "fd00::6", 8082)
        .service("gone", "web-4", "web", "10.0.0.9", 8083)  # on a dead node
        .service("a", "db-1", "db", "10.0.0.1", 5432, status="critical")
        .service("b", "cache-1", "cache", "10.0.0.2", 6379, status="warning")
        .service("b", "ext-1", "ext", "api.example.org", 443)
    )


def answerer(**kw: object) -> Answerer:
    return Answerer(node=SELF, rng=random.Random(7), **kw)  # type: ignore[arg-type]


def ask(
    world: World,
    name: str,
    rdtype: str = "A",
    *,
    server: Answerer | None = None,
    tcp: bool = False,
    **query: object,
) -> dns.message.Message:
    server = server or answerer()
    q = dns.message.make_query(name, rdtype, **query)  # type: ignore[arg-type]
    wire = server.respond(q.to_wire(), world.directory, world.nodes, tcp=tcp, serial=42)
    assert wire is not None
    reply = dns.message.from_wire(wire)
    assert reply.id == q.id and reply.flags & dns.flags.QR
    return reply


def texts(rrsets: Iterable[dns.rrset.RRset], rdtype: str | None = None) -> set[str]:
    return {
        rd.to_text()
        for rrset in rrsets
        if rdtype is None or rrset.rdtype == dns.rdatatype.from_text(rdtype)
        for rd in rrset
    }


def srv_pairs(reply: dns.message.Message) -> set[tuple[int, str]]:
    """(port, address the target resolves to in the additional section) per SRV record."""
    glue = {rrset.name: texts([rrset]) for rrset in reply.additional}
    return {
        (rd.port, address)
        for rrset in reply.answer
        for rd in rrset
        for address in glue.get(rd.target, {rd.target.to_text()})
    }


# ------------------------------------------------------------------------------ name forms


def test_service_a_records_are_the_passing_instances_on_live_nodes() -> None:
    reply = ask(standard(), "web.service.meshlite")
    assert reply.rcode() == Rcode.NOERROR and reply.flags & dns.flags.AA
    assert not reply.flags & dns.flags.RA  # no recursion, ever
    assert texts(reply.answer) == {"10.0.0.1", "10.0.1.2"}
    assert texts(ask(standard(), "web.service.meshlite", "AAAA").answer) == {"fd00::6"}
    assert texts(ask(standard(), "web.service.meshlite", "ANY").answer) == {
        "10.0.0.1",
        "10.0.1.2",
        "fd00::6",
    }


def test_srv_targets_the_node_or_the_encoded_address_with_glue() -> None:
    reply = ask(standard(), "web.service.meshlite", "SRV")
    targets = {rd.port: rd.target.to_text() for rrset in reply.answer for rd in rrset}
    assert targets == {
        8080: "a.node.meshlite.",  # the instance runs on its node's address
        8081: "0a000102.addr.meshlite.",  # it does not: Consul's HEX.addr form
        8082: "six.node.meshlite.",
    }
    assert srv_pairs(reply) == {(8080, "10.0.0.1"), (8081, "10.0.1.2"), (8082, "fd00::6")}
    assert {rd.priority for rs in reply.answer for rd in rs} == {1}
    assert {rd.weight for rs in reply.answer for rd in rs} == {1}


@pytest.mark.parametrize(
    ("name", "rdtype", "ports"),
    [
        ("v1.web.service.meshlite", "SRV", {8080}),
        ("V2.Web.Service.MeshLite", "SRV", {8081}),
        ("primary.web.service.meshlite", "SRV", {8080}),
        ("_web._tcp.service.meshlite", "SRV", {8080, 8081, 8082}),  # RFC 2782, no tag filter
        ("_web._v2.service.meshlite", "SRV", {8081}),  # RFC 2782 with a tag
        ("_web._tcp.meshlite", "SRV", {8080, 8081, 8082}),  # SRV: ".service" may be left out
    ],
)
def test_tags_and_rfc2782_names(name: str, rdtype: str, ports: set[int]) -> None:
    reply = ask(standard(), name, rdtype)
    assert reply.rcode() == Rcode.NOERROR
    assert {rd.port for rrset in reply.answer for rd in rrset} == ports


def test_nodes_answer_while_alive() -> None:
    assert texts(ask(standard(), "a.node.meshlite").answer) == {"10.0.0.1"}
    assert texts(ask(standard(), "SIX.NODE.meshlite", "AAAA").answer) == {"fd00::6"}
    assert ask(standard(), "gone.node.meshlite").rcode() == Rcode.NXDOMAIN
    world = World().node("d.e", "10.0.0.5")  # a dotted node name is joined back
    assert texts(ask(world, "d.e.node.meshlite").answer) == {"10.0.0.5"}


def test_addr_names_decode_the_address() -> None:
    assert texts(ask(standard(), "0a000102.addr.meshlite").answer) == {"10.0.1.2"}
    six = "fd000000000000000000000000000006.addr.meshlite"
    assert texts(ask(standard(), six, "AAAA").answer) == {"fd00::6"}
    assert ask(standard(), "zz000102.addr.meshlite").rcode() == Rcode.NXDOMAIN


def test_host_name_addresses_are_cnames_or_srv_targets() -> None:
    reply = ask(standard(), "ext.service.meshlite")
    assert [rs.rdtype for rs in reply.answer] == [dns.rdatatype.CNAME]
    assert texts(reply.answer) == {"api.example.org."}
    srv = ask(standard(), "ext.service.meshlite", "SRV")
    assert srv_pairs(srv) == {(443, "api.example.org.")} and not srv.additional


def test_the_zone_apex_has_soa_and_ns() -> None:
    soa = ask(standard(), "meshlite", "SOA")
    assert texts(soa.answer) == {"observer.node.meshlite. hostmaster.meshlite. 42 3600 600 86400 0"}
    ns = ask(standard(), "meshlite", "NS")
    assert texts(ns.answer) == {"observer.node.meshlite."}
    assert texts(ns.additional) == {"127.0.0.1"}


def test_reverse_lookups_name_nodes_then_services() -> None:
    node = ask(standard(), dns.reversename.from_address("10.0.0.1").to_text(), "PTR")
    assert texts(node.answer) == {"a.node.meshlite."}
    service = ask(standard(), dns.reversename.from_address("10.0.1.2").to_text(), "PTR")
    assert texts(service.answer) == {"web.service.meshlite."}
    unknown = ask(standard(), dns.reversename.from_address("192.0.2.1").to_text(), "PTR")
    assert unknown.rcode() == Rcode.REFUSED


# ------------------------------------------------------------------------------ negatives


@pytest.mark.parametrize(
    "name",
    [
        "nope.service.meshlite",  # unknown
        "db.service.meshlite",  # critical only
        "cache.service.meshlite",  # warning only: DNS serves passing instances
        "v9.web.service.meshlite",  # no instance with that tag
        "web.service.dc1.meshlite",  # a datacenter: meshlite has none
        "web.connect.meshlite",  # Consul kinds meshlite does not serve
        "nobody.node.meshlite",
        "node.meshlite",
        "something.meshlite",
    ],
)
def test_unknown_names_are_nxdomain_with_the_soa(name: str) -> None:
    reply = ask(standard(), name)
    assert reply.rcode() == Rcode.NXDOMAIN and not reply.answer
    [soa] = reply.authority
    assert soa.rdtype == dns.rdatatype.SOA and soa.name == dns.name.from_text("meshlite")


@pytest.mark.parametrize(
    ("name", "rdtype"),
    [
        ("v1.web.service.meshlite", "AAAA"),  # an IPv4-only instance
        ("web.service.meshlite", "TXT"),
        ("a.node.meshlite", "MX"),
        ("a.node.meshlite", "AAAA"),
        ("meshlite", "A"),
    ],
)
def test_existing_names_without_such_records_are_nodata(name: str, rdtype: str) -> None:
    reply = ask(standard(), name, rdtype)
    assert reply.rcode() == Rcode.NOERROR and not reply.answer
    assert [rs.rdtype for rs in reply.authority] == [dns.rdatatype.SOA]


@pytest.mark.parametrize("name", ["example.com", "meshlite.example.com", "local", "."])
def test_names_outside_the_domain_are_refused(name: str) -> None:
    reply = ask(standard(), name)
    assert reply.rcode() == Rcode.REFUSED
    assert not reply.answer and not reply.authority and not reply.flags & dns.flags.AA


def test_protocol_errors() -> None:
    world, server = standard(), answerer()
    chaos = ask(world, "version.bind", "TXT", rdclass=dns.rdataclass.CH)
    assert chaos.rcode() == Rcode.REFUSED
    assert ask(world, "meshlite", "AXFR").rcode() == Rcode.NOTIMP
    assert ask(world, "web.service.meshlite", use_edns=1).rcode() == Rcode.BADVERS
    notify = dns.message.make_query("meshlite", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    wire = server.respond(notify.to_wire(), world.directory, world.nodes)
    assert wire is not None and dns.message.from_wire(wire).rcode() == Rcode.NOTIMP
    empty = dns.message.Message()
    wire = server.respond(empty.to_wire(), world.directory, world.nodes)
    assert wire is not None and dns.message.from_wire(wire).rcode() == Rcode.FORMERR


def test_garbage_and_responses_are_dropped_and_counted() -> None:
    world, stats = standard(), Counter[str]()
    server = Answerer(node=SELF, rng=random.Random(1), stats=stats)
    for junk in (b"", b"\x00", b"\xff" * 11, b"hello world, not dns", b"\x00" * 12 + b"\xc0"):
        assert server.respond(junk, world.directory, world.nodes) is None
    query = dns.message.make_query("web.service.meshlite", "A")
    response = dns.message.make_response(query)
    assert server.respond(response.to_wire(), world.directory, world.nodes) is None
    assert stats["dns_drop_malformed"] == 5 and stats["dns_drop_response"] == 1
    assert stats["dns_queries"] == 0


def test_no_directory_yet_means_no_services() -> None:
    world = standard()
    server = answerer()
    wire = dns.message.make_query("web.service.meshlite", "A").to_wire()
    reply = server.respond(wire, None, world.nodes)
    assert reply is not None and dns.message.from_wire(reply).rcode() == Rcode.NXDOMAIN


# ------------------------------------------------------------------------------ size, order, TTL


def big_world(n: int) -> World:
    world = World().node("a", "10.0.0.1")  # (records about ourselves would be refuted)
    for i in range(n):
        world.service("a", f"big-{i}", "big", f"10.1.{i // 250}.{i % 250}", 9000 + i)
    return world


def test_udp_answers_over_512_bytes_are_truncated_and_tcp_carries_them() -> None:
    world = big_world(60)  # 60 A records: ~1 KB
    udp = ask(world, "big.service.meshlite")
    assert udp.flags & dns.flags.TC and not udp.answer
    assert len(udp.to_wire()) <= CLASSIC_UDP_BYTES
    tcp = ask(world, "big.service.meshlite", tcp=True)
    assert not tcp.flags & dns.flags.TC and len(texts(tcp.answer)) == 60
    edns = ask(world, "big.service.meshlite", use_edns=0, payload=4096)
    assert not edns.flags & dns.flags.TC and len(texts(edns.answer)) == 60
    small = ask(world, "big.service.meshlite", use_edns=0, payload=600)
    assert small.flags & dns.flags.TC


def test_trimming_only_the_additional_section_is_not_truncation() -> None:
    # The smallest SRV answer that fits 512 bytes only without its glue (the sizes depend
    # on dnspython's compression choices, so they are measured, not assumed).
    for n in range(1, 40):
        world = big_world(n)
        full = ask(world, "big.service.meshlite", "SRV", tcp=True)
        with_glue = len(full.to_wire())
        full.additional = []
        if len(full.to_wire()) <= CLASSIC_UDP_BYTES < with_glue:
            break
    reply = ask(world, "big.service.meshlite", "SRV")
    assert not reply.flags & dns.flags.TC
    assert len(texts(reply.answer)) == n and len(texts(reply.additional)) < n


def test_answers_are_shuffled_per_query_with_the_injected_generator() -> None:
    world = big_world(8)

    def orders(seed: int) -> list[list[str]]:
        server = Answerer(node=SELF, rng=random.Random(seed))
        return [
            [
                rd.to_text()
                for rs in ask(world, "big.service.meshlite", server=server).answer
                for rd in rs
            ]
            for _ in range(10)
        ]

    first = orders(3)
    assert len({tuple(o) for o in first}) > 1  # the order changes from query to query
    assert first == orders(3)  # and replays from the seed
    assert all(sorted(o) == sorted(first[0]) for o in first)


def test_ttl_and_domain_are_configurable() -> None:
    world = standard()
    server = answerer(domain="Consul.", ttl_s=30)
    reply = ask(world, "web.service.consul", server=server)
    assert {rs.ttl for rs in reply.answer} == {30}
    negative = ask(world, "nope.service.consul", server=server)
    [soa] = negative.authority
    assert soa.ttl == 30 and next(iter(soa)).minimum == 30
    assert ask(world, "web.service.meshlite", server=server).rcode() == Rcode.REFUSED


@pytest.mark.parametrize(
    "domain", ["", ".", "a..b", "in-addr.arpa", "x" * 64, ("a" * 60 + ".") * 4]
)
def test_unusable_domains_are_config_errors(domain: str) -> None:
    with pytest.raises(ConfigError, match="dns_domain"):
        make_domain(domain)


@pytest.mark.parametrize("ttl", [-1, 1.5, True, 2**31, "0"])
def test_unusable_ttls_are_config_errors(ttl: object) -> None:
    with pytest.raises(ConfigError, match="dns_ttl_s"):
        answerer(ttl_s=ttl)


# ------------------------------------------------------------------------------ properties

NODE_NAMES = ["n1", "N2", "node-3"]
SERVICE_NAMES = ["web", "Web", "db", "api"]
TAGS = ["v1", "V2", "primary"]


@st.composite
def worlds(draw: st.DrawFn) -> tuple[World, list[Record]]:
    world = World()
    addresses = {}
    for i, name in enumerate(NODE_NAMES):
        addresses[name] = draw(st.sampled_from([f"10.0.0.{i + 1}", f"fd00::{i + 1}"]))
        if draw(st.sampled_from([True, True, False])):  # joined; then mostly alive
            world.node(name, addresses[name], up=draw(st.sampled_from([True, True, False])))
    records = []
    for i in range(draw(st.integers(0, 10))):
        node = draw(st.sampled_from(NODE_NAMES))
        address = draw(st.sampled_from([addresses[node], "10.9.9.9", "fd00::99", "h.example."]))
        record = Record(
            node,
            f"s{i}",
            100 + i,
            draw(st.sampled_from(SERVICE_NAMES)),
            address,
            draw(st.integers(1, 65535)),
            tuple(draw(st.lists(st.sampled_from(TAGS), max_size=2, unique=True))),
            {},
            draw(st.sampled_from(["passing", "passing", "warning", "critical"])),
        )
        world.directory.on_broadcast(encode_record(record), 0.0)
        records.append(record)
    return world, records


def expected(world: World, records: list[Record], name: str, tag: str | None) -> list[Record]:
    return [
        r
        for r in records
        if r.name.lower() == name.lower()
        and r.status == "passing"
        and r.node in world.nodes
        and (tag is None or tag.lower() in {t.lower() for t in r.tags})
    ]


def recase(text: str, flips: list[bool]) -> str:
    padded = flips + [False] * len(text)
    return "".join(c.swapcase() if flip else c for c, flip in zip(text, padded, strict=False))


@settings(max_examples=200, deadline=None)
@given(worlds(), st.data(), st.lists(st.booleans(), max_size=40))
def test_only_passing_instances_on_live_nodes_appear_in_any_spelling(
    world_records: tuple[World, list[Record]], data: st.DataObject, flips: list[bool]
) -> None:
    world, records = world_records
    # Mostly names and tags that some record has, so the interesting cases are common.
    name = data.draw(
        st.sampled_from([r.name for r in records] or SERVICE_NAMES) | st.sampled_from(SERVICE_NAMES)
    )
    tags = [t for r in records if r.name == name for t in r.tags]
    tag = data.draw(st.none() | st.sampled_from(tags or TAGS) | st.sampled_from(TAGS))
    want = expected(world, records, name, tag)
    qname = recase(f"{tag}.{name}.service.meshlite" if tag else f"{name}.service.meshlite", flips)
    a, aaaa, srv = (ask(world, qname, t, tcp=True) for t in ("A", "AAAA", "SRV"))
    if not want:
        assert {a.rcode(), aaaa.rcode(), srv.rcode()} == {Rcode.NXDOMAIN}
        return
    assert {a.rcode(), aaaa.rcode(), srv.rcode()} == {Rcode.NOERROR}
    v4 = {r.address for r in want if "." in r.address and not r.address.endswith(".")}
    v6 = {r.address for r in want if ":" in r.address}
    hosts = {r.address for r in want if r.address.endswith(".")}
    assert texts(a.answer, "A") == v4 and texts(aaaa.answer, "AAAA") == v6
    if hosts and not v4:
        assert texts(a.answer, "CNAME") <= hosts
    assert srv_pairs(srv) == {(r.port, r.address) for r in want}


@settings(max_examples=150, deadline=None)
@given(worlds(), st.sampled_from(NODE_NAMES), st.lists(st.booleans(), max_size=20))
def test_nodes_match_in_any_spelling_while_alive(
    world_records: tuple[World, list[Record]], node: str, flips: list[bool]
) -> None:
    world, _ = world_records
    reply = ask(world, recase(f"{node}.node.meshlite", flips), "ANY")
    if node in world.nodes:
        assert texts(reply.answer) == {world.nodes[node]}
    else:
        assert reply.rcode() == Rcode.NXDOMAIN


labels = st.one_of(
    st.sampled_from(["service", "node", "addr", "_web", "_tcp", "web", "v1", "0a000001", "n1"]),
    st.binary(min_size=1, max_size=12),
)
questions = st.builds(
    lambda parts, suffix: dns.name.Name([*parts, *dns.name.from_text(suffix).labels]),
    st.lists(labels, max_size=5),
    st.sampled_from(["meshlite.", "MeshLite.", "example.com.", "in-addr.arpa.", "."]),
)


@settings(max_examples=300, deadline=None)
@given(
    worlds(),
    questions,
    st.one_of(
        st.sampled_from(["A", "AAAA", "SRV", "ANY", "TXT", "SOA", "NS", "PTR", "CNAME"]),
        st.integers(1, 65535),
    ),
    st.sampled_from([dns.rdataclass.IN, dns.rdataclass.ANY, dns.rdataclass.CH]),
    st.sampled_from([-1, 0, 1]),
    st.integers(0, 65535),
    st.booleans(),
)
def test_every_question_gets_a_well_formed_reply(
    world_records: tuple[World, list[Record]],
    qname: dns.name.Name,
    rdtype: str | int,
    rdclass: dns.rdataclass.RdataClass,
    edns: int,
    payload: int,
    tcp: bool,
) -> None:
    world, _ = world_records
    qtype = dns.rdatatype.RdataType.make(rdtype)
    query = dns.message.make_query(qname, qtype, rdclass, use_edns=edns, payload=payload)
    server = answerer()
    wire = server.respond(query.to_wire(), world.directory, world.nodes, tcp=tcp, serial=1)
    assert wire is not None
    limit = 65535 if tcp else CLASSIC_UDP_BYTES if edns < 0 else max(CLASSIC_UDP_BYTES, payload)
    assert len(wire) <= limit
    reply = dns.message.from_wire(wire)
    assert reply.id == query.id and reply.flags & dns.flags.QR
    assert reply.question == query.question and not reply.flags & dns.flags.RA
    rcode = reply.rcode()
    assert rcode in {Rcode.NOERROR, Rcode.NXDOMAIN, Rcode.REFUSED, Rcode.NOTIMP, Rcode.BADVERS}
    if rcode == Rcode.NXDOMAIN:
        assert not reply.answer and [rs.rdtype for rs in reply.authority] == [dns.rdatatype.SOA]
    if rcode in (Rcode.REFUSED, Rcode.NOTIMP, Rcode.BADVERS):
        assert not reply.answer and not reply.flags & dns.flags.AA
    if edns == 1:
        assert rcode == Rcode.BADVERS
    for rrset in reply.answer:
        assert rrset.name == qname or rrset.rdtype in (dns.rdatatype.SOA, dns.rdatatype.NS)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=600), st.builds(bytes, st.lists(st.integers(0, 255)))))
def test_any_bytes_give_a_reply_or_a_counted_drop(data: bytes) -> None:
    world, stats = standard(), Counter[str]()
    server = Answerer(node=SELF, rng=random.Random(0), stats=stats)
    wire = server.respond(data, world.directory, world.nodes)
    assert wire is None or dns.message.from_wire(wire).flags & dns.flags.QR
    dropped = stats["dns_drop_malformed"] + stats["dns_drop_response"]
    assert (wire is None) == (dropped == 1)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_queries_never_raise(data: st.DataObject) -> None:
    world = standard()
    wire = bytearray(dns.message.make_query("web.service.meshlite", "SRV", use_edns=0).to_wire())
    for _ in range(data.draw(st.integers(1, 4))):
        wire[data.draw(st.integers(0, len(wire) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(wire)))
    answerer().respond(bytes(wire[:cut]), world.directory, world.nodes)


def test_one_answerer_follows_services_that_appear_and_disappear() -> None:
    """The answerer caches service names by folded spelling; it must notice a new name,
    a new spelling of one, and a name that lost its last instance."""
    world, server = standard(), answerer()
    assert ask(world, "api.service.meshlite", server=server).rcode() == Rcode.NXDOMAIN
    world.service("a", "api-1", "API", "10.0.0.1", 9000)
    assert texts(ask(world, "api.service.meshlite", server=server).answer) == {"10.0.0.1"}
    world.service("b", "api-2", "api", "10.0.0.2", 9000)
    assert texts(ask(world, "Api.service.meshlite", server=server).answer) == {
        "10.0.0.1",
        "10.0.0.2",
    }
    world.directory.on_broadcast(encode_record(Record("a", "api-1", 999)), 0.0)
    world.directory.on_broadcast(encode_record(Record("b", "api-2", 999)), 0.0)
    assert ask(world, "api.service.meshlite", server=server).rcode() == Rcode.NXDOMAIN
