"""Channel binding: one replay-cache entry per TCP channel, not one per frame.

Theory of operation
-------------------
A channel (``meshlite._transport``) is a long-lived one-way TCP stream of sealed frames;
Raft sends thousands of them a second to each follower.  Opened one by one with
:meth:`Sealer.open`, every frame would take a slot in the shared :class:`ReplayCache`
(16,384 nonces): the cache would then span only a second or two, a frame or datagram
delayed longer would be refused as stale, and the cache would churn.  Instead, frames
are bound to their channel, as TLS binds records to a connection with sequence numbers
(RFC 8446 §5.3).  The opener picks a random channel id; frame ``n``'s plaintext is::

    0xC1 | channel_id(16) | n(8, big-endian) | payload

Frame 0 is sealed with :meth:`Sealer.seal` and opened with :meth:`Sealer.open` (nonce
cache and time window); frames 1, 2, ... with :meth:`Sealer.seal_in_channel` and
:meth:`Sealer.open_in_channel` (tag and window, no cache).  The receiver keeps the id and
the next ``n`` of each connection and refuses -- closing the channel -- any frame with
another id or another ``n``.  Why nothing can be replayed:

* *A recorded channel, replayed on a new connection*: its frame 0 is refused by the
  nonce cache (the cache's invariant: an accepted nonce is remembered or older than its
  floor).  No other frame can start a connection: the first frame must have ``n = 0``,
  and later frames do not authenticate with :meth:`Sealer.open` (another AAD).
* *A frame spliced in from another channel*: another channel id.
* *A frame replayed, dropped or reordered within the connection*: ``n`` is not next.
* *A channel frame sent as a datagram or a one-shot stream*: a later frame fails the
  tag there; frame 0 opens, once, but its plaintext starts with 0xC1, the one byte
  msgpack never uses, so neither the wire decoder nor the Raft decoder accepts it.

The window is still checked on every frame, so a stream held back for longer than the
window is refused too.  Channel ids are 128 random bits: two channels of a cluster share
one with probability ~c^2 / 2^129 after c channels, negligible for any c.  The receiver
holds 25 bytes of state per connection, and the cache one nonce per channel.
"""

from __future__ import annotations

import os
from typing import Final

from meshlite._crypto import AuthError, Sealer

__all__ = [
    "CHANNEL_FRAME_TAG",
    "CHANNEL_HEADER_BYTES",
    "CHANNEL_ID_BYTES",
    "ChannelOpener",
    "ChannelSealer",
    "channel_header",
    "parse_channel_header",
]

# The first plaintext byte of every channel frame: 0xC1 is "never used" in msgpack, so a
# channel frame can never decode as a wire message or a Raft message (both msgpack).
CHANNEL_FRAME_TAG: Final = b"\xc1"
# 128 random bits: channel ids never repeat by accident (see the module docstring).
CHANNEL_ID_BYTES: Final = 16
# Big-endian frame number: 2^64 frames outlast any connection.
SEQ_BYTES: Final = 8
CHANNEL_HEADER_BYTES: Final = len(CHANNEL_FRAME_TAG) + CHANNEL_ID_BYTES + SEQ_BYTES  # 25
_SEQ_AT: Final = len(CHANNEL_FRAME_TAG) + CHANNEL_ID_BYTES


def channel_header(channel_id: bytes, seq: int) -> bytes:
    """The plaintext prefix of frame ``seq`` of channel ``channel_id``."""
    if len(channel_id) != CHANNEL_ID_BYTES:
        raise ValueError(f"a channel id is {CHANNEL_ID_BYTES} bytes, got {len(channel_id)}")
    return CHANNEL_FRAME_TAG + channel_id + seq.to_bytes(SEQ_BYTES, "big")


def parse_channel_header(plaintext: bytes) -> tuple[bytes, int] | None:
    """``(channel_id, seq)`` of an opened channel frame, or ``None`` if it has no header."""
    if len(plaintext) < CHANNEL_HEADER_BYTES or plaintext[:1] != CHANNEL_FRAME_TAG:
        return None
    seq = int.from_bytes(plaintext[_SEQ_AT:CHANNEL_HEADER_BYTES], "big")
    return plaintext[1:_SEQ_AT], seq


class ChannelSealer:
    """The sending side of one channel: stamps the id and the next frame number, seals.

    Frames must leave in the order they were sealed (the transport's ``Channel`` seals
    under its send lock); a sealed frame that is never sent leaves a gap, which makes the
    receiver close the channel.
    """

    def __init__(self, sealer: Sealer, channel_id: bytes | None = None) -> None:
        self._sealer = sealer
        self.channel_id = os.urandom(CHANNEL_ID_BYTES) if channel_id is None else channel_id
        channel_header(self.channel_id, 0)  # validates the id's length
        self.seq = 0  # the number of the next frame

    def seal(self, payload: bytes, now_s: float) -> bytes:
        seq = self.seq
        plaintext = channel_header(self.channel_id, seq) + payload
        if seq == 0:
            frame = self._sealer.seal(plaintext, now_s)
        else:
            frame = self._sealer.seal_in_channel(plaintext, now_s)
        self.seq = seq + 1
        return frame


class ChannelOpener:
    """The receiving side of one channel connection: opens frames in order, or refuses.

    ``open`` returns a frame's payload or raises :class:`AuthError` (reason ``"channel"``
    for a wrong id, frame number or header; the sealer's reasons otherwise).  After one
    refusal every later frame is refused too: the caller closes the connection.
    """

    def __init__(self, sealer: Sealer) -> None:
        self._sealer = sealer
        self.channel_id: bytes | None = None  # learnt from frame 0
        self.next_seq = 0
        self.refused = False

    def open(self, frame: bytes, now_s: float) -> bytes:
        if self.refused:
            raise AuthError("channel", "this channel already refused a frame")
        try:
            payload = self._open(frame, now_s)
        except AuthError:
            self.refused = True
            raise
        self.next_seq += 1
        return payload

    def _open(self, frame: bytes, now_s: float) -> bytes:
        first = self.channel_id is None
        if first:
            plaintext = self._sealer.open(frame, now_s)  # nonce cache: one replay, refused
        else:
            plaintext = self._sealer.open_in_channel(frame, now_s)
        header = parse_channel_header(plaintext)
        if header is None:
            raise AuthError("channel", "a frame without a channel header")
        channel_id, seq = header
        if not first and channel_id != self.channel_id:
            raise AuthError("channel", "a frame of another channel (spliced in?)")
        if seq != self.next_seq:
            raise AuthError(
                "channel", f"frame {seq} where {self.next_seq} was due (replayed or reordered?)"
            )
        self.channel_id = channel_id
        return plaintext[CHANNEL_HEADER_BYTES:]
