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

Gossip is repetitive: each broadcast reaches every peer about ``retransmit_limit`` times
(SWIM §4.1) and only the first copy is news.  :func:`decode_packet` therefore remembers
the broadcasts it decoded (``Alive``, ``Suspect``, ``Dead``, ``User``) by their exact
bytes, in a bounded memo, and hands back the same frozen message when the same bytes
come again: most of a datagram is then only split into messages, not unpacked and
checked again.  The memo is invisible (decoding is a pure function of the bytes, and the
messages are immutable values: nobody may mutate one's ``meta``), so it lives at module
level and is shared by every core in the process — in the simulator, a thousand of them.
The message classes live in ``messages.py`` and their field checks in
``wire_checks.py``; import everything from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

from meshlite._core.messages import (
    Ack,
    Alive,
    Dead,
    IndirectPing,
    KeyringRequest,
    KeyringResponse,
    Kind,
    Message,
    Nack,
    NodeState,
    Ping,
    PushPull,
    Suspect,
    User,
    message_from_wire,
)
from meshlite._core.wire_checks import (
    MAX_META_BYTES,
    MAX_NAME_BYTES,
    Addr,
    DecodeError,
    check_name,
)

__all__ = [
    "MAX_META_BYTES",
    "MAX_NAME_BYTES",
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

# A full push/pull state for 10,000 members with modest meta is a few MiB; 32 MiB leaves
# room for catalogs (issue 3) while still bounding what one stream may make us allocate.
MAX_STREAM_BYTES = 32 * 1024 * 1024


# msgpack's own bounds, per collection, for a message of at most ``max_bytes``.
def _limits(max_bytes: int) -> dict[str, Any]:
    return {
        "raw": False,
        "strict_map_key": True,
        "max_str_len": max_bytes,
        "max_bin_len": max_bytes,
        "max_array_len": min(max_bytes, 1_000_000),
        "max_map_len": min(max_bytes, 100_000),
        "max_ext_len": 0,
    }


_PACKET_LIMITS = _limits(65_536)


def _unpack(data: bytes, max_bytes: int) -> Any:
    if len(data) > max_bytes:
        raise DecodeError("message too large")
    limits = _PACKET_LIMITS if max_bytes == 65_536 else _limits(max_bytes)
    try:
        return msgpack.unpackb(data, use_list=True, **limits)
    except Exception as exc:  # msgpack raises a zoo of types on garbage
        raise DecodeError(f"not msgpack: {type(exc).__name__}") from None


def encode_message(msg: Message) -> bytes:
    """One message, alone: the payload of a TCP frame, or a piece of a compound packet."""
    received = _RECEIVED.get(id(msg))  # an entry keeps its message alive: it is msg
    if received is not None and received[2]:  # a received broadcast, gossiped on
        return received[1]
    data: bytes = msgpack.packb(msg._to_wire(), use_bin_type=True)
    if received is not None and data == received[1]:
        _RECEIVED[id(msg)] = (msg, data, True)  # it came in canonical: reuse its bytes
    return data


def decode_message(data: bytes, max_bytes: int = MAX_STREAM_BYTES) -> Message:
    """Inverse of :func:`encode_message`; raises :class:`DecodeError` on anything else."""
    return message_from_wire(_unpack(data, max_bytes))


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

    A datagram whose envelope is broken, or that is not msgpack throughout, raises
    :class:`DecodeError`.  Inside a good envelope, one malformed or unknown message is
    skipped on its own (a newer peer may send kinds we do not know), and the caller
    learns nothing about it except by the count of returned messages.
    """
    if len(data) <= _SPLIT_MIN_BYTES:  # a probe or ack alone: just unpack it
        v = _unpack(data, max_bytes)
        if type(v) is not list or len(v) != 2 or type(v[1]) is not list:
            raise DecodeError("a packet is [sender, [messages...]]")
        return check_name(v[0]), _checked_messages(v[1])
    if len(data) > max_bytes:
        raise DecodeError("message too large")
    sender, pieces = _split_packet(data)
    out: list[Message] = []
    for piece in pieces:
        msg = _MEMO.get(piece)
        if msg is None:
            try:  # not msgpack: the whole datagram is garbage, as if unpacked at once
                # (unpackb's other bounds default to len(piece): they cannot bind)
                value = msgpack.unpackb(piece, max_ext_len=0)
            except Exception as exc:
                raise DecodeError(f"not msgpack: {type(exc).__name__}") from None
            try:
                msg = message_from_wire(value)
            except DecodeError:
                continue
            _remember(piece, msg)
        out.append(msg)
    return sender, out


def _checked_messages(values: list[Any]) -> list[Message]:
    out = []
    for value in values:
        try:
            out.append(message_from_wire(value))
        except DecodeError:
            continue
    return out


# Splitting a datagram into messages costs more than unpacking a small one whole, and a
# datagram this small carries a ping or an ack and a broadcast or two at most.
_SPLIT_MIN_BYTES = 128
# Broadcast kinds (the ones retransmitted) up to this size are memoised.  4,096 of them
# cover every broadcast in flight in a mesh of a couple of thousand peers; the bytes
# bound keeps the memo under ~3 MiB whatever peers send.
_MEMO_KINDS = frozenset({Alive, Suspect, Dead, User})
_MEMO_ENTRIES = 4096
_MEMO_MAX_MESSAGE_BYTES = 512
_MEMO: dict[bytes, Message] = {}
# The other way round, by id(message): each memoised message with its bytes, and whether
# those are exactly what encode_message writes (checked the first time it is encoded), so
# gossiping a received broadcast on costs no msgpack either.  Each entry holds its
# message, so that id cannot be reused while the entry exists.
_RECEIVED: dict[int, tuple[Message, bytes, bool]] = {}


def _remember(piece: bytes, msg: Message) -> None:
    if type(msg) in _MEMO_KINDS and len(piece) <= _MEMO_MAX_MESSAGE_BYTES:
        if len(_MEMO) >= _MEMO_ENTRIES:
            # Start over rather than evict one by one: O(1) amortised, and the
            # broadcasts still in flight are back within a gossip round.
            _MEMO.clear()
            _RECEIVED.clear()
        _MEMO[piece] = msg
        _RECEIVED[id(msg)] = (msg, piece, False)


def _split_packet(data: bytes) -> tuple[str, list[bytes]]:
    """The sender and each message's bytes, without unpacking the messages.

    ``skip`` walks each message's msgpack structure; the bytes of one seen before are
    known to be valid, and new ones are unpacked in full by the caller.  Trailing bytes
    are an error, as for ``unpackb``.
    """
    # Its other bounds default to max_buffer_size, which no value inside data can exceed.
    unpacker = msgpack.Unpacker(None, max_buffer_size=len(data), max_ext_len=0)
    unpacker.feed(data)
    pieces = []
    try:
        fields = unpacker.read_array_header()
        sender = unpacker.unpack()
        count = unpacker.read_array_header()
        start = unpacker.tell()
        for _ in range(count):  # each message is at least one byte: bounded by len(data)
            unpacker.skip()
            end = unpacker.tell()
            pieces.append(data[start:end])
            start = end
    except Exception as exc:  # msgpack raises a zoo of types on garbage
        raise DecodeError(f"not a packet: {type(exc).__name__}") from None
    if fields != 2 or start != len(data):
        raise DecodeError("a packet is [sender, [messages...]] and nothing after it")
    return check_name(sender), pieces


def peek_kind(data: bytes) -> int | None:
    """The kind of an encoded message without decoding it (``None`` if not obvious).

    Lets the driver route keyring requests before handing push/pull states (possibly MiBs)
    to the core, which decodes them once.
    """
    if len(data) >= 2 and 0x91 <= data[0] <= 0x9F and data[1] < 0x80:
        return data[1]
    return None
