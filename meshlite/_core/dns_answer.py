"""Answers to DNS questions from a peer's own memory: sans-I/O, a query's bytes in, a reply's out.

Theory of operation
-------------------
Consul's DNS interface (``agent/dns.go``) in front of meshlite's directory.  A question's
name becomes a lookup (``dns_names``); the lookup is answered from the same ready
tuples ``discover()`` reads, so DNS sees exactly what discovery sees: *passing* instances
on *live* nodes (dead, left and unknown nodes take their instances out).  The rules are
Consul's:

* ``NAME.service`` answers A/AAAA (one per instance address, the two families split by
  question type; ANY gives both) or SRV (priority 1, weight 1, the instance's port, a
  target ``NODE.node.DOMAIN`` — or ``HEX.addr.DOMAIN`` when the instance's address is
  not its node's — and the target's address in the additional section).  An instance
  whose address is a host name is a CNAME to it (only when no address answers, and no
  recursion to resolve it), or that host as the SRV target.
* No passing instance: NXDOMAIN; a name that exists without records of the asked type
  (AAAA of an IPv4-only service, TXT, ...): NOERROR and no answer ("NODATA", RFC 2308
  2.2).  Both carry the zone's SOA in the authority section, so resolvers may cache the
  negative answer for the SOA's minimum, which is the configured TTL (0 by default, as
  Consul's ``soa.min_ttl`` and ``service_ttl``).
* ``NODE.node`` answers the node's address while the node is alive (or suspect).
* Outside the domain: REFUSED — there is no recursion (RA is never set), except reverse
  names of addresses we know (PTR).  Opcodes other than QUERY and zone transfers:
  NOTIMP; not exactly one question: FORMERR; EDNS version above 0: BADVERS (RFC 6891).
* Records are shuffled per query with the injected ``random.Random`` (Consul shuffles
  so that clients taking the first record spread load), and rendered without
  dnspython's own shuffle, which would draw on the global generator.
* Size: over UDP the reply must fit 512 bytes, or the EDNS0 size the client advertised
  (RFC 1035 4.2.1, RFC 6891 6.2.5).  Rendering stops at the first RRset that does not
  fit; if that is before the additional section the TC bit is set and the client retries
  over TCP (RFC 2181 9: trimming additional data alone is no truncation).

Anything a network can send is handled: bytes that do not parse as a DNS query, and
responses (QR set), are dropped and counted, never raised.  The wire format is
dnspython's (records are built in ``dns_records``); nothing here does I/O
(``meshlite/_dns.py`` owns the sockets).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rrset
from dns.rcode import Rcode
from dns.rdatatype import RdataType

from meshlite._core.directory import Directory
from meshlite._core.dns_names import (
    AddrLookup,
    Apex,
    NodeLookup,
    NoSuchName,
    Outside,
    ReverseLookup,
    ServiceLookup,
    addr_target,
    make_domain,
    node_target,
    parse_name,
)
from meshlite._core.dns_records import (
    Records,
    add_address,
    cname,
    host_name,
    ip,
    ns,
    ptr,
    service_name,
    soa,
    srv,
)
from meshlite._health import Instance
from meshlite.errors import ConfigError

__all__ = ["CLASSIC_UDP_BYTES", "MAX_TTL_S", "Answerer", "check_ttl_s"]

CLASSIC_UDP_BYTES = 512  # RFC 1035 4.2.1: a UDP reply to a query without EDNS0
MAX_UDP_BYTES = 65535 - 68  # Consul's cap: 64 KiB less the largest IP (60) + UDP (8) header
TCP_BYTES = 65535  # RFC 1035 4.2.2: the two-byte length prefix
# What we advertise in our OPT record: DNS Flag Day 2020's 1,232 bytes, which needs no
# fragmentation on IPv6's minimum MTU.  (Queries are small; this only tells the client.)
EDNS_PAYLOAD = 1232
MAX_TTL_S = 2**31 - 1  # RFC 2181 8: TTLs are 31-bit
# Answers that speak for the zone (AA); refusals and protocol errors do not (RFC 1035 4.1.1).
_AUTHORITATIVE = frozenset({Rcode.NOERROR, Rcode.NXDOMAIN})
_ADDRESS_TYPES = frozenset({RdataType.A, RdataType.AAAA, RdataType.ANY})
_IN = dns.rdataclass.IN


def check_ttl_s(ttl_s: int) -> int:
    """``ttl_s`` if it is a usable TTL, else a ``ConfigError`` saying what is."""
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 0 <= ttl_s <= MAX_TTL_S:
        raise ConfigError(
            f"dns_ttl_s must be a whole number of seconds from 0 to {MAX_TTL_S}, got {ttl_s!r}"
        )
    return ttl_s


class Answerer:
    """Maps a query's bytes to a reply's bytes; see the module docstring.

    ``node`` is this peer's name: the zone's NS and the SOA's primary server.  Counters go
    to ``stats`` (``dns_queries``, ``dns_drop_malformed``, ``dns_truncated``, one per
    rcode such as ``dns_nxdomain``).
    """

    def __init__(
        self,
        domain: str = "meshlite",
        *,
        node: str = "",
        ttl_s: int = 0,
        rng: random.Random,
        stats: Counter[str] | None = None,
    ) -> None:
        self.domain = make_domain(domain)
        self.ttl_s = check_ttl_s(ttl_s)
        self.node = node
        self.stats: Counter[str] = Counter() if stats is None else stats
        self._rng = rng
        self._hostmaster = dns.name.Name([b"hostmaster", *self.domain.labels])
        self._folded: dict[bytes, list[str]] = {}
        self._folded_for: tuple[Directory | None, int] = (None, -1)

    def respond(
        self,
        wire: bytes,
        directory: Directory | None,
        nodes: Mapping[str, str],
        *,
        tcp: bool = False,
        serial: int = 0,
    ) -> bytes | None:
        """The reply to ``wire``, or ``None`` to drop it.

        ``nodes`` maps each live member's name to its address; ``serial`` is the SOA
        serial (the caller's wall clock in seconds, as Consul's).
        """
        response = self._parse(wire)
        if response is None:
            return None
        query, reply = response
        rcode = self._answer(query, reply, directory, nodes, serial & 0xFFFFFFFF)
        reply.set_rcode(rcode)
        if rcode in _AUTHORITATIVE:
            reply.flags |= dns.flags.AA
        self.stats[f"dns_{dns.rcode.to_text(rcode).lower()}"] += 1
        limit = TCP_BYTES if tcp else _udp_limit(query)
        try:
            out = reply.to_wire(max_size=limit, prefer_truncation=True, want_shuffle=False)
        except (dns.exception.DNSException, ValueError):  # nothing we built; never raise
            self.stats["dns_drop_render"] += 1
            return None
        if out[2] & (dns.flags.TC >> 8):
            self.stats["dns_truncated"] += 1
        return out

    # ------------------------------------------------------------------ the question

    def _parse(self, wire: bytes) -> tuple[dns.message.Message, dns.message.Message] | None:
        try:
            query = dns.message.from_wire(wire)
            if query.flags & dns.flags.QR:
                self.stats["dns_drop_response"] += 1  # never answer an answer: no loops
                return None
            reply = dns.message.make_response(query, our_payload=EDNS_PAYLOAD)
        except Exception:  # hostile bytes: dnspython raises more than DNSException
            self.stats["dns_drop_malformed"] += 1
            return None
        self.stats["dns_queries"] += 1
        return query, reply

    def _answer(
        self,
        query: dns.message.Message,
        reply: dns.message.Message,
        directory: Directory | None,
        nodes: Mapping[str, str],
        serial: int,
    ) -> Rcode:
        if query.opcode() != dns.opcode.QUERY:
            return Rcode.NOTIMP
        if len(query.question) != 1:
            return Rcode.FORMERR
        if query.edns > 0:
            return Rcode.BADVERS
        question = query.question[0]
        if question.rdclass not in (_IN, dns.rdataclass.ANY):
            return Rcode.REFUSED
        if question.rdtype in (RdataType.AXFR, RdataType.IXFR):
            return Rcode.NOTIMP
        out = Records(self.ttl_s, serial)
        rcode = self._lookup(question.name, RdataType(question.rdtype), directory, nodes, out)
        out.write(reply)
        if rcode == Rcode.NXDOMAIN or (rcode == Rcode.NOERROR and not reply.answer):
            reply.authority.append(self._soa(serial, nodes))
        return rcode

    def _lookup(
        self,
        qname: dns.name.Name,
        qtype: RdataType,
        directory: Directory | None,
        nodes: Mapping[str, str],
        out: Records,
    ) -> Rcode:
        lookup = parse_name(qname, self.domain, srv=qtype == RdataType.SRV)
        match lookup:
            case ServiceLookup():
                return self._service(lookup, qname, qtype, directory, nodes, out)
            case NodeLookup():
                return self._node(lookup, qname, qtype, nodes, out)
            case AddrLookup():
                add_address(lookup.ip, qname, qtype, out)
                return Rcode.NOERROR
            case ReverseLookup():
                return self._reverse(lookup, qname, qtype, directory, nodes, out)
            case Apex():
                self._apex(qtype, nodes, out)
                return Rcode.NOERROR
            case NoSuchName():
                return Rcode.NXDOMAIN
            case Outside():
                return Rcode.REFUSED

    # ------------------------------------------------------------------ services

    def _service(
        self,
        lookup: ServiceLookup,
        qname: dns.name.Name,
        qtype: RdataType,
        directory: Directory | None,
        nodes: Mapping[str, str],
        out: Records,
    ) -> Rcode:
        found = self._instances(lookup, directory)
        if not found:
            return Rcode.NXDOMAIN
        self._rng.shuffle(found)
        if qtype == RdataType.SRV:
            for instance in found:
                self._srv(instance, qname, nodes, out)
        elif qtype in _ADDRESS_TYPES:
            alias = None
            for instance in found:
                if not add_address(instance.address, qname, qtype, out) and alias is None:
                    alias = host_name(instance.address)
            if not out.answer and alias is not None:  # Consul: a CNAME only as a last resort
                out.add(out.answer, qname, cname(alias))
        return Rcode.NOERROR

    def _instances(self, lookup: ServiceLookup, directory: Directory | None) -> list[Instance]:
        if directory is None:
            return []
        tag = lookup.tag
        return [
            instance
            for name in self._names(directory).get(lookup.name, ())
            for instance in directory.discover(name)
            if tag is None or any(t.encode().lower() == tag for t in instance.tags)
        ]

    def _names(self, directory: Directory) -> dict[bytes, list[str]]:
        """Service names by their folded spelling, rebuilt only when the directory's
        catalog-wide ``index`` has moved (every change of any name's results moves it)."""
        if self._folded_for[0] is not directory or self._folded_for[1] != directory.index:
            folded: dict[bytes, list[str]] = {}
            for name in directory.names():
                folded.setdefault(name.encode().lower(), []).append(name)
            self._folded, self._folded_for = folded, (directory, directory.index)
        return self._folded

    def _srv(
        self, instance: Instance, qname: dns.name.Name, nodes: Mapping[str, str], out: Records
    ) -> None:
        if ip(instance.address) is None:  # a host name: the target itself, not resolved here
            target = host_name(instance.address)
        elif nodes.get(instance.node) == instance.address:
            target = node_target(instance.node, self.domain) or addr_target(
                instance.address, self.domain
            )
        else:
            target = addr_target(instance.address, self.domain)
        if target is None:
            return
        out.add(out.answer, qname, srv(instance.port, target))
        add_address(instance.address, target, RdataType.ANY, out, out.additional)

    # ------------------------------------------------------------------ nodes and the zone

    def _node(
        self,
        lookup: NodeLookup,
        qname: dns.name.Name,
        qtype: RdataType,
        nodes: Mapping[str, str],
        out: Records,
    ) -> Rcode:
        found = [a for name, a in nodes.items() if name.encode().lower() == lookup.node]
        if not found:
            return Rcode.NXDOMAIN
        self._rng.shuffle(found)
        for address in found:
            add_address(address, qname, qtype, out)
        return Rcode.NOERROR

    def _reverse(
        self,
        lookup: ReverseLookup,
        qname: dns.name.Name,
        qtype: RdataType,
        directory: Directory | None,
        nodes: Mapping[str, str],
        out: Records,
    ) -> Rcode:
        wanted = ip(lookup.ip)
        targets = [node_target(n, self.domain) for n, a in nodes.items() if ip(a) == wanted]
        if not any(targets) and directory is not None:  # Consul: then service addresses
            targets = [
                service_name(i.service, self.domain)
                for names in self._names(directory).values()
                for name in names
                for i in directory.discover(name)
                if ip(i.address) == wanted
            ]
        if qtype not in (RdataType.PTR, RdataType.ANY) or not any(targets):
            return Rcode.REFUSED  # not an address of ours, so not our zone either
        for target in targets:
            if target is not None:
                out.add(out.answer, qname, ptr(target))
        return Rcode.NOERROR

    def _apex(self, qtype: RdataType, nodes: Mapping[str, str], out: Records) -> None:
        if qtype in (RdataType.SOA, RdataType.ANY):
            out.add(out.answer, self.domain, self._soa_rdata(out.serial, nodes))
        if qtype in (RdataType.NS, RdataType.ANY):
            server = self._server_name(nodes)
            out.add(out.answer, self.domain, ns(server))
            if self.node in nodes:
                add_address(nodes[self.node], server, RdataType.ANY, out, out.additional)

    def _server_name(self, nodes: Mapping[str, str]) -> dns.name.Name:
        """This peer as ``NODE.node.DOMAIN`` (it answers for the zone); Consul's
        ``ns.DOMAIN`` when the name cannot be spelled as labels."""
        target = node_target(self.node, self.domain) if self.node in nodes else None
        return target or dns.name.Name([b"ns", *self.domain.labels])

    def _soa_rdata(self, serial: int, nodes: Mapping[str, str]) -> dns.rdata.Rdata:
        return soa(self._server_name(nodes), self._hostmaster, serial, self.ttl_s)

    def _soa(self, serial: int, nodes: Mapping[str, str]) -> dns.rrset.RRset:
        return dns.rrset.from_rdata_list(self.domain, self.ttl_s, [self._soa_rdata(serial, nodes)])


def _udp_limit(query: dns.message.Message) -> int:
    if query.edns < 0:
        return CLASSIC_UDP_BYTES
    return max(CLASSIC_UDP_BYTES, min(query.payload, MAX_UDP_BYTES))
