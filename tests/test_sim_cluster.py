"""SimCluster's plumbing (start/join, kill, leave, stall, restart, views, records) with a
tiny heartbeat membership core: a test double of the simulator's machinery, so this
runs whatever state the real SWIM core is in.  SWIM itself: tests/test_sim_swim.py."""

from __future__ import annotations

import json
import random

import pytest

from meshlite._core.config import SwimConfig
from meshlite._core.events import (
    Addr,
    Input,
    JoinRequested,
    LeaveRequested,
    Member,
    MemberChanged,
    MemberEvent,
    MemberEventKind,
    PacketReceived,
    SendPacket,
    TimerFired,
)
from meshlite.errors import ConfigError
from meshlite.testing import SimCluster

HEARTBEAT_S = 1.0
DEAD_AFTER_S = 3.5


class Heartbeat:
    """All-to-all heartbeats carrying the sender's view: a member silent for DEAD_AFTER_S
    is dead.  Join = ask a seed for its member list.  Leave = tell everyone, then keep one
    pending broadcast until the next beat."""

    def __init__(
        self,
        name: str,
        addr: Addr,
        config: SwimConfig,
        rng: random.Random,
        now: float,
        meta: dict[str, str] | None = None,
        local_state: object = None,
    ):
        self.name, self.addr = name, addr
        self.known: dict[str, tuple[Addr, str]] = {name: (addr, "alive")}
        self.heard: dict[str, float] = {}
        self.next_beat = now + rng.uniform(0, HEARTBEAT_S)
        self.pending = 0

    def _msg(self, kind: str, body: object = None) -> bytes:
        return json.dumps([kind, self.name, list(self.addr), body]).encode()

    def _set(self, name: str, addr: Addr, status: str, kind: MemberEventKind) -> MemberChanged:
        self.known[name] = (addr, status)
        member = Member(name, addr[0], addr[1], status, 0)
        return MemberChanged(MemberEvent(kind, member))

    def handle(self, inp: Input, now: float) -> list[object]:
        if isinstance(inp, JoinRequested):
            return [SendPacket(seed, self._msg("join")) for seed in inp.seeds]
        if isinstance(inp, LeaveRequested):
            self.pending = 1
            return [SendPacket(a, self._msg("bye")) for a, _ in self._alive().values()]
        if isinstance(inp, TimerFired):
            return self._beat(now)
        if isinstance(inp, PacketReceived):
            return self._packet(inp, now)
        return []

    def _alive(self) -> dict[str, tuple[Addr, str]]:
        return {n: v for n, v in self.known.items() if v[1] == "alive" and n != self.name}

    def _beat(self, now: float) -> list[object]:
        if now < self.next_beat:
            return []
        self.next_beat = now + HEARTBEAT_S
        self.pending = 0
        out: list[object] = []
        for name, (addr, _) in self._alive().items():
            if now - self.heard.get(name, now) > DEAD_AFTER_S:
                out.append(self._set(name, addr, "dead", MemberEventKind.DEAD))
            else:
                out.append(SendPacket(addr, self._msg("beat", self._view())))
        return out

    def _packet(self, inp: PacketReceived, now: float) -> list[object]:
        kind, name, addr, body = json.loads(inp.data)
        addr = (addr[0], addr[1])
        out: list[object] = []
        status = self.known.get(name, (None, None))[1]
        if kind == "bye":
            return [self._set(name, addr, "left", MemberEventKind.LEFT)]
        if status == "left":
            return []
        self.heard[name] = now
        if status is None:
            out.append(self._set(name, addr, "alive", MemberEventKind.JOIN))
        elif status != "alive":
            out.append(self._set(name, addr, "alive", MemberEventKind.ALIVE))
        if kind == "join":
            out.append(SendPacket(addr, self._msg("list", self._view())))
        for other, oaddr in body or ():
            if other not in self.known:
                out.append(SendPacket((oaddr[0], oaddr[1]), self._msg("beat", self._view())))
        return out

    def _view(self) -> list[object]:
        return [[n, list(a)] for n, (a, s) in self.known.items() if s == "alive"]

    def next_deadline(self) -> float:
        return self.next_beat

    def members(self) -> list[Member]:
        return sorted(
            (Member(n, a[0], a[1], s, 0) for n, (a, s) in self.known.items()),
            key=lambda m: m.name,
        )

    def member(self, name: str) -> Member | None:
        return next((m for m in self.members() if m.name == name), None)

    def pending_broadcasts(self) -> int:
        return self.pending


def cluster(n: int = 8, seed: int = 5, **kw: object) -> SimCluster:
    return SimCluster(n, seed, core_factory=Heartbeat, **kw)  # type: ignore[arg-type]


def test_nodes_are_named_addressed_and_joined_through_earlier_seeds() -> None:
    c = cluster(8)
    assert c.names() == [f"node-{i}" for i in range(8)]
    assert c.sim.addr_of("node-0") == ("10.0.0.1", 7946)
    assert not c.converged()
    assert c.run_until(c.converged, timeout_s=10)
    assert c.view_mismatches() == []
    assert {m.name for m in c.members_of("node-3")} == set(c.names())
    assert c.status_of("node-3", "node-7") == "alive"
    assert c.status_of("node-3", "nobody") is None
    joins = c.records(MemberEventKind.JOIN, viewer="node-0")
    assert {r.member for r in joins} == set(c.names()) - {"node-0"}
    assert all(0 <= r.time_s <= c.now for r in joins)


def test_kill_is_detected_and_recorded() -> None:
    c = cluster(6)
    assert c.run_until(c.converged, timeout_s=10)
    c.kill("node-2")
    assert "node-2" not in c.live()
    assert not c.converged()
    assert c.run_until(c.converged, timeout_s=10)
    dead = c.records(MemberEventKind.DEAD)
    assert {r.viewer for r in dead} == set(c.live())
    assert {r.member for r in dead} == {"node-2"}


def test_leave_stops_after_its_broadcasts_drain() -> None:
    c = cluster(4)
    assert c.run_until(c.converged, timeout_s=10)
    c.leave("node-1")
    assert "node-1" in c.live()
    assert c.run_until(lambda: "node-1" not in c.live(), timeout_s=2)
    assert c.run_until(c.converged, timeout_s=5)
    assert {r.member for r in c.records(MemberEventKind.LEFT)} == {"node-1"}
    assert not c.records(MemberEventKind.DEAD)


def test_stall_and_restart() -> None:
    c = cluster(4)
    assert c.run_until(c.converged, timeout_s=10)
    c.stall("node-3", 10.0)
    c.run_for(6.0)
    assert c.status_of("node-0", "node-3") == "dead"
    assert c.run_until(c.converged, timeout_s=10)
    c.restart("node-1")
    assert c.node("node-1").core.member("node-0") is None  # a fresh core
    assert c.run_until(c.converged, timeout_s=10)
    assert c.add_node() == "node-4"
    assert c.run_until(c.converged, timeout_s=10)
    with pytest.raises(ConfigError, match="exists"):
        c.add_node("node-4")


def test_staggered_start() -> None:
    c = cluster(6, join_spread_s=5.0)
    assert c.live() == []
    assert not c.converged()  # not vacuously: starts are pending
    assert c.add_node() == "node-6"  # not a name a delayed start will take
    c.run_for(5.0)
    assert len(c.live()) == 7
    # node-6 started before anyone it could join through; join it by hand
    c.sim.feed("node-6", JoinRequested((c.sim.addr_of("node-0"),)))
    assert c.run_until(c.converged, timeout_s=10)


def test_checker_and_effect_hook_see_the_run() -> None:
    c = cluster(3)
    calls: list[float] = []
    effects: list[str] = []
    c.add_checker(lambda cl: calls.append(cl.now))
    c.add_effect_hook(lambda name, eff, now: effects.append(type(eff).__name__))
    c.run_for(3.0)
    assert len(calls) == c.sim.stats["events"] > 0
    assert "SendPacket" in effects
    assert "MemberChanged" not in effects


def test_same_seed_same_trace() -> None:
    def run(seed: int) -> tuple[str, int]:
        c = cluster(6, seed=seed)
        c.run_for(5.0)
        c.kill("node-1")
        c.run_for(5.0)
        return c.trace_digest(), len(c.events)

    assert run(3) == run(3)
    assert run(3)[0] != run(4)[0]
