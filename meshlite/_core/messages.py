"""The gossip messages: what each carries, and how each maps to and from msgpack values.

Theory of operation
-------------------
Every message is a frozen value whose wire form is the msgpack array ``[kind, field,
field, ...]``; :class:`Kind` numbers are append-only (an old peer sees an unknown number
and drops that one message, never misreads it).  The kinds are SWIM's (Das et al. 2002:
ping, ping-req, ack; alive/suspect/dead gossip, §4), Lifeguard's nack (arXiv 1707.00788
§IV-A), and memberlist's push/pull state exchange and user broadcasts (``net.go``).

Each class's ``_to_wire`` and ``_from_wire`` sit next to its fields, in field order, so
encoding and decoding cannot drift apart (the round-trip tests check every kind).
``_from_wire`` takes the whole ``[kind, field, ...]`` list, kind already checked, and is
written out field by field rather than as a loop over a table of checks because it runs
for every message of every datagram (``wire_checks``).  Bytes in and out are
``wire.py``'s business; import these classes from there.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, ClassVar, TypeAlias

import attrs

from meshlite._core.wire_checks import (
    Addr,
    DecodeError,
    check_addr,
    check_bool,
    check_bytes,
    check_meta,
    check_name,
    check_opt_bytes,
    check_str,
    check_str_list,
    check_uint,
)

__all__ = [
    "Ack",
    "Alive",
    "Dead",
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
    "message_from_wire",
]


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
    # A KV/session call forwarded to a Raft server over a sealed stream: routed by the
    # driver to meshlite._kv_serve before the SWIM core sees it (no class here).
    RPC = 12


def _arity(v: list[Any], n: int) -> None:
    if len(v) != n:
        raise DecodeError(f"wrong field count: {len(v)} for {n}")


@attrs.frozen
class NodeState:
    """One member as carried in a push/pull exchange."""

    name: str
    addr: Addr
    incarnation: int
    state: int  # a meshlite._core.events.Status value
    meta: dict[str, str] = attrs.field(factory=dict)

    @classmethod
    def from_wire(cls, v: Any) -> NodeState:
        if type(v) is not list:
            raise DecodeError("expected a node state")
        _arity(v, 5)
        return cls(
            check_name(v[0]), check_addr(v[1]), check_uint(v[2]), check_uint(v[3]), check_meta(v[4])
        )

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

    def _to_wire(self) -> list[Any]:
        return [Kind.PING, self.seq, self.target, self.source, list(self.source_addr)]

    @staticmethod
    def _from_wire(v: list[Any]) -> Ping:
        _arity(v, 5)
        return Ping(check_uint(v[1]), check_name(v[2]), check_name(v[3]), check_addr(v[4]))


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

    def _to_wire(self) -> list[Any]:
        return [
            Kind.INDIRECT_PING,
            self.seq,
            self.target,
            list(self.target_addr),
            self.nack,
            self.source,
            list(self.source_addr),
        ]

    @staticmethod
    def _from_wire(v: list[Any]) -> IndirectPing:
        _arity(v, 7)
        return IndirectPing(
            check_uint(v[1]),
            check_name(v[2]),
            check_addr(v[3]),
            check_bool(v[4]),
            check_name(v[5]),
            check_addr(v[6]),
        )


@attrs.frozen
class Ack:
    KIND: ClassVar[Kind] = Kind.ACK
    seq: int
    payload: bytes = b""

    def _to_wire(self) -> list[Any]:
        return [Kind.ACK, self.seq, self.payload]

    @staticmethod
    def _from_wire(v: list[Any]) -> Ack:
        _arity(v, 3)
        return Ack(check_uint(v[1]), check_bytes(v[2]))


@attrs.frozen
class Nack:
    """Lifeguard: the relay could not reach the target, but *we* are reachable."""

    KIND: ClassVar[Kind] = Kind.NACK
    seq: int

    def _to_wire(self) -> list[Any]:
        return [Kind.NACK, self.seq]

    @staticmethod
    def _from_wire(v: list[Any]) -> Nack:
        _arity(v, 2)
        return Nack(check_uint(v[1]))


@attrs.frozen
class Alive:
    KIND: ClassVar[Kind] = Kind.ALIVE
    incarnation: int
    node: str
    addr: Addr
    meta: dict[str, str] = attrs.field(factory=dict)

    def _to_wire(self) -> list[Any]:
        return [Kind.ALIVE, self.incarnation, self.node, list(self.addr), self.meta]

    @staticmethod
    def _from_wire(v: list[Any]) -> Alive:
        _arity(v, 5)
        return Alive(check_uint(v[1]), check_name(v[2]), check_addr(v[3]), check_meta(v[4]))


@attrs.frozen
class Suspect:
    KIND: ClassVar[Kind] = Kind.SUSPECT
    incarnation: int
    node: str
    sender: str

    def _to_wire(self) -> list[Any]:
        return [Kind.SUSPECT, self.incarnation, self.node, self.sender]

    @staticmethod
    def _from_wire(v: list[Any]) -> Suspect:
        _arity(v, 4)
        return Suspect(check_uint(v[1]), check_name(v[2]), check_name(v[3]))


@attrs.frozen
class Dead:
    """Dead, or — when ``sender == node`` — a graceful leave."""

    KIND: ClassVar[Kind] = Kind.DEAD
    incarnation: int
    node: str
    sender: str

    def _to_wire(self) -> list[Any]:
        return [Kind.DEAD, self.incarnation, self.node, self.sender]

    @staticmethod
    def _from_wire(v: list[Any]) -> Dead:
        _arity(v, 4)
        return Dead(check_uint(v[1]), check_name(v[2]), check_name(v[3]))


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

    def _to_wire(self) -> list[Any]:
        return [Kind.PUSH_PULL, self.join, [n.to_wire() for n in self.nodes], self.user_state]

    @staticmethod
    def _from_wire(v: list[Any]) -> PushPull:
        _arity(v, 4)
        join, nodes = check_bool(v[1]), v[2]
        if type(nodes) is not list:
            raise DecodeError("expected a list of node states")
        return PushPull(join, tuple(map(NodeState.from_wire, nodes)), check_bytes(v[3]))


@attrs.frozen
class User:
    """An opaque broadcast for higher layers (catalog updates ride on these)."""

    KIND: ClassVar[Kind] = Kind.USER
    payload: bytes

    def _to_wire(self) -> list[Any]:
        return [Kind.USER, self.payload]

    @staticmethod
    def _from_wire(v: list[Any]) -> User:
        _arity(v, 2)
        return User(check_bytes(v[1]))


@attrs.frozen
class KeyringRequest:
    """A keyring operation (``list``, ``install``, ``use``, ``remove``) sent to one member."""

    KIND: ClassVar[Kind] = Kind.KEYRING_REQUEST
    op: str
    key: bytes | None = None

    def _to_wire(self) -> list[Any]:
        return [Kind.KEYRING_REQUEST, self.op, self.key]

    @staticmethod
    def _from_wire(v: list[Any]) -> KeyringRequest:
        _arity(v, 3)
        return KeyringRequest(check_str(v[1]), check_opt_bytes(v[2]))


@attrs.frozen
class KeyringResponse:
    KIND: ClassVar[Kind] = Kind.KEYRING_RESPONSE
    ok: bool
    error: str
    keys: list[str] = attrs.field(factory=list)  # base64 of the installed keys, primary first

    def _to_wire(self) -> list[Any]:
        return [Kind.KEYRING_RESPONSE, self.ok, self.error, self.keys]

    @staticmethod
    def _from_wire(v: list[Any]) -> KeyringResponse:
        _arity(v, 4)
        return KeyringResponse(check_bool(v[1]), check_str(v[2]), check_str_list(v[3]))


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

_DECODERS: dict[int, Callable[[list[Any]], Message]] = {
    int(cls.KIND): cls._from_wire
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


def message_from_wire(v: Any) -> Message:
    """A checked message from its decoded msgpack value, or :class:`DecodeError`."""
    if type(v) is not list or not v:
        raise DecodeError("a message must be a non-empty array")
    kind = v[0]
    decode = _DECODERS.get(kind) if type(kind) is int else None
    if decode is None:
        raise DecodeError(f"unknown message kind {kind!r}")
    return decode(v)
