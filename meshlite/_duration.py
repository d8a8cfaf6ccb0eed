"""Durations in Go's syntax (``"10s"``, ``"1m30s"``, ``"500ms"``), as Consul writes them.

Theory of operation
-------------------
Consul's files and HTTP API spell every duration the way Go's ``time.ParseDuration``
reads it: an optional sign, then one or more decimal numbers, each with an optional
fraction and a unit — ``ns``, ``us`` (or ``µs``/``μs``), ``ms``, ``s``, ``m``, ``h`` —
with ``"0"`` the only unit-less value.  :func:`parse_duration_ns` follows that grammar and
Go's arithmetic exactly: integer nanoseconds, fractions finer than a nanosecond
truncated, at most ``2**63 - 1`` ns (Go's ``time.Duration`` is an int64).
:func:`format_duration` is Go's ``Duration.String`` (``"1h2m3.5s"``, ``"1.5ms"``,
``"0s"``), so ``parse(format(ns)) == ns`` for every representable duration.

Errors are :class:`~meshlite.errors.ConfigError` whose message is a predicate
("must be a duration like ..., got ..."); callers prefix what was being read.
"""

from __future__ import annotations

import json
import re

from meshlite.errors import ConfigError

__all__ = ["MAX_DURATION_NS", "format_duration", "parse_duration", "parse_duration_ns"]

MAX_DURATION_NS = 2**63 - 1  # Go's time.Duration is an int64 count of nanoseconds

_NS_PER_UNIT = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign, as Go prints it
    "μs": 1_000,  # U+03BC Greek small mu, which Go accepts too
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_UNIT = "ns|us|µs|μs|ms|s|m|h"  # "ms" before "m" and "s": the longest unit wins
_COMPONENT = re.compile(rf"(\d*)(?:\.(\d*))?({_UNIT})")
_DURATION = re.compile(rf"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:{_UNIT}))+")
SHAPE = 'a duration like "10s", "1m30s" or "500ms"'
_SHOW_MAX_CHARS = 40  # an echoed bad value is cut here, so an error stays one short line


def _show(value: object) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= _SHOW_MAX_CHARS else text[: _SHOW_MAX_CHARS - 3] + "..."


def parse_duration_ns(text: str) -> int:
    """Go's ``time.ParseDuration``: the duration in (integer) nanoseconds, maybe negative."""
    if not isinstance(text, str):
        raise ConfigError(f"must be {SHAPE}, got {_show(text)}")
    if text in ("0", "+0", "-0"):
        return 0
    if not _DURATION.fullmatch(text):
        raise ConfigError(f"must be {SHAPE}, got {_show(text)}")
    total = 0
    for whole, frac, unit in _COMPONENT.findall(text):
        scale = _NS_PER_UNIT[unit]
        total += int(whole or "0") * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
    negative = text.startswith("-")
    if total > MAX_DURATION_NS + negative:  # int64: one more nanosecond below zero
        raise ConfigError(f"is out of range (at most about 292 years), got {_show(text)}")
    return -total if negative else total


def parse_duration(text: str) -> float:
    """A duration that must be positive (every check duration is), in seconds."""
    ns = parse_duration_ns(text)
    if ns <= 0:
        raise ConfigError(f'must be a positive duration like "10s", got {_show(text)}')
    return ns / 1e9


def _decimal(value: int, digits: int) -> str:
    """``value / 10**digits`` without trailing zeros (``1500, 3`` -> ``"1.5"``)."""
    whole, frac = divmod(value, 10**digits)
    tail = f"{frac:0{digits}d}".rstrip("0")
    return f"{whole}.{tail}" if tail else str(whole)


def format_duration(ns: int) -> str:
    """Go's ``Duration.String``: ``"1h2m3.5s"``, ``"1m30s"``, ``"1.5ms"``, ``"0s"``."""
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns == 0:
        return "0s"
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_decimal(ns, 3)}µs"
    if ns < 1_000_000_000:
        return f"{sign}{_decimal(ns, 6)}ms"
    hours, rest = divmod(ns, _NS_PER_UNIT["h"])
    minutes, rest = divmod(rest, _NS_PER_UNIT["m"])
    seconds = _decimal(rest, 9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    return f"{sign}{minutes}m{seconds}" if minutes else f"{sign}{seconds}"
