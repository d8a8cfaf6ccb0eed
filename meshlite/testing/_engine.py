"""The discrete-event loop that runs many sans-I/O cores in one thread.

Theory of operation
-------------------
Everything that will happen is an entry ``(time, seq, callback, arg)`` in one binary heap:
a core's next timer (``next_deadline()``), a datagram in flight, one leg of a stream, a
stall ending, a test's own scheduled action.  The loop pops the earliest entry, moves the
:class:`~meshlite.testing.SimClock` there and runs it; ``seq`` (a counter) breaks ties in
insertion order, so equal times never depend on anything but the seed.  This is
FoundationDB's simulator and TigerBeetle's VOPR in miniature; the cores cannot tell it
from the real driver, because both speak the vocabulary of ``meshlite._core.events``.

The loop is generic: it knows only the transport effects (``SendPacket``, ``SendStream``,
``ReplyStream``) and the transport inputs (``PacketReceived``, ``StreamReceived``,
``StreamReplied``, ``TimerFired``).  A core of any layer (SWIM, catalog, Raft) plugs in
through the :class:`SimCore` protocol; whatever else it returns is its adapter's business
(``meshlite.testing._swim.SwimNode`` is the SWIM one).

Timers use lazy deletion: each node has a generation number, bumped whenever its
deadline changes, and a popped timer whose generation is stale is ignored.  A *stalled*
node (a blocked event loop, a GC pause) queues its inputs and timers and takes them all
at once when the stall ends — the situation Lifeguard (Dadgar et al., 2018, §3) is about.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from meshlite._core.events import (
    Addr,
    Input,
    PacketReceived,
    ReplyStream,
    SendPacket,
    SendStream,
    StreamReceived,
    StreamReplied,
    TimerFired,
)
from meshlite.errors import ConfigError
from meshlite.testing._clock import SimClock
from meshlite.testing._network import SimNetwork
from meshlite.testing._slot import SimCore, SimulationError, Slot, Stream, record_input

__all__ = ["SimCore", "Simulation", "SimulationError"]

# A core whose deadline stays in the past after TimerFired would spin forever at one
# instant; no sane core needs more than a handful of wake-ups per instant.
_MAX_SPINS = 1000
_TIMER = TimerFired()


class Simulation:
    """Runs any number of :class:`SimCore` nodes on a simulated clock and network.

    ``seed`` seeds the per-node random generators (:meth:`node_rng`) and, unless a
    ``network`` is given, the network.  Same seed, same cores, same calls: same run.
    """

    def __init__(
        self,
        seed: int,
        network: SimNetwork | None = None,
        clock: SimClock | None = None,
        *,
        trace: bool = True,
    ) -> None:
        self.seed = seed
        self.clock = clock if clock is not None else SimClock()
        self.network = network if network is not None else SimNetwork(seed)
        self.network._attach(self.call_at, self.clock)
        self._heap: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._seq = 0
        self._slots: dict[str, Slot] = {}
        self._by_addr: dict[Addr, Slot] = {}
        self._streams: dict[int, Stream] = {}
        self._next_stream = 0
        self._checkers: list[Callable[[Simulation], None]] = []
        self._trace = hashlib.blake2b(digest_size=16) if trace else None
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "events",
                "inputs",
                "timers",
                "to_stopped",
                "unknown_dst",
                "streams",
                "stream_timeouts",
            ),
            0,
        )

    # ------------------------------------------------------------------ nodes

    def node_rng(self, name: str, generation: int = 0) -> random.Random:
        """The seeded random generator for one life of one node."""
        return random.Random(f"meshlite-sim:{self.seed}:{name}:{generation}")

    def add(self, name: str, addr: Addr, core: SimCore) -> None:
        """Start a node (or restart a stopped one under its old name and address)."""
        old = self._slots.get(name)
        if old is not None and old.running:
            raise ConfigError(f"node {name!r} is already running; stop() it first")
        other = self._by_addr.get(addr)
        if other is not None and other.running and other.name != name:
            raise ConfigError(f"address {addr!r} is already used by node {other.name!r}")
        slot = Slot(name, addr, core)
        self._slots[name] = slot
        self._by_addr[addr] = slot
        self._reschedule(slot)

    def stop(self, name: str) -> None:
        """Stop a node at once: no more inputs, timers or traffic to or from it."""
        slot = self._slot(name)
        slot.running = False
        slot.backlog = []

    def core(self, name: str) -> SimCore:
        """The core of ``name`` (also after it stopped, for post-mortems)."""
        return self._slot(name).core

    def addr_of(self, name: str) -> Addr:
        return self._slot(name).addr

    def is_running(self, name: str) -> bool:
        return self._slot(name).running

    def names(self) -> list[str]:
        """Every node ever added, in the order added."""
        return list(self._slots)

    def running_names(self) -> list[str]:
        return [s.name for s in self._slots.values() if s.running]

    def feed(self, name: str, inp: Input) -> None:
        """Hand ``name`` an input now (an application call such as ``JoinRequested``)."""
        slot = self._slot(name)
        if not slot.running:
            raise ConfigError(f"node {name!r} is stopped; cannot feed it {inp!r}")
        self._input(slot, inp)

    def stall(self, name: str, seconds: float, *, timers_first: bool = False) -> None:
        """Freeze ``name`` for ``seconds``: inputs and timers queue up and are taken all at
        once when it wakes, as after a blocked event loop or a long GC pause.

        On waking, the queued inputs go first and then the overdue timer, as asyncio
        orders ready I/O before expired timers; ``timers_first=True`` fires the timer
        first, the harsher case where a slow process times out acks that did arrive.
        """
        if not seconds > 0:
            raise ConfigError(f"stall seconds must be > 0, got {seconds!r}")
        slot = self._slot(name)
        until = self.clock.now + seconds
        if until > slot.stalled_until:
            slot.stalled_until = until
            slot.timers_first = timers_first
            self.call_at(until, self._unstall, slot)

    def _slot(self, name: str) -> Slot:
        slot = self._slots.get(name)
        if slot is None:
            raise ConfigError(f"no node named {name!r} in this simulation")
        return slot

    # ------------------------------------------------------------------ running

    def call_at(self, t: float, fn: Callable[[Any], None], arg: Any = None) -> None:
        """Schedule ``fn(arg)`` at simulated time ``t`` (not before now)."""
        self._seq += 1
        now = self.clock._now
        heapq.heappush(self._heap, (t if t > now else now, self._seq, fn, arg))

    def add_checker(self, fn: Callable[[Simulation], None]) -> None:
        """Call ``fn(sim)`` after every event; raise ``AssertionError`` to fail the run."""
        self._checkers.append(fn)

    def run_for(self, seconds: float) -> None:
        """Process every event in the next ``seconds`` of simulated time."""
        if not seconds >= 0:
            raise ConfigError(f"run_for seconds must be >= 0, got {seconds!r}")
        end = self.clock._now + seconds
        try:
            self._run_to(end)
        except Exception as exc:
            exc.add_note(f"meshlite simulation failed at simulated t={self.clock._now:.6f}s")
            replay = f"replay with MESHLITE_SEED={self.seed}"
            if replay not in getattr(exc, "__notes__", ()):
                exc.add_note(replay)
            raise
        self.clock.advance_to(end)

    def run_until(
        self, predicate: Callable[[], bool], timeout_s: float, *, poll_s: float = 0.1
    ) -> bool:
        """Run until ``predicate()`` holds (checked every ``poll_s`` simulated seconds) or
        ``timeout_s`` passes; return whether it held."""
        if not poll_s > 0:
            raise ConfigError(f"poll_s must be > 0, got {poll_s!r}")
        deadline = self.clock.now + timeout_s
        while not predicate():
            left = deadline - self.clock.now
            if left <= 0:
                return False
            self.run_for(min(poll_s, left))
        return True

    def _run_to(self, end: float) -> None:
        heap = self._heap
        pop = heapq.heappop
        clock = self.clock
        checkers = self._checkers
        count = 0
        try:
            while heap and heap[0][0] <= end:
                t, _, fn, arg = pop(heap)
                clock._now = t
                fn(arg)
                count += 1
                for check in checkers:
                    check(self)
        finally:
            self.stats["events"] += count

    def trace_digest(self) -> str:
        """A hash of every input every node handled, with its time: equal digests mean
        identical runs.  Requires ``trace=True`` (the default)."""
        if self._trace is None:
            raise ConfigError("this Simulation was created with trace=False")
        return self._trace.hexdigest()

    # ------------------------------------------------------------------ inputs & timers

    def _input(self, slot: Slot, inp: Input) -> None:
        now = self.clock._now
        if slot.stalled_until > now:
            slot.backlog.append(inp)
            return
        trace = self._trace
        if trace is not None:
            record_input(trace, now, slot, inp)
        self.stats["inputs"] += 1
        effects = slot.core.handle(inp, now)
        if effects:
            self._effects(slot, effects)
        self._reschedule(slot)

    def _reschedule(self, slot: Slot) -> None:
        if not slot.running:
            return
        deadline = slot.core.next_deadline()
        if deadline == slot.deadline:
            return
        slot.deadline = deadline
        slot.gen += 1
        if deadline != math.inf:
            self.call_at(deadline, self._fire, (slot, slot.gen))

    def _fire(self, arg: tuple[Slot, int]) -> None:
        slot, gen = arg
        if gen != slot.gen or not slot.running:
            return
        now = self.clock._now
        if slot.stalled_until > now:
            return  # _unstall reschedules
        if now == slot.fired_at:
            slot.spins += 1
            if slot.spins > _MAX_SPINS:
                raise SimulationError(
                    f"node {slot.name!r} livelocked: next_deadline() stays <= now={now}"
                )
        else:
            slot.fired_at = now
            slot.spins = 0
        slot.deadline = -1.0
        self.stats["timers"] += 1
        self._input(slot, _TIMER)

    def _unstall(self, slot: Slot) -> None:
        if not slot.running or slot.stalled_until > self.clock._now:
            return
        backlog, slot.backlog = slot.backlog, []
        if slot.timers_first and slot.core.next_deadline() <= self.clock._now:
            slot.deadline = -1.0
            self._input(slot, _TIMER)
        for inp in backlog:
            self._input(slot, inp)
        slot.deadline = -1.0
        self._reschedule(slot)

    # ------------------------------------------------------------------ transport

    def _effects(self, slot: Slot, effects: Sequence[object]) -> None:
        for eff in effects:
            cls = type(eff)
            if cls is SendPacket:
                self._send_packet(slot, eff)  # type: ignore[arg-type]
            elif cls is SendStream:
                self._send_stream(slot, eff)  # type: ignore[arg-type]
            elif cls is ReplyStream:
                self._reply_stream(slot, eff)  # type: ignore[arg-type]

    def _send_packet(self, src: Slot, eff: SendPacket) -> None:
        dst = self._by_addr.get(eff.dst)
        if dst is None:
            self.stats["unknown_dst"] += 1
            return
        now = self.clock._now
        arg = (src, eff.dst, eff.data)
        for delay in self.network._plan_datagram(src.name, dst.name):
            self.call_at(now + delay, self._arrive_packet, arg)

    def _arrive_packet(self, arg: tuple[Slot, Addr, bytes]) -> None:
        src, dst_addr, data = arg
        dst = self._by_addr[dst_addr]
        if not (src.running and dst.running):
            self.stats["to_stopped"] += 1
            return
        if self.network._admit(src.name, dst.name, self._arrive_packet, arg):
            self._input(dst, PacketReceived(src.addr, data))

    def _send_stream(self, src: Slot, eff: SendStream) -> None:
        self._next_stream += 1
        sid = self._next_stream
        self._streams[sid] = Stream(src, eff.req_id)
        self.stats["streams"] += 1
        now = self.clock._now
        self.call_at(now + eff.timeout_s, self._stream_timeout, sid)
        dst = self._by_addr.get(eff.dst)
        if dst is None or not dst.running:
            return
        delay = self.network._plan_stream(src.name, dst.name)
        if delay is not None:
            self.call_at(now + delay, self._arrive_request, (sid, src, eff.dst, eff.data))

    def _arrive_request(self, arg: tuple[int, Slot, Addr, bytes]) -> None:
        sid, src, dst_addr, data = arg
        stream = self._streams.get(sid)
        dst = self._by_addr[dst_addr]
        if stream is None or not (src.running and dst.running):
            return
        if self.network._admit(src.name, dst.name, self._arrive_request, arg):
            stream.server = dst
            self._input(dst, StreamReceived(sid, src.addr, data))

    def _reply_stream(self, server: Slot, eff: ReplyStream) -> None:
        stream = self._streams.get(eff.stream_id)
        if stream is None or stream.server is not server:
            return  # the requester already timed out (or a confused core)
        delay = self.network._plan_stream(server.name, stream.requester.name)
        if delay is not None:
            arg = (eff.stream_id, server, eff.data)
            self.call_at(self.clock._now + delay, self._arrive_reply, arg)

    def _arrive_reply(self, arg: tuple[int, Slot, bytes]) -> None:
        sid, server, data = arg
        stream = self._streams.get(sid)
        if stream is None or not (server.running and stream.requester.running):
            return
        if self.network._admit(server.name, stream.requester.name, self._arrive_reply, arg):
            del self._streams[sid]
            self._input(stream.requester, StreamReplied(stream.req_id, data))

    def _stream_timeout(self, sid: int) -> None:
        stream = self._streams.pop(sid, None)
        if stream is None:
            return
        self.stats["stream_timeouts"] += 1
        if stream.requester.running:
            self._input(stream.requester, StreamReplied(stream.req_id, None))
