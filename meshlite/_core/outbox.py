"""The effects one ``SwimCore.handle`` call produces, and datagram assembly.

Theory of operation
-------------------
Every datagram the core sends is a compound packet (``wire.encode_packet``): the
message(s) it was sent for — a ping, an ack — followed by as many queued broadcasts as
fit in ``udp_buffer_bytes``.  That is SWIM's piggybacking (Das et al. 2002, §4.1) and
memberlist's ``sendMsg``/``getBroadcasts``: membership news rides free on probe traffic,
and a gossip tick only sends packets when there is news.

The compound format has no per-message framing (messages are concatenated msgpack
arrays), so the per-message overhead is 0; the fixed envelope is bounded by
``wire.packet_overhead``.  An :class:`Outbox` lives for one ``handle`` call: the core and
its helpers append effects, and ``handle`` returns ``outbox.effects``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from meshlite._core.broadcasts import TransmitLimitedQueue
from meshlite._core.events import Addr, Effect, Log, MemberChanged, MemberEvent, SendPacket
from meshlite._core.wire import Message, encode_message, encode_packet, packet_overhead

__all__ = ["DEBUG", "ERROR", "INFO", "WARNING", "Outbox", "message_budget_bytes"]

# ``Log.level`` uses the standard ``logging`` numbers; spelled out here because a core
# does not touch the logging module.
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40

# Broadcasts are bare msgpack arrays inside the compound array: no length prefix.
PER_MESSAGE_OVERHEAD_BYTES = 0
# wire.packet_overhead sizes the array header for at least 16 entries (3 bytes), which
# covers any count a 64 KiB datagram can hold.
_ENVELOPE_COUNT = 16


def message_budget_bytes(name: str, udp_buffer_bytes: int) -> int:
    """Room for messages in one datagram from ``name``: the buffer minus the envelope."""
    return udp_buffer_bytes - packet_overhead(name, _ENVELOPE_COUNT)


class Outbox:
    """Collects effects; assembles datagrams with piggybacked broadcasts."""

    __slots__ = ("_budget_bytes", "_name", "_queue", "_stats", "effects", "events")

    def __init__(
        self, name: str, budget_bytes: int, queue: TransmitLimitedQueue, stats: Counter[str]
    ) -> None:
        self._name = name
        self._queue = queue
        self._stats = stats
        self._budget_bytes = budget_bytes
        self.effects: list[Effect] = []
        # The MemberChanged ones again, for the core; created by the first one (most
        # inputs have none, and an Outbox is made for every packet).
        self.events: list[MemberEvent] | None = None

    def send(self, dst: Addr, messages: Sequence[Message]) -> None:
        """One datagram to ``dst``: ``messages`` first, then broadcasts that fit."""
        encoded = [encode_message(m) for m in messages]
        room = self._budget_bytes - sum(len(e) for e in encoded)
        if room > 0:
            encoded.extend(self._queue.get_broadcasts(PER_MESSAGE_OVERHEAD_BYTES, room))
        self.effects.append(SendPacket(dst, encode_packet(self._name, encoded)))
        self._stats["udp_sent"] += 1

    def gossip(self, dst: Addr) -> bool:
        """A datagram of broadcasts only; ``False`` (nothing sent) if the queue is empty."""
        encoded = self._queue.get_broadcasts(PER_MESSAGE_OVERHEAD_BYTES, self._budget_bytes)
        if not encoded:
            return False
        self.effects.append(SendPacket(dst, encode_packet(self._name, encoded)))
        self._stats["udp_sent"] += 1
        self._stats["gossip_sent"] += 1
        return True

    def emit(self, effect: Effect) -> None:
        self.effects.append(effect)

    def event(self, event: MemberEvent) -> None:
        self.effects.append(MemberChanged(event))
        if self.events is None:
            self.events = []
        self.events.append(event)

    def log(self, level: int, message: str) -> None:
        self.effects.append(Log(level, message))
