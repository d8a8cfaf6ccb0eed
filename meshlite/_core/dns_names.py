"""The names of meshlite's DNS zone: what a question's name asks for, and the names we answer with.

Theory of operation
-------------------
Consul's DNS interface (``agent/dns.go``, ``dispatch``) reads a name right to left: below
the domain, the right-most label that is a *kind* (``service``, ``node``, ``addr``) says
what is asked, the labels left of it say which one, and labels right of it would be a
datacenter.  We keep that grammar, so names written for Consul work with the domain
swapped:

* ``NAME.service.DOMAIN`` and ``TAG.NAME.service.DOMAIN`` (a tag may itself hold dots:
  every label but the last is the tag, as in Consul);
* RFC 2782 ``_NAME._tcp.service.DOMAIN`` (no tag filter) and ``_NAME._TAG.service.DOMAIN``;
  for SRV questions the ``service`` label may be left out (``_NAME._tcp.DOMAIN``);
* ``NODE.node.DOMAIN`` (a node name may hold dots: the labels are joined back);
* ``HEX.addr.DOMAIN``: an address spelled in hex (8 digits IPv4, 32 IPv6).  Consul points
  SRV targets there when an instance's address is not its node's address, so the target
  always resolves to the instance itself;
* reverse names (``in-addr.arpa.``, ``ip6.arpa.``) of addresses we know, for PTR.

meshlite has no datacenters, so a label after the kind makes the name unknown (NXDOMAIN).
Matching is case-insensitive the way DNS is (RFC 4343: ASCII letters only): labels are
compared as ``bytes.lower()``.  The lookups are plain values; ``dns_answer`` resolves them
against the directory and the live members.
"""

from __future__ import annotations

import binascii
import functools
import ipaddress

import attrs
import dns.exception
import dns.name
import dns.reversename

from meshlite.errors import ConfigError

__all__ = [
    "AddrLookup",
    "Apex",
    "Lookup",
    "NoSuchName",
    "NodeLookup",
    "Outside",
    "ReverseLookup",
    "ServiceLookup",
    "addr_target",
    "make_domain",
    "node_target",
    "parse_name",
]

# RFC 1035 2.3.4: a label is at most 63 octets.
MAX_LABEL_BYTES = 63
_KINDS = frozenset({b"service", b"node", b"addr"})
_RFC2782_DEFAULT_PROTO = b"tcp"  # ``_NAME._tcp``: no tag filter (Consul treats it so)
_REVERSE_ZONES = (dns.reversename.ipv4_reverse_domain, dns.reversename.ipv6_reverse_domain)
_HEX_DIGITS_IPV4, _HEX_DIGITS_IPV6 = 8, 32


@attrs.frozen
class ServiceLookup:
    """Passing instances of a service, optionally with a tag (both lower-cased)."""

    name: bytes
    tag: bytes | None = None


@attrs.frozen
class NodeLookup:
    node: bytes  # lower-cased


@attrs.frozen
class AddrLookup:
    ip: str


@attrs.frozen
class ReverseLookup:
    ip: str


@attrs.frozen
class Apex:
    """The domain itself: its SOA and NS."""


@attrs.frozen
class NoSuchName:
    """Inside the domain, but nothing we could ever answer (NXDOMAIN)."""


@attrs.frozen
class Outside:
    """Not our zone: no recursion, so REFUSED."""


Lookup = ServiceLookup | NodeLookup | AddrLookup | ReverseLookup | Apex | NoSuchName | Outside


def make_domain(text: str) -> dns.name.Name:
    """The zone's name from ``"meshlite"`` or ``"meshlite."``; ``ConfigError`` if unusable."""
    if not isinstance(text, str) or not text.strip(". "):
        raise ConfigError(f'dns_domain must be a domain name such as "meshlite", got {text!r}')
    try:
        name = dns.name.from_text(text.strip().lower())
    except (dns.exception.DNSException, UnicodeError) as exc:
        raise ConfigError(f"dns_domain {text!r} is not a valid domain name: {exc}") from None
    if name.is_subdomain(dns.name.from_text("arpa.")):
        raise ConfigError(f"dns_domain {text!r}: the arpa. tree is for reverse lookups")
    try:  # the longest name we answer with must fit in 255 octets (RFC 1035 2.3.4)
        dns.name.Name([b"0" * _HEX_DIGITS_IPV6, b"addr", *name.labels])
    except dns.exception.DNSException:
        raise ConfigError(f"dns_domain {text!r} is too long to hold names below it") from None
    return name


def parse_name(qname: dns.name.Name, domain: dns.name.Name, *, srv: bool) -> Lookup:
    """What ``qname`` asks for; ``srv`` allows the RFC 2782 form without ``.service``."""
    if qname.is_subdomain(domain):
        labels = [label.lower() for label in qname.relativize(domain).labels]
        return _in_zone(labels, srv) if labels else Apex()
    if any(qname.is_subdomain(zone) for zone in _REVERSE_ZONES):
        try:
            return ReverseLookup(dns.reversename.to_address(qname))
        except (dns.exception.DNSException, ValueError):
            return Outside()
    return Outside()


def _in_zone(labels: list[bytes], srv: bool) -> Lookup:
    for i in range(len(labels) - 1, -1, -1):
        if labels[i] in _KINDS:
            kind, parts, suffix = labels[i], labels[:i], labels[i + 1 :]
            break
        if srv and labels[i].startswith(b"_"):
            kind, parts, suffix = b"service", labels[: i + 1], labels[i + 1 :]
            break
    else:
        return NoSuchName()
    if suffix or not parts:  # a datacenter label (none exist here), or nothing asked
        return NoSuchName()
    if kind == b"service":
        return _service(parts)
    if kind == b"node":
        return NodeLookup(b".".join(parts))
    return _addr(parts)


def _service(parts: list[bytes]) -> Lookup:
    if len(parts) == 2 and all(p.startswith(b"_") and len(p) > 1 for p in parts):
        proto = parts[1][1:]
        return ServiceLookup(parts[0][1:], None if proto == _RFC2782_DEFAULT_PROTO else proto)
    return ServiceLookup(parts[-1], b".".join(parts[:-1]) if len(parts) > 1 else None)


def _addr(parts: list[bytes]) -> Lookup:
    if len(parts) != 1 or len(parts[0]) not in (_HEX_DIGITS_IPV4, _HEX_DIGITS_IPV6):
        return NoSuchName()
    try:
        packed = binascii.unhexlify(parts[0])
    except (binascii.Error, ValueError):
        return NoSuchName()
    return AddrLookup(str(ipaddress.ip_address(packed)))


# ------------------------------------------------------------------------------ targets


@functools.lru_cache(maxsize=4096)
def node_target(node: str, domain: dns.name.Name) -> dns.name.Name | None:
    """``NODE.node.DOMAIN``, or ``None`` when the node's name cannot be spelled as labels
    (an empty or over-long label, or too long a name): callers then use :func:`addr_target`."""
    labels = node.encode().split(b".")
    if any(not 0 < len(label) <= MAX_LABEL_BYTES for label in labels):
        return None
    try:
        return dns.name.Name([*labels, b"node", *domain.labels])
    except dns.exception.DNSException:
        return None


@functools.lru_cache(maxsize=4096)
def addr_target(ip: str, domain: dns.name.Name) -> dns.name.Name:
    """``HEX.addr.DOMAIN`` for an IP address (Consul's ``encodeIPAsFqdn``)."""
    packed = ipaddress.ip_address(ip).packed
    return dns.name.Name([binascii.hexlify(packed), b"addr", *domain.labels])
