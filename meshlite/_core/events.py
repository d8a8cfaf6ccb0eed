"""The vocabulary between the SWIM core and whatever drives it.

Inputs are past-tense facts the driver observed (a packet arrived, a stream replied,
time passed).  Effects are imperatives the core asks the driver to carry out (send this
datagram, open this stream, tell the application this member changed).  The real driver
(``meshlite._driver``) and the simulator (``meshlite.testing``) are the two drivers; the
core cannot tell them apart, which is what makes seeded replays possible.

Packets and stream payloads here are *plaintext*: encryption is the driver's job.
"""

from __future__ import annotations

import enum
from typing import TypeAlias

import attrs

from meshlite._core.wire import Addr

__all__ = [
    "Addr",
    "Effect",
    "Input",
    "JoinRequested",
    "LeaveRequested",
    "Log",
    "Member",
    "MemberChanged",
    "MemberEvent",
    "MemberEventKind",
    "MetaChanged",
    "PacketReceived",
    "ReplyStream",
    "SendPacket",
    "SendStream",
    "Status",
    "StreamReceived",
    "StreamReplied",
    "TimerFired",
    "UserBroadcast",
    "UserMessage",
    "UserStateMerged",
]


class Status(enum.IntEnum):
    """A member's state; the integer is what push/pull carries on the wire."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3

    def __str__(self) -> str:
        return self.name.lower()


@attrs.frozen
class Member:
    """A peer as this peer currently sees it (public; re-exported as ``meshlite.Member``)."""

    name: str
    address: str
    port: int
    status: str  # "alive" | "suspect" | "dead" | "left"
    incarnation: int
    meta: dict[str, str] = attrs.field(factory=dict)
    server: bool = False
    leader: bool = False


class MemberEventKind(enum.Enum):
    JOIN = "join"
    UPDATE = "update"  # meta or address changed
    SUSPECT = "suspect"
    ALIVE = "alive"  # refuted a suspicion, or came back from dead
    DEAD = "dead"
    LEFT = "left"
    REAP = "reap"  # forgotten after gossip_to_the_dead_s

    def __str__(self) -> str:
        return self.value


@attrs.frozen
class MemberEvent:
    """One change to the member table, as ``Mesh.watch_members()`` yields it."""

    kind: MemberEventKind
    member: Member


# ----------------------------------------------------------------------------- inputs


@attrs.frozen
class PacketReceived:
    """A datagram arrived (already authenticated and decrypted)."""

    src: Addr
    data: bytes


@attrs.frozen
class StreamReceived:
    """A peer opened a stream and sent one request; answer with :class:`ReplyStream`."""

    stream_id: int
    src: Addr
    data: bytes


@attrs.frozen
class StreamReplied:
    """The answer to our :class:`SendStream` ``req_id``; ``data=None`` means it failed."""

    req_id: int
    data: bytes | None


@attrs.frozen
class TimerFired:
    """``now`` reached the core's ``next_deadline()`` (spurious wake-ups are harmless)."""


@attrs.frozen
class JoinRequested:
    """The application asks to join through these seed addresses."""

    seeds: tuple[Addr, ...]


@attrs.frozen
class LeaveRequested:
    """The application is leaving gracefully."""


@attrs.frozen
class MetaChanged:
    meta: dict[str, str]


@attrs.frozen
class UserBroadcast:
    """Gossip an opaque payload to every member; a newer broadcast with the same ``key``
    replaces an older one still queued (used by the catalog layer)."""

    key: str
    payload: bytes


Input: TypeAlias = (
    PacketReceived
    | StreamReceived
    | StreamReplied
    | TimerFired
    | JoinRequested
    | LeaveRequested
    | MetaChanged
    | UserBroadcast
)

# ----------------------------------------------------------------------------- effects


@attrs.frozen
class SendPacket:
    dst: Addr
    data: bytes


@attrs.frozen
class SendStream:
    """Open a stream to ``dst``, send ``data``, await one reply; feed back ``StreamReplied``."""

    req_id: int
    dst: Addr
    data: bytes
    timeout_s: float


@attrs.frozen
class ReplyStream:
    stream_id: int
    data: bytes


@attrs.frozen
class MemberChanged:
    event: MemberEvent


@attrs.frozen
class UserMessage:
    """A user broadcast arrived (every copy: the application dedups, and relays news)."""

    payload: bytes


@attrs.frozen
class UserStateMerged:
    """A push/pull exchange delivered a peer's opaque full user state."""

    state: bytes
    join: bool


@attrs.frozen
class Log:
    """Something an operator should read; the driver routes it to ``logging``."""

    level: int  # logging.INFO, logging.WARNING, ...
    message: str


Effect: TypeAlias = (
    SendPacket | SendStream | ReplyStream | MemberChanged | UserMessage | UserStateMerged | Log
)
