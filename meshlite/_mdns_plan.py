"""Pure decisions behind mDNS discovery: names, TXT records, which addresses to use.

Kept apart from :mod:`meshlite._mdns` (which owns the thread and python-zeroconf) so that
every choice here is a plain function of its inputs, testable without a network.

* **Names** follow DNS-SD (RFC 6763 §4): the instance ``<node-name>._meshlite._udp.local.``;
  an instance label is at most 63 UTF-8 bytes and has no ASCII control characters, so longer
  or odd node names are shortened with a hash suffix to stay unique.  The host (SRV target)
  is ``ml-<slug>-<hash8>.local.``: a valid host name per node, so two peers in one process
  never fight over one host record.
* **TXT** (RFC 6763 §6) carries ``v`` (protocol version) and ``c`` (the first 16 hex digits
  of sha256 of the cluster label).  Never the key: TXT is readable by anyone on the link,
  and the label hash is only a filter, not a secret — the AES-GCM keyring still decides
  who may join.
* **Addresses**: a peer bound to one IP advertises that IP and multicasts only on the
  interface that owns it (a mesh bound to 127.0.0.1 never speaks mDNS on the LAN); a peer
  bound to the wildcard advertises the addresses of the interfaces it multicasts on.  A
  browser that receives several addresses reports the one on a subnet it shares with the
  advertiser (RFC 6762 §6.2 answers are per-link, python-zeroconf's are not).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence

import attrs
import ifaddr  # python-zeroconf's own dependency for listing interfaces

__all__ = [
    "MDNS_PROTOCOL_VERSION",
    "SERVICE_TYPE",
    "Plan",
    "choose_address",
    "cluster_hash",
    "instance_name",
    "make_plan",
    "server_name",
    "txt_matches",
    "txt_properties",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Service type: DNS-SD service names are at most 15 characters (RFC 6763 §7.2); gossip
# runs on UDP, so the protocol label is _udp even though push/pull uses TCP on the same port.
SERVICE_TYPE = "_meshlite._udp.local."
# Bump when the TXT keys or their meaning change incompatibly; browsers ignore other versions.
MDNS_PROTOCOL_VERSION = 1
# 16 hex digits = 64 bits of sha256: enough that two different labels on one link never
# collide by accident, short enough for a TXT record.  It is a filter, not authentication.
CLUSTER_HASH_HEX = 16
# RFC 6763 §4.1.1: an instance name is one DNS label of at most 63 octets.
_MAX_LABEL_BYTES = 63
_HASH_SUFFIX_HEX = 8
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_NOT_HOSTNAME = re.compile(r"[^a-z0-9-]+")


def _short_hash(text: str, digits: int) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:digits]


def cluster_hash(label: str) -> str:
    """The TXT ``c`` value: a short public fingerprint of the cluster label."""
    return _short_hash(label, CLUSTER_HASH_HEX)


def _truncate_utf8(text: str, max_bytes: int) -> str:
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


def instance_name(node: str) -> str:
    """``<node>._meshlite._udp.local.``, the node name made a legal DNS-SD instance label."""
    label = _CONTROL_CHARS.sub("?", node)
    if label != node or len(label.encode("utf-8")) > _MAX_LABEL_BYTES:
        keep = _MAX_LABEL_BYTES - _HASH_SUFFIX_HEX - 1
        label = f"{_truncate_utf8(label, keep)}-{_short_hash(node, _HASH_SUFFIX_HEX)}"
    return f"{label}.{SERVICE_TYPE}"


def server_name(node: str) -> str:
    """A per-node host name for the SRV target and the A/AAAA records."""
    slug = _NOT_HOSTNAME.sub("-", node.lower()).strip("-")[:40].strip("-") or "peer"
    return f"ml-{slug}-{_short_hash(node, _HASH_SUFFIX_HEX)}.local."


def txt_properties(cluster: str) -> dict[str, str]:
    return {"v": str(MDNS_PROTOCOL_VERSION), "c": cluster_hash(cluster)}


def txt_matches(props: Mapping[str, str | None], cluster: str) -> bool:
    """Whether a browsed TXT record belongs to our protocol version and cluster."""
    return props.get("v") == str(MDNS_PROTOCOL_VERSION) and props.get("c") == cluster_hash(cluster)


@attrs.frozen
class Plan:
    """What to hand python-zeroconf and what to advertise, decided before any socket opens.

    ``interfaces`` are the addresses whose interfaces zeroconf multicasts on; ``families`` the IP
    versions in use (4, 6 or both); ``advertise`` the addresses in our A/AAAA records;
    ``local_networks`` every subnet of this host, for :func:`choose_address`; ``problems``
    human-readable reasons some requested interfaces were left out.
    """

    interfaces: tuple[str, ...]
    families: frozenset[int]
    advertise: tuple[str, ...]
    local_networks: tuple[IPNetwork, ...]
    problems: tuple[str, ...] = ()


def _adapter_addresses(adapter: ifaddr.Adapter) -> list[tuple[IPAddress, IPNetwork]]:
    out: list[tuple[IPAddress, IPNetwork]] = []
    for ip in adapter.ips:
        text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
        addr = ipaddress.ip_address(text.split("%")[0])
        out.append((addr, ipaddress.ip_network(f"{addr}/{ip.network_prefix}", strict=False)))
    return out


def _resolve_interfaces(
    wanted: Sequence[str], adapters: Sequence[ifaddr.Adapter], families: frozenset[int]
) -> tuple[list[IPAddress], list[str]]:
    """Map interface names or IP addresses to this host's addresses; collect misses."""
    by_name = {a.name: _adapter_addresses(a) for a in adapters}
    mine = {addr for pairs in by_name.values() for addr, _net in pairs}
    found: list[IPAddress] = []
    problems: list[str] = []
    for item in wanted:
        if item in by_name:
            found.extend(a for a, _n in by_name[item] if a.version in families)
            continue
        try:
            addr = ipaddress.ip_address(item)
        except ValueError:
            problems.append(f"no interface named {item!r} (have: {', '.join(sorted(by_name))})")
            continue
        if addr in mine:
            found.append(addr)
        else:
            problems.append(f"{item} is not an address of this host")
    return list(dict.fromkeys(found)), problems


def _usable_for_advertise(addrs: Iterable[IPAddress]) -> list[IPAddress]:
    """Drop link-local IPv6 (needs a scope nobody else shares); loopback only as a last resort."""
    candidates = [a for a in addrs if not (a.version == 6 and a.is_link_local)]
    routable = [a for a in candidates if not a.is_loopback]
    return routable or candidates


def make_plan(
    host: str,
    interfaces: Sequence[str] | None,
    adapters: Sequence[ifaddr.Adapter],
    down: frozenset[str] = frozenset(),
) -> Plan:
    """Decide interfaces and advertised addresses for a peer whose gossip socket is ``host``.

    ``host`` must be an IP literal; ``0.0.0.0`` means every IPv4 interface, ``::`` every
    interface of both families.  ``down`` names interfaces that are administratively down:
    they keep their addresses but cannot carry multicast, so they are left out.
    """
    bound = ipaddress.ip_address(host)
    families = (
        frozenset({4, 6}) if bound == ipaddress.IPv6Address("::") else frozenset({bound.version})
    )
    up = [a for a in adapters if a.name not in down]
    networks = tuple(dict.fromkeys(net for a in up for _addr, net in _adapter_addresses(a)))
    problems = [f"interface {name} is down" for name in sorted(down) if name in (interfaces or ())]
    if interfaces is not None:
        chosen, misses = _resolve_interfaces([i for i in interfaces if i not in down], up, families)
        problems += misses
    elif not bound.is_unspecified:
        owners = [a.name for a in adapters if any(x == bound for x, _n in _adapter_addresses(a))]
        chosen = [] if any(name in down for name in owners) else [bound]
        problems += [
            f"interface {name} (which owns {bound}) is down" for name in owners if name in down
        ]
    else:
        chosen = [
            addr for a in up for addr, _n in _adapter_addresses(a) if addr.version in families
        ]
    advertise = [bound] if not bound.is_unspecified else _usable_for_advertise(chosen)
    return Plan(
        interfaces=tuple(str(a) for a in chosen if not (a.version == 6 and a.is_link_local)),
        families=families,
        advertise=tuple(str(a) for a in advertise),
        local_networks=networks,
        problems=tuple(problems),
    )


def _rank(addr: IPAddress, networks: Sequence[IPNetwork]) -> int:
    if addr.is_loopback:
        return 1  # only heard over lo, so the advertiser is on this host
    if any(addr.version == net.version and addr in net for net in networks):
        return 0  # a subnet we share: reachable directly
    return 2


def choose_address(advertised: Iterable[str], networks: Sequence[IPNetwork]) -> str | None:
    """The advertised address to join: on a shared subnet first, then loopback, then any."""
    parsed: list[IPAddress] = []
    for text in advertised:
        try:
            addr = ipaddress.ip_address(text.split("%")[0])
        except ValueError:
            continue  # remote garbage: skip, never raise
        if addr.is_unspecified or addr.is_multicast or (addr.version == 6 and addr.is_link_local):
            continue
        parsed.append(addr)
    if not parsed:
        return None
    return str(min(parsed, key=lambda a: _rank(a, networks)))
