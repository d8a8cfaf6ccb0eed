"""SwimCores wired together in memory: join, failure detection, refutation, leave, ...

A deliberately tiny harness (the full simulator with loss and partitions is
``meshlite.testing``): one clock, a heap of in-flight deliveries with fixed latencies, a
set of crashed peers and of blocked UDP / TCP directions.  Everything is deterministic
from the seed.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable

import attrs
import pytest

from meshlite._core.config import SwimConfig
from meshlite._core.events import (
    Addr,
    Effect,
    Input,
    JoinRequested,
    LeaveRequested,
    Log,
    MemberChanged,
    MemberEventKind,
    MetaChanged,
    PacketReceived,
    ReplyStream,
    SendPacket,
    SendStream,
    StreamReceived,
    StreamReplied,
    TimerFired,
    UserBroadcast,
    UserMessage,
    UserStateMerged,
)
from meshlite._core.swim import SwimCore
from meshlite._core.wire import Suspect, encode_message, encode_packet

UDP_LATENCY_S = 0.001
TCP_LATENCY_S = 0.002
MAX_STEPS = 2_000_000


class Harness:
    def __init__(self, seed: int = 1, config: SwimConfig | None = None) -> None:
        self.config = config or SwimConfig.local()
        self.rng = random.Random(seed)
        self.now = 0.0
        self.cores: dict[Addr, SwimCore] = {}
        self.names: dict[Addr, str] = {}
        self.down: set[Addr] = set()
        self.udp_blocked: set[tuple[Addr, Addr]] = set()
        self.tcp_blocked: set[tuple[Addr, Addr]] = set()
        self.effects: dict[str, list[Effect]] = {}
        self._heap: list[tuple[float, int, Addr, Input | int]] = []  # int: a stream timeout
        self._tie = itertools.count()
        self._streams: dict[int, tuple[Addr, int]] = {}  # stream_id -> (requester, req_id)
        self._stream_ids = itertools.count(1)
        self._answered: set[tuple[Addr, int]] = set()

    # -------------------------------------------------------------- building

    def add(self, name: str, port: int, **kw: object) -> SwimCore:
        addr = ("10.0.0.1", port)
        rng = random.Random(self.rng.random())
        core = SwimCore(name, addr, self.config, rng, self.now, **kw)  # type: ignore[arg-type]
        self.cores[addr] = core
        self.names[addr] = name
        self.effects.setdefault(name, [])
        self.down.discard(addr)
        return core

    def cluster(self, n: int, **kw: object) -> list[SwimCore]:
        cores = [self.add(f"n{i}", 7000 + i, **kw) for i in range(n)]
        for i in range(1, n):
            self.feed(self.addr(cores[i]), JoinRequested((self.addr(cores[0]),)))
        return cores

    def addr(self, core: SwimCore) -> Addr:
        return next(a for a, c in self.cores.items() if c is core)

    def block_udp(self, a: SwimCore, b: SwimCore) -> None:
        self.udp_blocked |= {(self.addr(a), self.addr(b)), (self.addr(b), self.addr(a))}

    # -------------------------------------------------------------- running

    def feed(self, dst: Addr, inp: Input) -> None:
        if dst in self.down:
            return
        out = self.cores[dst].handle(inp, self.now)
        for effect in out:
            self._perform(dst, effect)

    def run(self, duration_s: float) -> None:
        end = self.now + duration_s
        for _ in range(MAX_STEPS):
            t_msg = self._heap[0][0] if self._heap else float("inf")
            live = [(c.next_deadline(), a) for a, c in self.cores.items() if a not in self.down]
            t_timer, who = min(live) if live else (float("inf"), None)
            t = min(t_msg, t_timer)
            if t > end:
                self.now = end
                return
            self.now = max(self.now, t)
            if t_timer <= t_msg and who is not None:
                self.feed(who, TimerFired())
            else:
                _, _, dst, item = heapq.heappop(self._heap)
                if isinstance(item, int):
                    self._reply_once(dst, item, None, delay_s=0.0)
                else:
                    self.feed(dst, item)
        raise AssertionError("harness did not reach the end time: a timer livelock?")

    def run_until(self, cond: Callable[[], bool], limit_s: float, step_s: float = 0.05) -> float:
        start = self.now
        while not cond():
            assert self.now - start < limit_s, f"condition not met within {limit_s}s"
            self.run(step_s)
        return self.now - start

    def _at(self, delay_s: float, dst: Addr, item: Input | int) -> None:
        heapq.heappush(self._heap, (self.now + delay_s, next(self._tie), dst, item))

    def _reply_once(self, requester: Addr, req_id: int, data: bytes | None, delay_s: float) -> None:
        """A stream request gets exactly one StreamReplied: the reply or the timeout."""
        if (requester, req_id) in self._answered:
            return
        self._answered.add((requester, req_id))
        if delay_s:
            self._at(delay_s, requester, StreamReplied(req_id, data))
        else:
            self.feed(requester, StreamReplied(req_id, data))

    def _perform(self, src: Addr, effect: Effect) -> None:
        self.effects[self.names[src]].append(effect)
        if isinstance(effect, SendPacket):
            if (src, effect.dst) not in self.udp_blocked and effect.dst in self.cores:
                self._at(UDP_LATENCY_S, effect.dst, PacketReceived(src, effect.data))
        elif isinstance(effect, SendStream):
            self._send_stream(src, effect)
        elif isinstance(effect, ReplyStream):
            requester, req_id = self._streams.pop(effect.stream_id)
            self._reply_once(requester, req_id, effect.data, delay_s=TCP_LATENCY_S)

    def _send_stream(self, src: Addr, effect: SendStream) -> None:
        # Whatever happens, the requester hears back by its timeout (the driver contract).
        self._at(effect.timeout_s, src, effect.req_id)
        dst = effect.dst
        if (src, dst) in self.tcp_blocked or dst not in self.cores or dst in self.down:
            return
        stream_id = next(self._stream_ids)
        self._streams[stream_id] = (src, effect.req_id)
        self._at(TCP_LATENCY_S, dst, StreamReceived(stream_id, src, effect.data))

    # -------------------------------------------------------------- reading

    def view(self, core: SwimCore) -> dict[str, str]:
        return {m.name: m.status for m in core.members()}

    def converged(self, cores: list[SwimCore], expect: dict[str, str]) -> bool:
        return all({k: v for k, v in self.view(c).items() if k in expect} == expect for c in cores)

    def events(self, core: SwimCore, kind: MemberEventKind, about: str) -> int:
        return sum(
            1
            for e in self.effects[self._name_of(core)]
            if isinstance(e, MemberChanged)
            and e.event.kind == kind
            and e.event.member.name == about
        )

    def logs(self, core: SwimCore, text: str) -> list[str]:
        return [
            e.message
            for e in self.effects[self._name_of(core)]
            if isinstance(e, Log) and text in e.message
        ]

    def _name_of(self, core: SwimCore) -> str:
        return self.names[self.addr(core)]


def all_alive(cores: list[SwimCore]) -> dict[str, str]:
    return {f"n{i}": "alive" for i in range(len(cores))}


# ------------------------------------------------------------------------- joining


def test_join_via_push_pull_three_peers() -> None:
    h = Harness(seed=3)
    cores = h.cluster(3)
    h.run(0.01)  # one TCP round trip: the seed and the joiners know each other
    assert {"n0", "n1"} <= set(h.view(cores[1]))
    assert "n1" in h.view(cores[0]) and "n2" in h.view(cores[0])
    h.run_until(lambda: h.converged(cores, all_alive(cores)), limit_s=5)
    assert all(c.stats.get("joins_ok") == 1 for c in cores[1:])
    assert h.events(cores[0], MemberEventKind.JOIN, "n2") == 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ten_peers_converge_without_false_suspicions(seed: int) -> None:
    h = Harness(seed=seed)
    cores = [h.add(f"n{i}", 7000 + i) for i in range(10)]
    for i in range(1, 10):  # each joins a random earlier peer: a chain, not a star
        h.feed(h.addr(cores[i]), JoinRequested((h.addr(cores[h.rng.randrange(i)]),)))
        h.run(0.05)
    h.run_until(lambda: h.converged(cores, all_alive(cores)), limit_s=10)
    h.run(10.0)  # and it stays that way
    assert h.converged(cores, all_alive(cores))
    assert sum(c.stats.get("suspicions", 0) for c in cores) == 0
    assert all(c.health_score == 0 for c in cores)
    assert all(c.stats.get("probes_acked", 0) > 10 for c in cores)


def test_join_failure_is_reported() -> None:
    h = Harness()
    a = h.add("a", 7000)
    h.feed(h.addr(a), JoinRequested((("10.0.0.9", 1),)))
    h.run(h.config.tcp_timeout_s + 0.1)
    assert a.stats["joins_failed"] == 1
    assert h.logs(a, "Join through 10.0.0.9:1 failed")


# ------------------------------------------------------------------------- failures


def test_crashed_peer_is_suspected_then_dead_then_reaped() -> None:
    h = Harness(seed=5)
    cores = h.cluster(5)
    h.run_until(lambda: h.converged(cores, all_alive(cores)), limit_s=5)
    victim, rest = cores[4], cores[:4]
    h.down.add(h.addr(victim))
    crashed_at = h.now
    h.run_until(
        lambda: h.converged(rest, {"n4": "suspect"}) or h.converged(rest, {"n4": "dead"}), limit_s=3
    )
    detect_s = h.run_until(lambda: h.converged(rest, {"n4": "dead"}), limit_s=10)
    assert detect_s <= 3.6 + 0.5  # the Lifeguard max suspicion timeout for n=5, plus slack
    assert any(h.logs(c, "Marking n4 as failed") for c in rest)
    assert all(h.events(c, MemberEventKind.DEAD, "n4") == 1 for c in rest)
    assert all(c.member("n4") is not None for c in rest)
    h.run_until(lambda: all(c.member("n4") is None for c in rest), limit_s=6)
    assert h.now - crashed_at >= h.config.gossip_to_the_dead_s
    assert all(h.events(c, MemberEventKind.REAP, "n4") == 1 for c in rest)
    assert h.converged(rest, all_alive(rest))


def test_suspicion_of_ourselves_is_refuted() -> None:
    h = Harness(seed=7)
    cores = h.cluster(4)
    h.run_until(lambda: h.converged(cores, all_alive(cores)), limit_s=5)
    target = cores[2]
    inc = target.member("n2").incarnation  # type: ignore[union-attr]
    accusation = encode_packet("n1", [encode_message(Suspect(inc, "n2", "n1"))])
    h.feed(h.addr(target), PacketReceived(h.addr(cores[1]), accusation))
    assert target.stats["refutes"] == 1
    assert target.health_score == 1  # Lifeguard: being accused costs local health
    assert h.logs(target, "Refuting a suspect message (from: n1)")
    new_inc = target.member("n2").incarnation  # type: ignore[union-attr]
    assert new_inc == inc + 1
    h.run_until(
        lambda: all(c.member("n2").incarnation == new_inc for c in cores),  # type: ignore[union-attr]
        limit_s=3,
    )
    assert h.converged(cores, all_alive(cores))


def test_indirect_probe_saves_a_peer_behind_a_broken_direct_path() -> None:
    h = Harness(seed=11, config=_with(tcp_fallback=False))
    cores = h.cluster(4)
    h.run_until(lambda: h.converged(cores, all_alive(cores)), limit_s=5)
    a, b = cores[1], cores[2]
    h.block_udp(a, b)
    h.run(20.0)
    assert a.stats.get("indirect_probes", 0) > 0
    assert sum(c.stats.get("relay_acks", 0) for c in cores) > 0
    assert a.stats.get("probes_failed", 0) == 0
    assert b.stats.get("probes_failed", 0) == 0
    assert sum(c.stats.get("suspicions", 0) for c in cores) == 0
    assert h.converged(cores, all_alive(cores))


def test_relays_nack_when_the_target_is_gone_and_the_prober_stays_healthy() -> None:
    h = Harness(seed=13)
    cores = h.cluster(6)
    h.run_until(lambda: h.converged(cores, all_alive(cores)), limit_s=5)
    h.down.add(h.addr(cores[5]))
    rest = cores[:5]
    h.run_until(lambda: h.converged(rest, {"n5": "dead"}), limit_s=10)
    assert sum(c.stats.get("nacks_sent", 0) for c in rest) > 0
    assert sum(c.stats.get("nacks_received", 0) for c in rest) > 0
    # Every relay answered with a nack, so the failed probes did not count against us.
    assert all(c.health_score == 0 for c in rest)


def test_isolated_prober_loses_health_without_nacks() -> None:
    h = Harness(seed=17, config=_with(tcp_fallback=False))
    cores = h.cluster(5)
    h.run_until(lambda: h.converged(cores, all_alive(cores)), limit_s=5)
    lonely = cores[0]
    for other in cores[1:]:
        h.udp_blocked.add((h.addr(lonely), h.addr(other)))  # its datagrams vanish
    h.run(3.0)
    assert lonely.stats.get("probes_failed", 0) >= 1
    assert lonely.health_score >= 2  # no relay could even nack: the problem is us
    assert all(c.health_score == 0 for c in cores[1:])


def test_tcp_fallback_warns_that_udp_is_blocked_instead_of_suspecting() -> None:
    h = Harness(seed=19)
    cores = h.cluster(2)
    h.run_until(lambda: h.converged(cores, all_alive(cores)), limit_s=5)
    a, b = cores
    h.block_udp(a, b)
    h.run(5.0)
    assert a.stats.get("probes_tcp_only", 0) >= 2
    warnings = h.logs(a, "UDP looks blocked")
    assert len(warnings) == 1 and "n1" in warnings[0]
    assert a.stats.get("suspicions", 0) == 0 and b.stats.get("suspicions", 0) == 0
    assert h.converged(cores, all_alive(cores))


# ------------------------------------------------------------------------- changes


def test_leave_is_seen_as_left_and_the_goodbye_drains() -> None:
    h = Harness(seed=23)
    cores = h.cluster(4)
    h.run_until(lambda: h.converged(cores, all_alive(cores)), limit_s=5)
    h.run(1.0)
    leaver = cores[3]
    h.feed(h.addr(leaver), LeaveRequested())
    assert leaver.member("n3").status == "left"  # type: ignore[union-attr]
    assert leaver.pending_broadcasts() == 1
    h.run_until(lambda: leaver.pending_broadcasts() == 0, limit_s=h.config.leave_propagate_s)
    h.down.add(h.addr(leaver))
    h.run_until(lambda: h.converged(cores[:3], {"n3": "left"}), limit_s=2)
    assert all(h.events(c, MemberEventKind.LEFT, "n3") == 1 for c in cores[:3])
    assert all(h.events(c, MemberEventKind.DEAD, "n3") == 0 for c in cores[:3])
    probes = leaver.stats["probes"]
    h.down.discard(h.addr(leaver))
    h.run(1.0)
    assert leaver.stats["probes"] == probes  # a leaving peer stops probing


def test_leave_alone_has_nothing_to_drain() -> None:
    h = Harness()
    a = h.add("a", 7000)
    h.feed(h.addr(a), LeaveRequested())
    assert a.pending_broadcasts() == 0
    assert a.members()[0].status == "left"


def test_meta_update_reaches_everyone() -> None:
    h = Harness(seed=29)
    cores = h.cluster(4, meta={"zone": "a"})
    h.run_until(lambda: h.converged(cores, all_alive(cores)), limit_s=5)
    h.feed(h.addr(cores[1]), MetaChanged({"zone": "b"}))
    inc = cores[1].member("n1").incarnation  # type: ignore[union-attr]
    h.run_until(
        lambda: all(c.member("n1").meta == {"zone": "b"} for c in cores),  # type: ignore[union-attr]
        limit_s=3,
    )
    assert all(c.member("n1").incarnation == inc for c in cores)  # type: ignore[union-attr]
    assert all(h.events(c, MemberEventKind.UPDATE, "n1") == 1 for c in cores)


def test_user_broadcasts_reach_everyone_when_the_application_relays_news() -> None:
    """The core delivers every copy (echoes home included: the catalog knows its own
    records) and relays nothing; an application that relays what is news to it, as the
    catalog does, gets its broadcast to every peer."""
    h = Harness(seed=31)
    cores = h.cluster(8)
    h.run_until(lambda: h.converged(cores, all_alive(cores)), limit_s=5)
    h.feed(h.addr(cores[2]), UserBroadcast("svc/api", b"hello"))
    relayed: set[str] = set()

    def delivered(c: SwimCore) -> int:
        return sum(
            1
            for e in h.effects[h.names[h.addr(c)]]
            if isinstance(e, UserMessage) and e.payload == b"hello"
        )

    def relay_news() -> bool:
        for c in cores:
            name = h.names[h.addr(c)]
            if delivered(c) and name not in relayed:
                relayed.add(name)
                h.feed(h.addr(c), UserBroadcast("svc/api", b"hello"))
        return all(delivered(c) >= 1 for c in cores if c is not cores[2])

    relayed.add(h.names[h.addr(cores[2])])  # home: its own news, never relayed
    assert h.run_until(relay_news, limit_s=3) < 3


def test_user_state_travels_with_push_pull() -> None:
    h = Harness(seed=37)
    a = h.add("a", 7000, local_state=lambda: b"catalog-of-a")
    b = h.add("b", 7001, local_state=lambda: b"catalog-of-b")
    h.feed(h.addr(b), JoinRequested((h.addr(a),)))
    h.run(0.1)
    got_a = [e for e in h.effects["a"] if isinstance(e, UserStateMerged)]
    got_b = [e for e in h.effects["b"] if isinstance(e, UserStateMerged)]
    assert got_a == [UserStateMerged(b"catalog-of-b", True)]
    assert got_b == [UserStateMerged(b"catalog-of-a", True)]


def test_periodic_push_pull_spreads_members_when_udp_carries_nothing() -> None:
    h = Harness(seed=41, config=_with(push_pull_interval_s=1.0))
    a, b, c = h.add("a", 7000), h.add("b", 7001), h.add("c", 7002)
    for x, y in itertools.permutations([a, b, c], 2):
        h.udp_blocked.add((h.addr(x), h.addr(y)))
    h.feed(h.addr(b), JoinRequested((h.addr(a),)))
    h.feed(h.addr(c), JoinRequested((h.addr(b),)))  # a hears of c only by anti-entropy
    h.run(0.1)
    assert a.member("c") is None
    h.run_until(lambda: h.converged([a, b, c], {"a": "alive", "b": "alive", "c": "alive"}), 5)
    assert sum(x.stats.get("push_pulls_ok", 0) for x in (a, b, c)) > 0
    assert sum(x.stats.get("suspicions", 0) for x in (a, b, c)) == 0  # TCP pings vouch


# ------------------------------------------------------------------------- conflicts


def test_same_name_at_another_address_logs_a_conflict() -> None:
    h = Harness(seed=43)
    cores = h.cluster(3)
    h.run_until(lambda: h.converged(cores, all_alive(cores)), limit_s=5)
    impostor = h.add("n1", 7100)  # a second process calling itself n1
    h.feed(h.addr(impostor), JoinRequested((h.addr(cores[0]),)))
    h.run(3.0)
    assert h.logs(cores[0], "Name conflict: node n1")
    assert cores[0].member("n1").port == 7001  # type: ignore[union-attr]
    assert h.logs(impostor, "Name conflict: node n1")  # it hears about the other n1 too
    assert len(h.logs(cores[0], "Name conflict: node n1")) == 1  # once per address


def test_restart_on_a_new_port_takes_over_the_name() -> None:
    h = Harness(seed=47)
    cores = h.cluster(4)
    h.run_until(lambda: h.converged(cores, all_alive(cores)), limit_s=5)
    h.down.add(h.addr(cores[3]))  # n3 crashes ...
    reborn = h.add("n3", 7200)  # ... and comes back on another port
    h.feed(h.addr(reborn), JoinRequested((h.addr(cores[0]),)))
    everyone = [*cores[:3], reborn]
    h.run_until(
        lambda: (
            all(c.member("n3").port == 7200 for c in everyone)  # type: ignore[union-attr]
            and h.converged(everyone, {"n3": "alive"})
        ),
        limit_s=10,
    )
    assert any(h.logs(c, "Node n3 moved from 10.0.0.1:7003 to 10.0.0.1:7200") for c in cores[:3])


def _with(**changes: object) -> SwimConfig:
    return attrs.evolve(SwimConfig.local(), **changes)  # type: ignore[arg-type]
