"""The agent's settings: every accepted name, its expected shape, and the fields it sets.

Theory of operation
-------------------
:data:`SETTINGS` maps a setting name — ours (``bind``, ``join``, ``key``) or Consul's alias
(``bind_addr``, ``start_join``, ``encrypt``; Consul's ``agent/config/config.go`` names) — to a
parser that checks a value and returns the *fields* it sets.  Fields are finer than
settings so Consul's split forms merge with ours: ``bind = "10.0.0.1:7946"`` sets
``bind_host`` and ``bind_port``, ``bind_addr = "10.0.0.1"`` only ``bind_host``, and
``ports.serf_lan`` only ``bind_port``.  A bad value raises :class:`BadValueError` with the predicate
("must be ..., got ..."); ``_agent_config`` prefixes the file and setting (or the flag).
Keys are checked with ``meshlite._crypto.parse_key`` and never echoed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeAlias

from meshlite._addr import DEFAULT_PORT, format_hostport, is_ip, parse_hostport
from meshlite._crypto import parse_key
from meshlite._duration import parse_duration_ns
from meshlite.errors import ConfigError

__all__ = [
    "HTTP_PORT",
    "LOG_LEVELS",
    "SERF_PORT",
    "SETTINGS",
    "BadValueError",
    "parse_meta_flag",
    "show",
]

Fields: TypeAlias = dict[str, Any]
Parser: TypeAlias = Callable[[Any], Fields]

SERF_PORT = DEFAULT_PORT  # memberlist's/Serf's gossip port; Consul's ports.serf_lan default
HTTP_PORT = 8500  # Consul's HTTP API port, so existing clients find us without flags
PROFILES = ("lan", "local")
# hclog's level names (Consul's -log-level); "warning" is accepted for Python habits.
LOG_LEVELS = ("trace", "debug", "info", "warn", "error")
_NO_PORT = -1  # sentinel default: parse_hostport returns it when the text has no port
_SHOW_MAX_CHARS = 60  # an echoed bad value is cut here, so one line stays one line


class BadValueError(Exception):
    """A value does not fit; ``str(exc)`` is the predicate, ``setting`` a nested name."""

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


def show(value: Any) -> str:
    """A bad value as the file would spell it (JSON-ish), cut to one short line."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= _SHOW_MAX_CHARS else text[: _SHOW_MAX_CHARS - 3] + "..."


def _string(value: Any, shape: str) -> str:
    if not isinstance(value, str):
        raise BadValueError(f"must be {shape}, got {show(value)}")
    return value


def _hostport(value: Any, *, zero_ok: bool, must_be_ip: bool = False) -> tuple[str, int]:
    """``(host, port)``, the port ``_NO_PORT`` when the text has none."""
    text = _string(value, 'a string "host:port"')
    try:
        host, port = parse_hostport(
            text, default_port=_NO_PORT, what="got", allow_port_zero=zero_ok
        )
    except ConfigError as exc:
        raise BadValueError(f'must be "host:port" ({exc})') from None
    if must_be_ip and not is_ip(host):
        raise BadValueError(f"must have an IP address as its host, got {show(text)}")
    return host, port


def _address(prefix: str, *, zero_ok: bool = False, must_be_ip: bool = False) -> Parser:
    def parse(value: Any) -> Fields:
        host, port = _hostport(value, zero_ok=zero_ok, must_be_ip=must_be_ip)
        out: Fields = {f"{prefix}_host": host}
        if port != _NO_PORT:
            out[f"{prefix}_port"] = port
        return out

    return parse


def _join(value: Any) -> Fields:
    shape = 'a list of "host:port" strings'
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise BadValueError(f"must be {shape}, got {show(value)}")
    out = []
    for item in value:
        try:
            out.append(format_hostport(*parse_hostport(item, what="got")))
        except ConfigError as exc:
            raise BadValueError(f"must be {shape} ({exc})") from None
    return {"join": tuple(out)}


def _keys(*, many: bool) -> Parser:
    shape = "a base64 key (or a list of them, primary first)" if many else "a base64 key"

    def parse(value: Any) -> Fields:
        items = value if many and isinstance(value, list | tuple) else [value]
        if not items or not all(isinstance(v, str) for v in items):
            # Never echo what might be key material: name the type only.
            raise BadValueError(f"must be {shape}, got a {type(value).__name__}")
        for item in items:
            try:
                parse_key(item)
            except ConfigError as exc:
                raise BadValueError(f"is not a usable key: {exc}") from None
        return {"keys": tuple(v.strip() for v in items)}

    return parse


def _meta(value: Any) -> Fields:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise BadValueError(f"must be a table of string values, got {show(value)}")
    return {"meta": dict(value)}


def parse_meta_flag(item: str) -> tuple[str, str]:
    """``"k=v"`` (or Consul's ``"k:v"``) -> ``(k, v)``."""
    sep = "=" if "=" in item else ":"
    key, found, val = item.partition(sep)
    if not found or not key:
        raise BadValueError(f'must be "key=value", got {show(item)}')
    return key, val


def _text(field: str, *, nonempty: bool = False) -> Parser:
    def parse(value: Any) -> Fields:
        text = _string(value, "a non-empty string" if nonempty else "a string")
        if nonempty and not text:
            raise BadValueError("must be a non-empty string")
        return {field: text}

    return parse


def _flag(field: str) -> Parser:
    def parse(value: Any) -> Fields:
        if not isinstance(value, bool):
            raise BadValueError(f"must be true or false, got {show(value)}")
        return {field: value}

    return parse


def _choice(field: str, choices: tuple[str, ...], aliases: dict[str, str]) -> Parser:
    shape = " or ".join(f'"{c}"' for c in choices)

    def parse(value: Any) -> Fields:
        text = _string(value, shape).lower()
        text = aliases.get(text, text)
        if text not in choices:
            raise BadValueError(f"must be {shape}, got {show(value)}")
        return {field: text}

    return parse


def _bootstrap_expect(value: Any) -> Fields:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadValueError(f"must be a whole number >= 1, got {show(value)}")
    return {"bootstrap_expect": value}


def _dns_ttl(value: Any) -> Fields:
    """Whole seconds, as a number or a duration string ("30s", "1m"); 0 is Consul's default."""
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        try:
            ns = parse_duration_ns(value)
        except ConfigError as exc:
            raise BadValueError(f"{exc} (or a number of seconds)") from None
        seconds, rest = divmod(ns, 1_000_000_000)
        if rest:
            raise BadValueError(f"must be whole seconds (DNS TTLs are), got {show(value)}")
    if not 0 <= seconds < 2**31:
        raise BadValueError(f"must be from 0 to 2147483647 seconds, got {show(value)}")
    return {"dns_ttl_s": seconds}


_PORT_FIELDS = {"serf_lan": "bind_port", "http": "http_port", "dns": "dns_port"}
_ADDRESS_FIELDS = {"http": "http_host", "dns": "dns_host"}


def _table(name: str, known: dict[str, str], check: Callable[[Any, str], Any]) -> Parser:
    def parse(value: Any) -> Fields:
        if not isinstance(value, dict):
            raise BadValueError(f"must be a table with {', '.join(known)}, got {show(value)}")
        out: Fields = {}
        for sub, v in value.items():
            if sub not in known:
                hint = ", ".join(f"{name}.{k}" for k in known)
                raise BadValueError(
                    f"is not supported by meshlite (it knows {hint})", f"{name}.{sub}"
                )
            out[known[sub]] = check(v, f"{name}.{sub}")
        return out

    return parse


def _port(value: Any, setting: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise BadValueError(f"must be a port number 0-65535, got {show(value)}", setting)
    return value


def _host(value: Any, setting: str) -> str:
    if not isinstance(value, str) or not is_ip(value):
        raise BadValueError(f"must be an IP address string, got {show(value)}", setting)
    return value


SETTINGS: dict[str, Parser] = {
    "name": _text("name", nonempty=True),
    "node_name": _text("name", nonempty=True),
    "bind": _address("bind", zero_ok=True, must_be_ip=True),
    "bind_addr": _address("bind", zero_ok=True, must_be_ip=True),
    "advertise": _address("advertise", must_be_ip=True),
    "advertise_addr": _address("advertise", must_be_ip=True),
    "join": _join,
    "start_join": _join,
    "retry_join": _join,
    "key": _keys(many=True),
    "encrypt": _keys(many=False),
    "cluster": _text("cluster"),
    "server": _flag("server"),
    "mdns": _flag("mdns"),
    "mdns_publish": _flag("mdns_publish"),
    "meta": _meta,
    "node_meta": _meta,
    "profile": _choice("profile", PROFILES, {}),
    "log_level": _choice("log_level", LOG_LEVELS, {"warning": "warn", "err": "error"}),
    "log_json": _flag("log_json"),
    "data_dir": _text("data_dir", nonempty=True),
    "bootstrap_expect": _bootstrap_expect,
    "http": _address("http", zero_ok=True, must_be_ip=True),
    "http_token": _text("http_token", nonempty=True),
    "http_token_reads": _flag("http_token_reads"),
    "http_on_leader": _flag("http_on_leader"),
    "dns": _address("dns", zero_ok=True, must_be_ip=True),
    "dns_domain": _text("dns_domain", nonempty=True),
    "domain": _text("dns_domain", nonempty=True),  # Consul's name for it
    "dns_ttl": _dns_ttl,
    "ports": _table("ports", _PORT_FIELDS, _port),
    "addresses": _table("addresses", _ADDRESS_FIELDS, _host),
}
