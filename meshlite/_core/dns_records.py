"""Resource records for the DNS answerer: typed constructors and a per-reply collector.

Theory of operation
-------------------
dnspython builds records from immutable rdata objects whose constructors carry no
annotations; the small functions here wrap them so ``dns_answer`` stays typed under
``mypy --strict``.  Address records are cached per address (rdata are immutable, so one
object serves every reply).  :class:`Records` collects what one reply will say per
(owner name, type) in insertion order — the order the answerer shuffled into — and writes
each group as one RRset (RFC 2181 5: an RRset travels whole), which also drops duplicate
records (two instances on one address).

The SOA's timers are Consul's ``dns_config.soa`` defaults; nothing transfers this zone,
so they only inform.  Its minimum — the negative-caching TTL of RFC 2308 — is the
configured TTL.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any, TypeAlias

import dns.exception
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rrset
from dns.rdatatype import RdataType
from dns.rdtypes.ANY.CNAME import CNAME
from dns.rdtypes.ANY.NS import NS
from dns.rdtypes.ANY.PTR import PTR
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.IN.SRV import SRV

__all__ = [
    "Records",
    "Section",
    "add_address",
    "cname",
    "host_name",
    "ip",
    "ns",
    "ptr",
    "service_name",
    "soa",
    "srv",
]

SOA_REFRESH_S, SOA_RETRY_S, SOA_EXPIRE_S = 3600, 600, 86400
SRV_PRIORITY = SRV_WEIGHT = 1  # Consul: every passing instance is an equal choice
_IN = dns.rdataclass.IN
# dnspython's rdata constructors carry no annotations; called through Any for mypy --strict.
_A: Any = A
_AAAA: Any = AAAA
_SRV: Any = SRV
_CNAME: Any = CNAME
_NS: Any = NS
_PTR: Any = PTR
_SOA: Any = SOA

Section: TypeAlias = dict[tuple[dns.name.Name, int], list[dns.rdata.Rdata]]


class Records:
    """The answer and additional records of one reply, grouped per (name, type)."""

    def __init__(self, ttl_s: int, serial: int) -> None:
        self.ttl_s = ttl_s
        self.serial = serial
        self.answer: Section = {}
        self.additional: Section = {}

    @staticmethod
    def add(section: Section, name: dns.name.Name, rdata: dns.rdata.Rdata) -> None:
        section.setdefault((name, rdata.rdtype), []).append(rdata)

    def write(self, reply: dns.message.Message) -> None:
        for section, rrsets in ((self.answer, reply.answer), (self.additional, reply.additional)):
            for (name, _rdtype), rdatas in section.items():
                rrsets.append(dns.rrset.from_rdata_list(name, self.ttl_s, rdatas))


def add_address(
    address: str,
    qname: dns.name.Name,
    qtype: RdataType,
    out: Records,
    section: Section | None = None,
) -> bool:
    """Add ``address`` as an A or AAAA record if the question asks for that family
    (to the answer unless ``section`` says otherwise); ``False`` if it is no IP address."""
    record = _ip_record(address)
    if record is None:
        return False
    if qtype == RdataType.ANY or record.rdtype == qtype:
        out.add(out.answer if section is None else section, qname, record)
    return True


@functools.lru_cache(maxsize=4096)
def ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def _ip_record(address: str) -> dns.rdata.Rdata | None:
    parsed = ip(address)
    if parsed is None:
        return None
    record: dns.rdata.Rdata
    if parsed.version == 4:
        record = _A(_IN, RdataType.A, str(parsed))
    else:
        record = _AAAA(_IN, RdataType.AAAA, str(parsed))
    return record


@functools.lru_cache(maxsize=1024)
def host_name(address: str) -> dns.name.Name | None:
    """An instance's host-name address as an absolute name (``None`` if not spellable)."""
    try:
        return dns.name.from_text(address)
    except (dns.exception.DNSException, UnicodeError, ValueError):
        return None


def service_name(service: str, domain: dns.name.Name) -> dns.name.Name | None:
    """``NAME.service.DOMAIN`` (``None`` if the name cannot be one label)."""
    try:
        return dns.name.Name([service.encode(), b"service", *domain.labels])
    except dns.exception.DNSException:
        return None


def srv(port: int, target: dns.name.Name) -> dns.rdata.Rdata:
    record: dns.rdata.Rdata = _SRV(_IN, RdataType.SRV, SRV_PRIORITY, SRV_WEIGHT, port, target)
    return record


def cname(target: dns.name.Name) -> dns.rdata.Rdata:
    record: dns.rdata.Rdata = _CNAME(_IN, RdataType.CNAME, target)
    return record


def ns(target: dns.name.Name) -> dns.rdata.Rdata:
    record: dns.rdata.Rdata = _NS(_IN, RdataType.NS, target)
    return record


def ptr(target: dns.name.Name) -> dns.rdata.Rdata:
    record: dns.rdata.Rdata = _PTR(_IN, RdataType.PTR, target)
    return record


def soa(primary: dns.name.Name, mailbox: dns.name.Name, serial: int, ttl_s: int) -> dns.rdata.Rdata:
    """The zone's SOA; its minimum (negative caching, RFC 2308) is the answers' TTL."""
    record: dns.rdata.Rdata = _SOA(
        _IN, RdataType.SOA, primary, mailbox, serial, SOA_REFRESH_S, SOA_RETRY_S, SOA_EXPIRE_S,
        ttl_s,
    )  # fmt: skip
    return record
