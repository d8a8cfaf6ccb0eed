"""Wire format: the gossip messages and how they are packed into datagrams.

Theory of operation
-------------------
Every message is a msgpack array ``[kind, field, field, ...]`` whose first element is a
:class:`Kind` (an append-only ``IntEnum``: a kind number is never reused, so an old peer
sees an unknown number and drops that one message, never misreads it).  A UDP datagram's
plaintext is ``[sender_name, [message, message, ...]]`` — memberlist's *compound message*,
so one datagram carries a probe together with the piggybacked broadcasts.  TCP streams
carry exactly one message per frame.

Decoding never trusts the peer: :func:`decode_packet` and :func:`decode_message` either
return fully type-checked frozen values or raise :class:`DecodeError`, whatever the bytes.
Sizes are bounded before anything is allocated (msgpack's ``max_*_len`` limits), so a
hostile packet cannot make a peer grow memory.

Encryption, replay protection and the cluster label are one layer out
(``meshlite._crypto``); this module only sees plaintext.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeAlias

import attrs
import msgpack

__all__ = [
    "MAX_META_BYTES",
    "MAX_STREAM_BYTES",
    "Ack",
    "Addr",
    "Alive",
    "Dead",
    "DecodeError",
    "IndirectPing",
    "KeyringRequest",
    "KeyringResponse",
    "Kind",
    "Message",
    "Nack",
    "NodeState",
    "Ping",
    "PushPull",
    "Suspect",
    "User",
    "decode_message",
    "decode_packet",
    "encode_message",
    "encode_packet",
    "packet_overhead",
    "peek_kind",
]

Addr: TypeAlias = tuple[str, int]
"""A peer's (host, port).  The host is an IP address literal."""

# memberlist's MetaMaxSize is 512 bytes: meta rides in every alive broadcast, and an
# alive message must fit in a datagram together with a probe.
MAX_META_BYTES = 512
# A full push/pull state for 10,000 members with modest meta is a few MiB; 32 MiB leaves
# room for catalogs (issue 3) while still bounding what one stream may make us allocate.
MAX_STREAM_BYTES = 32 * 1024 * 1024
MAX_NAME_BYTES = 128


class DecodeError(ValueError):
    """The bytes are not a well-formed meshlite message (remote garbage: drop and count)."""


class Kind(enum.IntEnum):
    """Message kinds.  Append-only: never renumber, never reuse a retired number."""

    PING = 1
    INDIRECT_PING = 2
    ACK = 3
    NACK = 4
    ALIVE = 5
    SUSPECT = 6
    DEAD = 7
    PUSH_PULL = 8
    USER = 9
    KEYRING_REQUEST = 10
    KEYRING_RESPONSE = 11


# ---------------------------------------------------------------------------------------
# Field validators: each takes the decoded msgpack value and returns it typed, or raises.


def _int(v: Any) -> int:
    if type(v) is not int or not (-(2**63) <= v < 2**64):
        raise DecodeError(f"expected an integer, got {type(v).__name__}")
    return v


def _uint(v: Any) -> int:
    if _int(v) < 0:
        raise DecodeError("expected a non-negative integer")
    return v  # type: ignore[no-any-return]


def _float(v: Any) -> float:
    if type(v) is int:
        return float(v)
    if type(v) is not float or v != v or v in (float("inf"), float("-inf")):
        raise DecodeError("expected a finite float")
    return v


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise DecodeError("expected a boolean")
    return v


def _str(v: Any) -> str:
    if type(v) is not str:
        raise DecodeError("expected a string")
    return v


def _name(v: Any) -> str:
    s = _str(v)
    if not s or len(s.encode()) > MAX_NAME_BYTES:
        raise DecodeError("node name empty or too long")
    return s


def _bytes(v: Any) -> bytes:
    if type(v) is not bytes:
        raise DecodeError("expected bytes")
    return v


def _opt_bytes(v: Any) -> bytes | None:
    return None if v is None else _bytes(v)


def _addr(v: Any) -> Addr:
    if type(v) is not list or len(v) != 2:
        raise DecodeError("expected an address [host, port]")
    host, port = _str(v[0]), _int(v[1])
    if not host or len(host) > 255 or not (0 < port < 65536):
        raise DecodeError("bad address")
    return (host, port)


def _meta(v: Any) -> dict[str, str]:
    if type(v) is not dict:
        raise DecodeError("expected a meta map")
    size = 0
    out: dict[str, str] = {}
    for k, val in v.items():
        out[_str(k)] = _str(val)
        size += len(k.encode()) + len(val.encode())
    if size > MAX_META_BYTES:
        raise DecodeError("meta too large")
    return out


def _str_list(v: Any) -> list[str]:
    if type(v) is not list:
        raise DecodeError("expected a list")
    return [_str(x) for x in v]


def _node_states(v: Any) -> tuple[NodeState, ...]:
    if type(v) is not list:
        raise DecodeError("expected a list of node states")
    return tuple(NodeState.from_wire(x) for x in v)


# ---------------------------------------------------------------------------------------
# Messages.  Each class lists its validators in field order; ``to_wire`` is the fields
# in that order, so encode/decode cannot drift apart.


@attrs.frozen
class NodeState:
    """One member as carried in a push/pull exchange."""

    name: str
    addr: Addr
    incarnation: int
    state: int  # a meshlite._core.events.Status value
    meta: dict[str, str] = attrs.field(factory=dict)

    _validators: ClassVar[tuple[Callable[[Any], Any], ...]] = (_name, _addr, _uint, _uint, _meta)

    @classmethod
    def from_wire(cls, v: Any) -> NodeState:
        return cls(*_validate(v, cls._validators))

    def to_wire(self) -> list[Any]:
        return [self.name, list(self.addr), self.incarnation, self.state, self.meta]


@attrs.frozen
class Ping:
    """Direct probe.  ``target`` lets a peer that took over an address refuse a stale probe."""

    KIND: ClassVar[Kind] = Kind.PING
    seq: int
    target: str
    source: str
    source_addr: Addr
    _validators: ClassVar[tuple[Callable[[Any], Any], ...]] = (_uint, _name, _name, _addr)


@attrs.frozen
class IndirectPing:
    """ping-req: ask the receiver to probe ``target`` for us (SWIM §3.1)."""

    KIND: ClassVar[Kind] = Kind.INDIRECT_PING
    seq: int
    target: str
    target_addr: Addr
    nack: bool
    source: str
    source_addr: Addr
    _validators: ClassVar[tuple[Callable[[Any], Any], ...]] = (
        _uint,
        _name,
        _addr,
        _bool,
        _name,
        _addr,
    )


@attrs.frozen
class Ack:
    KIND: ClassVar[Kind] = Kind.ACK
    seq: int
    payload: bytes = b""
    _validators: ClassVar[tuple[Callable[[Any], Any], ...]] = (_uint, _bytes)


@attrs.frozen
class Nack:
    """Lifeguard: the relay could not reach the target, but *we* are reachable."""

    KIND: ClassVar[Kind] = Kind.NACK
    seq: int
    _validators: ClassVar[tuple[Callable[[Any], Any], ...]] = (_uint,)


@attrs.frozen
class Alive:
    KIND: ClassVar[Kind] = Kind.ALIVE
    incarnation: int
    node: str
    addr: Addr
    meta: dict[str, str] = attrs.field(factory=dict)
    _validators: ClassVar[tuple[Callable[[Any], Any], ...]] = (_uint, _name, _addr, _meta)


@attrs.frozen
class Suspect:
    KIND: ClassVar[Kind] = Kind.SUSPECT
    incarnation: int
    node: str
    sender: str
    _validators: ClassVar[tuple[Callable[[Any], Any], ...]] = (_uint, _name, _name)


@attrs.frozen
class Dead:
    """Dead, or — when ``sender == node`` — a graceful leave."""

    KIND: ClassVar[Kind] = Kind.DEAD
    incarnation: int
    node: str
    sender: str
    _validators: ClassVar[tuple[Callable[[Any], Any], ...]] = (_uint, _name, _name)


@attrs.frozen
class PushPull:
    """Full-state anti-entropy (memberlist's pushPull), sent and answered over TCP.

    ``user_state`` is opaque to SWIM: higher layers (the service catalog) put their own
    full state there.
    """

    KIND: ClassVar[Kind] = Kind.PUSH_PULL
    join: bool
    nodes: tuple[NodeState, ...]
    user_state: bytes = b""
    _validators: ClassVar[tuple[Callable[[Any], Any], ...]] = (_bool, _node_states, _bytes)


@attrs.frozen
class User:
    """An opaque broadcast for higher layers (catalog updates ride on these)."""

    KIND: ClassVar[Kind] = Kind.USER
    payload: bytes
    _validators: ClassVar[tuple[Callable[[Any], Any], ...]] = (_bytes,)


@attrs.frozen
class KeyringRequest:
    """A keyring operation (``list``, ``install``, ``use``, ``remove``) sent to one member."""

    KIND: ClassVar[Kind] = Kind.KEYRING_REQUEST
    op: str
    key: bytes | None = None
    _validators: ClassVar[tuple[Callable[[Any], Any], ...]] = (_str, _opt_bytes)


@attrs.frozen
class KeyringResponse:
    KIND: ClassVar[Kind] = Kind.KEYRING_RESPONSE
    ok: bool
    error: str
    keys: list[str] = attrs.field(factory=list)  # base64 of the installed keys, primary first
    _validators: ClassVar[tuple[Callable[[Any], Any], ...]] = (_bool, _str, _str_list)


Message: TypeAlias = (
    Ping
    | IndirectPing
    | Ack
    | Nack
    | Alive
    | Suspect
    | Dead
    | PushPull
    | User
    | KeyringRequest
    | KeyringResponse
)

_BY_KIND: dict[int, type[Any]] = {
    int(cls.KIND): cls
    for cls in (
        Ping,
        IndirectPing,
        Ack,
        Nack,
        Alive,
        Suspect,
        Dead,
        PushPull,
        User,
        KeyringRequest,
        KeyringResponse,
    )
}


def _validate(v: Any, validators: Sequence[Callable[[Any], Any]]) -> list[Any]:
    if type(v) is not list or len(v) != len(validators):
        raise DecodeError("wrong field count")
    return [check(x) for check, x in zip(validators, v, strict=True)]


def _fields(msg: Message) -> list[Any]:
    out: list[Any] = []
    for a in attrs.fields(type(msg)):
        value = getattr(msg, a.name)
        if isinstance(value, tuple) and value and isinstance(value[0], NodeState):
            value = [n.to_wire() for n in value]
        elif a.name.endswith("addr") or isinstance(value, tuple):
            value = list(value)
        out.append(value)
    return out


def _to_wire(msg: Message) -> list[Any]:
    return [int(msg.KIND), *_fields(msg)]


def _from_wire(v: Any) -> Message:
    if type(v) is not list or not v:
        raise DecodeError("a message must be a non-empty array")
    kind = v[0]
    if type(kind) is not int or kind not in _BY_KIND:
        raise DecodeError(f"unknown message kind {kind!r}")
    cls = _BY_KIND[kind]
    return cls(*_validate(v[1:], cls._validators))  # type: ignore[no-any-return]


def _unpack(data: bytes, max_bytes: int) -> Any:
    if len(data) > max_bytes:
        raise DecodeError("message too large")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=max_bytes,
            max_bin_len=max_bytes,
            max_array_len=min(max_bytes, 1_000_000),
            max_map_len=min(max_bytes, 100_000),
            max_ext_len=0,
        )
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises a zoo of types on garbage
        raise DecodeError(f"not msgpack: {type(exc).__name__}") from None


def encode_message(msg: Message) -> bytes:
    """One message, alone: the payload of a TCP frame, or a piece of a compound packet."""
    return msgpack.packb(_to_wire(msg), use_bin_type=True)


def decode_message(data: bytes, max_bytes: int = MAX_STREAM_BYTES) -> Message:
    """Inverse of :func:`encode_message`; raises :class:`DecodeError` on anything else."""
    return _from_wire(_unpack(data, max_bytes))


_PACKER = msgpack.Packer(use_bin_type=True)


def packet_overhead(sender: str, count: int) -> int:
    """Bytes a packet adds around ``count`` already-encoded messages."""
    return 1 + len(msgpack.packb(sender)) + len(_PACKER.pack_array_header(max(count, 16)))


def encode_packet(sender: str, encoded_messages: Sequence[bytes]) -> bytes:
    """A datagram's plaintext from messages already passed through :func:`encode_message`.

    Taking pre-encoded messages lets the SWIM core measure each piggybacked broadcast
    once and fill the datagram budget exactly.
    """
    head = _PACKER.pack_array_header(2) + msgpack.packb(sender, use_bin_type=True)
    return head + _PACKER.pack_array_header(len(encoded_messages)) + b"".join(encoded_messages)


def decode_packet(data: bytes, max_bytes: int = 65_536) -> tuple[str, list[Message]]:
    """Sender name and messages of a datagram.

    A datagram whose envelope is broken raises :class:`DecodeError`.  Inside a good
    envelope, one malformed or unknown message is skipped on its own (a newer peer may
    send kinds we do not know), and the caller learns nothing about it except by the
    count of returned messages.
    """
    v = _unpack(data, max_bytes)
    if type(v) is not list or len(v) != 2 or type(v[1]) is not list:
        raise DecodeError("a packet is [sender, [messages...]]")
    sender = _name(v[0])
    out: list[Message] = []
    for raw in v[1]:
        try:
            out.append(_from_wire(raw))
        except DecodeError:
            continue
    return sender, out


def peek_kind(data: bytes) -> int | None:
    """The kind of an encoded message without decoding it (``None`` if not obvious).

    Lets the driver route keyring requests before handing push/pull states (possibly MiBs)
    to the core, which decodes them once.
    """
    if len(data) >= 2 and 0x91 <= data[0] <= 0x9F and data[1] < 0x80:
        return data[1]
    return None
