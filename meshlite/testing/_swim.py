"""A simulated SWIM mesh: ``SwimCore``s on the simulation loop, and what tests ask of them.

Theory of operation
-------------------
Everything SWIM-specific in the simulator lives here; the loop and the network
(``_engine``, ``_network``) know nothing of membership.  :class:`SwimNode` adapts one
``SwimCore`` to the loop and watches its ``MemberChanged`` effects, keeping that node's
view of the mesh up to date incrementally, so asking "has the mesh converged?" costs a
set comparison per node instead of rebuilding every member table (which, at 1,000 peers,
would cost a million ``Member`` objects per question).  :class:`SimCluster` creates the
peers, joins each through a few seeds picked among the peers started before it (as a
deployment with a handful of well-known seeds does), injects the failures the SWIM and
Lifeguard papers discuss — crash (kill), graceful leave, a stalled process, partitions
and lossy links — and records every membership change with its simulated time.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar

import attrs

from meshlite._core.config import SwimConfig
from meshlite._core.events import (
    Addr,
    Input,
    JoinRequested,
    LeaveRequested,
    Log,
    Member,
    MemberChanged,
    MemberEvent,
    MemberEventKind,
)
from meshlite.errors import ConfigError
from meshlite.testing._engine import Simulation
from meshlite.testing._network import SimNetwork

__all__ = ["MemberRecord", "SimCluster", "SwimLike", "SwimNode"]

PORT = 7946  # labels only: simulated peers never open sockets
# Three seeds per joiner: one seed suffices to join, a few survive a dead seed; Consul's
# docs recommend listing three to five servers in retry_join.
DEFAULT_JOIN_SEEDS = 3


class SwimLike(Protocol):
    """The part of ``SwimCore``'s contract the simulator uses."""

    def handle(self, inp: Input, now: float) -> Sequence[object]: ...

    def next_deadline(self) -> float: ...

    def members(self) -> list[Member]: ...

    def member(self, name: str) -> Member | None: ...

    def pending_broadcasts(self) -> int: ...


_T = TypeVar("_T")

CoreFactory = Callable[..., SwimLike]
"""Called as ``SwimCore(name, addr, config, rng, now, meta=..., local_state=...)``."""


@attrs.frozen
class MemberRecord:
    """One ``MemberChanged`` effect: at ``time_s``, ``viewer`` saw ``member`` change."""

    time_s: float
    viewer: str
    kind: MemberEventKind
    member: str
    status: str
    incarnation: int


def sim_addr(index: int) -> Addr:
    """``("10.0.x.y", 7946)`` for the node with this index (labels, never sockets)."""
    if not 0 <= index < 65535:
        raise ConfigError(f"the simulator labels at most 65,535 nodes, got index {index}")
    n = index + 1  # skip 10.0.0.0
    return (f"10.0.{n >> 8}.{n & 255}", PORT)


class SwimNode:
    """Adapts one SWIM core to the loop and keeps its view from its own events."""

    __slots__ = ("_cluster", "alive", "core", "name", "view")

    def __init__(self, name: str, core: SwimLike, cluster: SimCluster) -> None:
        self.name = name
        self.core = core
        self._cluster = cluster
        self.view: dict[str, str] = {m.name: m.status for m in core.members()}
        self.alive: set[str] = {n for n, s in self.view.items() if s == "alive"}

    def handle(self, inp: Input, now: float) -> Sequence[object]:
        effects = self.core.handle(inp, now)
        cluster = self._cluster
        for eff in effects:
            if isinstance(eff, MemberChanged):
                self._changed(eff, now)
                for member_hook in cluster._member_hooks:
                    member_hook(self.name, eff.event, now)
                continue
            if isinstance(eff, Log) and eff.level >= logging.WARNING:
                cluster.logs.append((now, self.name, eff.message))
            for hook in cluster._hooks:
                hook(self.name, eff, now)
        return effects

    def next_deadline(self) -> float:
        return self.core.next_deadline()

    def _changed(self, eff: MemberChanged, now: float) -> None:
        kind = eff.event.kind
        m = eff.event.member
        if kind is MemberEventKind.REAP:
            self.view.pop(m.name, None)
            self.alive.discard(m.name)
        else:
            self.view[m.name] = m.status
            if m.status == "alive":
                self.alive.add(m.name)
            else:
                self.alive.discard(m.name)
        cluster = self._cluster
        cluster._version += 1
        if cluster.record_events:
            cluster.events.append(
                MemberRecord(now, self.name, kind, m.name, m.status, m.incarnation)
            )


def _default_factory() -> CoreFactory:
    from meshlite._core.swim import SwimCore  # imported late: tests may pass their own

    return SwimCore


class SimCluster:
    """``n`` SWIM peers ``node-0 .. node-{n-1}`` in one deterministic simulation.

    ``join_spread_s`` staggers start times uniformly over that many seconds (0: all start
    at once).  ``record_events=False`` skips keeping :attr:`events` (for huge runs).
    """

    def __init__(
        self,
        n: int,
        seed: int,
        config: SwimConfig | None = None,
        network: SimNetwork | None = None,
        *,
        join_seeds: int = DEFAULT_JOIN_SEEDS,
        join_spread_s: float = 0.0,
        meta: Callable[[str], Mapping[str, str]] | None = None,
        local_state: Callable[[str], Callable[[], bytes]] | None = None,
        record_events: bool = True,
        trace: bool = True,
        core_factory: CoreFactory | None = None,
    ) -> None:
        if n < 1:
            raise ConfigError(f"a SimCluster needs at least one node, got n={n}")
        if join_seeds < 1 or join_spread_s < 0:
            raise ConfigError("join_seeds must be >= 1 and join_spread_s >= 0")
        self.seed = seed
        self.config = config if config is not None else SwimConfig.lan()
        self.sim = Simulation(seed, network, trace=trace)
        self.network = self.sim.network
        self.clock = self.sim.clock
        self.record_events = record_events
        self.events: list[MemberRecord] = []
        self.logs: list[tuple[float, str, str]] = []
        self._hooks: list[Callable[[str, object, float], None]] = []
        self._member_hooks: list[Callable[[str, MemberEvent, float], None]] = []
        self._join_seeds = join_seeds
        self._meta = meta
        self._local_state = local_state
        self._factory = core_factory if core_factory is not None else _default_factory()
        self._rng = random.Random(f"meshlite-cluster:{seed}")
        self._nodes: dict[str, SwimNode] = {}
        self._lives: dict[str, int] = {}
        self._version = 0
        self._converged_at = (-1, False)
        self._next_index = n  # addresses of peers added later
        self._pending_starts = 0  # staggered starts not yet reached
        self._start_all(n, join_spread_s)

    # ------------------------------------------------------------------ lifecycle

    def _start_all(self, n: int, spread_s: float) -> None:
        starts = sorted(self._rng.uniform(0, spread_s) for _ in range(n)) if spread_s else []
        for i in range(n):
            name = f"node-{i}"
            seeds = [f"node-{j}" for j in self._pick(range(i), self._join_seeds)]
            if starts and starts[i] > 0:
                self._pending_starts += 1
                self.sim.call_at(starts[i], self._start_cb, (name, sim_addr(i), seeds))
            else:
                self._start(name, sim_addr(i), seeds)

    def _pick(self, candidates: Sequence[_T], k: int) -> list[_T]:
        return self._rng.sample(candidates, min(k, len(candidates)))

    def _start_cb(self, arg: tuple[str, Addr, list[str]]) -> None:
        self._pending_starts -= 1
        self._start(*arg)

    def _start(self, name: str, addr: Addr, seeds: list[str]) -> None:
        life = self._lives.get(name, -1) + 1
        self._lives[name] = life
        meta = dict(self._meta(name)) if self._meta is not None else None
        local_state = self._local_state(name) if self._local_state is not None else None
        core = self._factory(
            name,
            addr,
            self.config,
            self.sim.node_rng(name, life),
            self.clock.now,
            meta=meta,
            local_state=local_state,
        )
        node = SwimNode(name, core, self)
        self._nodes[name] = node
        self.sim.add(name, addr, node)
        self._version += 1
        if seeds:
            self.sim.feed(name, JoinRequested(tuple(self.sim.addr_of(s) for s in seeds)))

    def add_node(self, name: str | None = None) -> str:
        """Start a new peer that joins through a few running peers; returns its name."""
        index = self._next_index
        name = name if name is not None else f"node-{index}"
        if name in self._nodes:
            raise ConfigError(f"node {name!r} exists; use restart() to bring it back")
        self._next_index += 1
        self._start(name, sim_addr(index), self._live_seeds(name))
        return name

    def restart(self, name: str) -> None:
        """Crash ``name`` if running, then start a fresh core under the same name and address
        (its incarnation starts over) that rejoins through a few running peers."""
        if self.sim.is_running(name):
            self.kill(name)
        self._start(name, self.sim.addr_of(name), self._live_seeds(name))

    def _live_seeds(self, name: str) -> list[str]:
        others = [n for n in self.sim.running_names() if n != name]
        return self._pick(others, self._join_seeds)

    def kill(self, name: str) -> None:
        """Crash ``name``: it stops at once, without a leave; others must detect it."""
        self.sim.stop(name)
        self._version += 1

    def leave(self, name: str) -> None:
        """Graceful leave: ``LeaveRequested``, then the peer stops once its broadcasts have
        drained or ``config.leave_propagate_s`` has passed, whichever comes first."""
        self.sim.feed(name, LeaveRequested())
        self._leave_poll((name, self.clock.now + self.config.leave_propagate_s))

    def _leave_poll(self, arg: tuple[str, float]) -> None:
        name, deadline = arg
        if not self.sim.is_running(name):
            return
        if self.clock.now >= deadline or self._nodes[name].core.pending_broadcasts() == 0:
            self.kill(name)
        else:
            step = self.config.gossip_interval_s / 2
            self.sim.call_at(min(deadline, self.clock.now + step), self._leave_poll, arg)

    def stall(self, name: str, seconds: float, *, timers_first: bool = False) -> None:
        """Freeze ``name`` for ``seconds`` (blocked event loop, GC pause); see Lifeguard
        and :meth:`Simulation.stall` for ``timers_first``."""
        self.sim.stall(name, seconds, timers_first=timers_first)

    # ------------------------------------------------------------------ running

    @property
    def now(self) -> float:
        return self.clock.now

    def run_for(self, seconds: float) -> None:
        self.sim.run_for(seconds)

    def run_until(
        self, predicate: Callable[[], bool], timeout_s: float, *, poll_s: float = 0.1
    ) -> bool:
        """Run until ``predicate()`` (checked every ``poll_s``) or ``timeout_s``; True if met."""
        return self.sim.run_until(predicate, timeout_s, poll_s=poll_s)

    def add_checker(self, fn: Callable[[SimCluster], None]) -> None:
        """Call ``fn(cluster)`` after every simulation event (raise to fail the run)."""
        self.sim.add_checker(lambda _sim: fn(self))

    def add_effect_hook(self, fn: Callable[[str, object, float], None]) -> None:
        """Call ``fn(node_name, effect, now)`` for every effect other than ``MemberChanged``
        (``UserMessage``, ``UserStateMerged``, ``Log``, transport): for layers built on SWIM."""
        self._hooks.append(fn)

    def add_member_hook(self, fn: Callable[[str, MemberEvent, float], None]) -> None:
        """Call ``fn(node_name, event, now)`` for every membership change a peer reports
        (the ``MemberChanged`` effects): for layers that follow node health."""
        self._member_hooks.append(fn)

    def trace_digest(self) -> str:
        return self.sim.trace_digest()

    # ------------------------------------------------------------------ views

    def names(self) -> list[str]:
        return list(self._nodes)

    def live(self) -> list[str]:
        """Running peers (a stalled peer is running; killed and left ones are not)."""
        return self.sim.running_names()

    def node(self, name: str) -> SwimNode:
        node = self._nodes.get(name)
        if node is None:
            raise ConfigError(f"no node named {name!r} in this cluster")
        return node

    def members_of(self, name: str) -> list[Member]:
        """``name``'s member table, straight from its core."""
        return self.node(name).core.members()

    def status_of(self, viewer: str, target: str) -> str | None:
        """How ``viewer`` sees ``target`` ("alive", "suspect", ...), None if unknown."""
        m = self.node(viewer).core.member(target)
        return None if m is None else m.status

    def converged(self) -> bool:
        """Every running peer sees exactly the running peers as alive (and no staggered
        start is still pending)."""
        if self._pending_starts:
            return False
        version = self._version
        if self._converged_at[0] == version:
            return self._converged_at[1]
        live = set(self.live())
        nodes = self._nodes
        result = all(nodes[name].alive == live for name in live)
        self._converged_at = (version, result)
        return result

    def view_mismatches(self) -> list[str]:
        """Where a peer's ``members()`` disagrees with the view its own events built; a
        correct core has none."""
        out = []
        for name in self.live():
            node = self._nodes[name]
            table = {m.name: m.status for m in node.core.members()}
            if table != node.view:
                diff = {
                    k: (node.view.get(k), table.get(k))
                    for k in sorted(set(table) | set(node.view))
                    if node.view.get(k) != table.get(k)
                }
                out.append(f"{name}: (from events, from members()) {diff}")
        return out

    def records(
        self,
        kind: MemberEventKind | None = None,
        *,
        member: str | None = None,
        viewer: str | None = None,
    ) -> list[MemberRecord]:
        """Recorded membership changes, filtered."""
        return [
            r
            for r in self.events
            if (kind is None or r.kind is kind)
            and (member is None or r.member == member)
            and (viewer is None or r.viewer == viewer)
        ]
