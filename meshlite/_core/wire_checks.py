"""Field checks for decoding: a msgpack value in, the typed field out, or ``DecodeError``.

Theory of operation
-------------------
``wire.py`` decodes every message of every datagram, and a datagram of a busy mesh holds
dozens of them (memberlist's compound messages, piggybacking SWIM's gossip, Das et al.
2002 §4.1), most of them news the receiver already has.  So these checks run millions of
times in a large simulation and once per message per packet in a real peer: each is one
function doing its whole test in a single expression, with no helper calls on the
success path.  They accept exactly the values the wire format allows (``int`` but not
``bool`` for integers, finite ranges, bounded names and meta) and raise
:class:`DecodeError` for anything else, so remote garbage never raises anything else.
"""

from __future__ import annotations

import sys
from typing import Any, TypeAlias

import msgpack

__all__ = [
    "MAX_META_BYTES",
    "MAX_NAME_BYTES",
    "Addr",
    "DecodeError",
    "check_addr",
    "check_bool",
    "check_bytes",
    "check_int",
    "check_meta",
    "check_name",
    "check_opt_bytes",
    "check_str",
    "check_str_list",
    "check_uint",
    "unpack",
]

Addr: TypeAlias = tuple[str, int]
"""A peer's (host, port).  The host is an IP address literal."""

# memberlist's MetaMaxSize is 512 bytes: meta rides in every alive broadcast, and an
# alive message must fit in a datagram together with a probe.
MAX_META_BYTES = 512
MAX_NAME_BYTES = 128


class DecodeError(ValueError):
    """The bytes are not a well-formed meshlite message (remote garbage: drop and count)."""


# msgpack integers span int64 and uint64; every integer field fits in that.
_INT_MIN = -(2**63)
_UINT_END = 2**64
# UTF-8 takes at most 4 bytes per code point, so a name this short (in code points) is
# within MAX_NAME_BYTES without encoding it to measure: the common case by far.
_SHORT_NAME_CHARS = MAX_NAME_BYTES // 4
# A port is 1..65535; a host is an IP literal, never longer than a DNS name (255).
_PORT_END = 65536
_MAX_HOST_CHARS = 255


def check_int(v: Any) -> int:
    if type(v) is int and _INT_MIN <= v < _UINT_END:
        return v
    raise DecodeError(f"expected an integer, got {type(v).__name__}")


def check_uint(v: Any) -> int:
    if type(v) is int and 0 <= v < _UINT_END:
        return v
    raise DecodeError("expected a non-negative integer")


def check_bool(v: Any) -> bool:
    if type(v) is bool:
        return v
    raise DecodeError("expected a boolean")


def check_str(v: Any) -> str:
    if type(v) is str:
        return v
    raise DecodeError("expected a string")


def check_name(v: Any) -> str:
    """A node name: a non-empty string of at most ``MAX_NAME_BYTES`` UTF-8 bytes.

    Names are interned: every message and member entry about a peer then shares one
    string, and the member table's lookups by name match on identity instead of
    reading and comparing two copies (the difference is large with a thousand
    tables in one simulation).  Interned strings are freed once unused.
    """
    if type(v) is str and v and (len(v) <= _SHORT_NAME_CHARS or len(v.encode()) <= MAX_NAME_BYTES):
        return sys.intern(v)
    raise DecodeError("node name missing, empty or too long")


def check_bytes(v: Any) -> bytes:
    if type(v) is bytes:
        return v
    raise DecodeError("expected bytes")


def check_opt_bytes(v: Any) -> bytes | None:
    return None if v is None else check_bytes(v)


def check_addr(v: Any) -> Addr:
    """``[host, port]`` on the wire, ``(host, port)`` in messages."""
    if type(v) is list and len(v) == 2:
        host, port = v
        if (
            type(host) is str
            and 0 < len(host) <= _MAX_HOST_CHARS
            and type(port) is int
            and 0 < port < _PORT_END
        ):
            return (host, port)
    raise DecodeError("expected an address [host, port]")


def check_meta(v: Any) -> dict[str, str]:
    """String keys to string values, at most ``MAX_META_BYTES`` of them in UTF-8.

    Returns the decoded dict itself: it is fresh from msgpack and nobody else holds it.
    """
    if type(v) is not dict:
        raise DecodeError("expected a meta map")
    size = 0
    for k, val in v.items():
        if type(k) is not str or type(val) is not str:
            raise DecodeError("meta keys and values must be strings")
        size += len(k.encode()) + len(val.encode())
    if size > MAX_META_BYTES:
        raise DecodeError("meta too large")
    return v


def check_str_list(v: Any) -> list[str]:
    if type(v) is not list:
        raise DecodeError("expected a list")
    return [check_str(x) for x in v]


def unpack(
    data: bytes,
    what: str,
    *,
    max_str_len: int = -1,
    max_bin_len: int = -1,
    max_array_len: int = -1,
    max_map_len: int = -1,
) -> Any:
    """``msgpack.unpackb`` with the strict options every decoder here uses (text as
    ``str``, string map keys only, no extension types) and the caller's size limits
    (-1: msgpack's default, bounded by ``len(data)``); :class:`DecodeError` naming
    ``what`` for anything that is not well-formed msgpack within them."""
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_ext_len=0,
            max_str_len=max_str_len,
            max_bin_len=max_bin_len,
            max_array_len=max_array_len,
            max_map_len=max_map_len,
        )
    except Exception as exc:  # msgpack raises a zoo of types on garbage
        raise DecodeError(f"{what} is not msgpack: {type(exc).__name__}") from None
