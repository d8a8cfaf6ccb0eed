"""Parsing "host:port" strings the way operators write them.

Accepted: ``"10.0.0.5:7946"``, ``"[::1]:7946"``, ``"10.0.0.5"`` (default port), ``":7946"``
(all interfaces), and host names (resolved later, at join time, so a seed that is not in
DNS yet can still be retried).  Anything else is a :class:`ConfigError` that quotes the
input and shows the expected shape.
"""

from __future__ import annotations

import ipaddress

import ifaddr

from meshlite._core.wire import Addr
from meshlite.errors import ConfigError

__all__ = [
    "DEFAULT_PORT",
    "advertise_address",
    "format_hostport",
    "is_ip",
    "parse_hostport",
]

DEFAULT_PORT = 7946  # memberlist's and Serf's default gossip port, so firewalls already know it


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _check_host(host: str, text: str, what: str) -> str:
    if is_ip(host):
        return host
    labels = host.rstrip(".").split(".")
    ok = all(
        0 < len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum()
        for label in labels
    )
    if not ok or len(host) > 253:
        raise ConfigError(f"{what} {text!r}: {host!r} is neither an IP address nor a host name")
    return host


def parse_hostport(
    text: str,
    *,
    default_port: int = DEFAULT_PORT,
    what: str = "address",
    allow_port_zero: bool = False,
) -> tuple[str, int]:
    """Split ``text`` into ``(host, port)``; raise :class:`ConfigError` when malformed."""
    if not isinstance(text, str):
        raise ConfigError(f"{what} must be a string like '127.0.0.1:7946', got {text!r}")
    s = text.strip()
    if not s:
        raise ConfigError(f"{what} is empty; expected 'host:port', e.g. '127.0.0.1:7946'")
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"{what} {text!r}: expected '[ipv6]:port', e.g. '[::1]:7946'")
        port_text = rest[1:] if rest else ""
        if not is_ip(host):
            raise ConfigError(f"{what} {text!r}: {host!r} is not an IPv6 address")
    elif s.count(":") > 1:
        host, port_text = s, ""  # a bare IPv6 address
        if not is_ip(host):
            raise ConfigError(f"{what} {text!r}: write IPv6 with a port as '[addr]:port'")
    else:
        host, _, port_text = s.partition(":")
        host = host or "0.0.0.0"
        host = _check_host(host, text, what)
    return host, _parse_port(port_text, default_port, text, what, allow_port_zero)


def _parse_port(port_text: str, default: int, text: str, what: str, allow_zero: bool) -> int:
    if not port_text:
        return default
    if not port_text.isdigit():
        raise ConfigError(f"{what} {text!r}: port {port_text!r} is not a number")
    port = int(port_text)
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise ConfigError(f"{what} {text!r}: port must be between {low} and 65535")
    return port


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def advertise_address(local: Addr) -> Addr:
    """Bound to every interface: advertise this host's private address, as memberlist's
    ``GetPrivateIP`` does (loopback only when there is nothing else)."""
    host, port = local
    if not ipaddress.ip_address(host).is_unspecified:
        return local
    want = 6 if ":" in host else 4
    found = [
        ipaddress.ip_address(ip.ip if isinstance(ip.ip, str) else ip.ip[0])
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
    ]
    usable = [a for a in found if a.version == want and not a.is_loopback and not a.is_link_local]
    usable.sort(key=lambda a: not a.is_private)
    return (str(usable[0]) if usable else "127.0.0.1" if want == 4 else "::1", port)
