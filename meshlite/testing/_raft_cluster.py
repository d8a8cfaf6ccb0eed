"""The event loop, network and servers under a Raft simulation (no workload, no nemesis).

Theory of operation
-------------------
Everything that will happen is an entry ``(time, seq, kind, payload)`` in one binary
heap — a server's tick, a message arriving, a persisted Ready, a restart, and whatever
the subclass schedules (``raft_sim.py``: faults and clients).  ``seq`` breaks ties in
insertion order, and every random choice is drawn from one seeded ``random.Random`` in
event order, so a run is a pure function of its seed (FoundationDB's simulator;
TigerBeetle's VOPR; ``meshlite.testing._engine`` for SWIM).

The network carries messages as bytes (``encode_raft``/``decode_raft``, the real wire
format) and loses, duplicates, delays and reorders them; partitions are groups of
servers that cannot reach each other, checked when a message leaves and when it lands.

Persistence is synchronous by default: a server handles a Ready as soon as it has one
(persist, send, apply, advance), before the next event. With ``persist_s`` set, saving
takes simulated time, as a real driver's ``fsync`` in a worker thread does: the server
keeps stepping messages and ticking while its Ready is being saved, its messages leave
only once the save completes (a leader's at once: ``Ready.messages_first``; committed
entries already on disk are applied at once too), and a crash in between loses the Ready
— exactly what ``meshlite._raft_node`` does with ``RaftStorage`` (and etcd-io/raft
allows).
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable
from typing import Any

import attrs

from meshlite._core.raft import Entry, Message, RaftConfig, ReadState, decode_raft, encode_raft
from meshlite.errors import ConfigError
from meshlite.testing._raft_checks import SafetyChecker
from meshlite.testing._raft_node import SimServer

__all__ = ["Faults", "RaftCluster"]

TICK, DELIVER, PERSISTED, RESTART = range(4)


@attrs.frozen
class Faults:
    """What the network and the nemesis do to a run (probabilities are per message)."""

    loss: float = 0.05
    duplicate: float = 0.03
    reorder: float = 0.05
    delay_s: tuple[float, float] = (0.0005, 0.005)
    reorder_delay_s: float = 0.1
    nemesis_every_s: tuple[float, float] = (0.2, 1.5)
    down_s: tuple[float, float] = (0.1, 3.0)  # how long a crashed server stays down
    membership: bool = True  # remove and re-add voters during the run
    persist_s: tuple[float, float] = (0.0, 0.0)  # time one save takes; 0: synchronous


class RaftCluster:
    """Servers, clock, network and persistence; subclasses add a workload."""

    server_class: type[SimServer] = SimServer  # subclasses may run another state machine

    def __init__(
        self,
        seed: int,
        servers: int,
        faults: Faults,
        config: RaftConfig,
        checker: SafetyChecker,
        compact_every: tuple[int, int],
    ) -> None:
        if servers < 1:
            raise ConfigError(f"a simulated Raft cluster needs a server, got {servers}")
        self.seed = seed
        self.rng = random.Random(seed)
        self.faults = faults
        self.config = config
        self.checker = checker
        self.names = [f"s{i}" for i in range(servers)]
        self.servers = {n: self.server_class(n, config, checker) for n in self.names}
        self.now = 0.0
        self.events = self.crashes = 0
        self.group = dict.fromkeys(self.names, 0)  # partition group of each server
        self.heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._trace = hashlib.blake2b(digest_size=8)
        self.handlers: dict[int, Callable[[Any], None]] = {
            TICK: self._tick,
            DELIVER: self._deliver,
            PERSISTED: self._persisted,
            RESTART: self._restart,
        }
        for server in self.servers.values():
            server.compact_every = self.rng.randint(*compact_every)

    # -- the loop --------------------------------------------------------------------

    def at(self, when: float, kind: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self.heap, (when, self._seq, kind, payload))

    def drop_events(self, *kinds: int) -> None:
        self.heap = [e for e in self.heap if e[2] not in kinds]
        heapq.heapify(self.heap)

    def run_until(self, end: float, stop: Callable[[], bool] | None = None) -> None:
        """Run events up to time ``end``, or until ``stop()`` holds after one."""
        heap, handlers = self.heap, self.handlers
        while heap and heap[0][0] <= end:
            when, _, kind, payload = heapq.heappop(heap)
            self.now = when
            self.events += 1
            handlers[kind](payload)
            if stop is not None and stop():
                return
            heap = self.heap  # drop_events may have replaced it
        self.now = max(self.now, end)

    def trace(self) -> str:
        """A digest of every delivered message, in order: equal runs, equal traces."""
        return self._trace.hexdigest()

    # -- servers ---------------------------------------------------------------------

    def boot(self, server: SimServer, voters: list[str] | None = None) -> None:
        rng = random.Random(f"{self.seed}/{server.name}/{server.incarnation}")
        core = server.start(rng)
        if voters is not None:
            core.bootstrap(voters)
        phase = self.rng.uniform(0.0, self.config.tick_s)
        self.at(self.now + phase, TICK, (server.name, server.incarnation))
        self.process(server)

    def crash(self, name: str) -> None:
        server = self.servers[name]
        if server.core is not None:
            server.crash()
            self.crashes += 1
            self.at(self.now + self.rng.uniform(*self.faults.down_s), RESTART, name)

    def process(self, server: SimServer) -> None:
        """Let ``server`` handle its Readys (now, or through a timed save)."""
        core = server.core
        if core is None:
            return
        if self.faults.persist_s[1] <= 0.0:
            server.process(self.send, self.on_applied, self.on_read)
            return
        server.check_leader(core)
        if server.saving is None and core.has_ready():
            server.saving = rd = core.ready()
            server.begin(rd, self.send, self.on_applied)  # a leader replicates while it saves
            done = self.now + self.rng.uniform(*self.faults.persist_s)
            self.at(done, PERSISTED, (server.name, server.incarnation))

    def _persisted(self, payload: tuple[str, int]) -> None:
        server = self.servers[payload[0]]
        rd, core = server.saving, server.core
        if core is None or rd is None or server.incarnation != payload[1]:
            return  # crashed while saving: the Ready is lost, nothing was sent
        server.saving = None
        server.handle(core, rd, self.send, self.on_applied, self.on_read, begun=True)
        self.process(server)

    def _tick(self, payload: tuple[str, int]) -> None:
        server = self.servers[payload[0]]
        if server.core is None or server.incarnation != payload[1]:
            return
        server.core.tick()
        self.process(server)
        self.at(self.now + self.config.tick_s, TICK, payload)

    def _restart(self, name: str) -> None:
        server = self.servers[name]
        if server.core is None:
            self.boot(server)

    def on_applied(self, server: SimServer, entry: Entry) -> None:
        """A server applied ``entry`` (subclasses record acknowledgements)."""

    def on_read(self, server: SimServer, rs: ReadState) -> None:
        """A server confirmed a read (subclasses check it)."""

    # -- network ---------------------------------------------------------------------

    def blocked(self, a: str, b: str) -> bool:
        return self.group[a] != self.group[b]

    def send(self, msg: Message) -> None:
        f, rng = self.faults, self.rng
        if self.blocked(msg.frm, msg.to) or rng.random() < f.loss:
            return
        data = encode_raft(msg)
        for _ in range(2 if rng.random() < f.duplicate else 1):
            delay = rng.uniform(*f.delay_s)
            if rng.random() < f.reorder:
                delay += rng.uniform(0.0, f.reorder_delay_s)
            self.at(self.now + delay, DELIVER, data)

    def _deliver(self, data: bytes) -> None:
        self._trace.update(data)
        msg = decode_raft(data)
        server = self.servers[msg.to]
        if server.core is None or self.blocked(msg.frm, msg.to):
            return
        server.core.step(msg)
        self.process(server)
