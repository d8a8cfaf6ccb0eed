"""What the simulation loop keeps per node and per stream, and the trace it hashes.

Theory of operation
-------------------
A :class:`Slot` is one life of one node in the loop (``meshlite.testing._engine``): its
core, whether it runs, the generation number that invalidates stale timers on the heap
(lazy deletion), and the backlog a stall queues.  A restart is a new slot under the old
name and address, so timers, streams and in-flight traffic tied to the previous life can
tell they are stale by identity.  A :class:`Stream` is one request/reply exchange in
flight.  :func:`record_input` folds every handled input into a BLAKE2 hash so that two
runs can be compared in one string (TigerBeetle's VOPR compares state checksums the
same way).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import Protocol

from meshlite._core.events import (
    Addr,
    Input,
    PacketReceived,
    StreamReceived,
    StreamReplied,
    TimerFired,
)

__all__ = ["SimCore", "SimulationError", "Slot", "Stream", "record_input"]

_PACK_EVENT = struct.Struct("<dB").pack
_TAG_PACKET, _TAG_STREAM_IN, _TAG_STREAM_OUT, _TAG_TIMER, _TAG_OTHER = range(5)


class SimulationError(AssertionError):
    """The simulated system broke a rule the simulator enforces (e.g. a timer livelock)."""


class SimCore(Protocol):
    """What the loop needs of a core (``SwimCore`` satisfies it as it is)."""

    def handle(self, inp: Input, now: float) -> Sequence[object]: ...

    def next_deadline(self) -> float: ...


class Slot:
    """One running (or stopped) node: its core plus the loop's bookkeeping for it."""

    __slots__ = (
        "addr",
        "backlog",
        "core",
        "deadline",
        "fired_at",
        "gen",
        "name",
        "name_bytes",
        "running",
        "spins",
        "stalled_until",
        "timers_first",
    )

    def __init__(self, name: str, addr: Addr, core: SimCore) -> None:
        self.name = name
        self.name_bytes = name.encode()
        self.addr = addr
        self.core = core
        self.running = True
        self.deadline = -1.0  # last deadline pushed on the heap; -1 forces a push
        self.gen = 0
        self.stalled_until = 0.0
        self.timers_first = False
        self.backlog: list[Input] = []
        self.fired_at = -1.0
        self.spins = 0


class Stream:
    """A request on its way, or awaiting its reply; removed when answered or timed out."""

    __slots__ = ("req_id", "requester", "server")

    def __init__(self, requester: Slot, req_id: int) -> None:
        self.requester = requester
        self.req_id = req_id
        self.server: Slot | None = None


def record_input(trace: hashlib.blake2b, now: float, slot: Slot, inp: Input) -> None:
    """Fold one handled input into the run's trace hash."""
    if isinstance(inp, PacketReceived):
        trace.update(_PACK_EVENT(now, _TAG_PACKET))
        trace.update(inp.data)
    elif isinstance(inp, StreamReceived):
        trace.update(_PACK_EVENT(now, _TAG_STREAM_IN))
        trace.update(inp.data)
    elif isinstance(inp, StreamReplied):
        trace.update(_PACK_EVENT(now, _TAG_STREAM_OUT))
        trace.update(inp.data or b"-")
    elif isinstance(inp, TimerFired):
        trace.update(_PACK_EVENT(now, _TAG_TIMER))
    else:
        trace.update(_PACK_EVENT(now, _TAG_OTHER))
        trace.update(repr(inp).encode())
    trace.update(slot.name_bytes)
