"""The simulator's own machinery (clock, loop, network, streams, stalls), tested with a
trivial echo core that is a test double of *our* machinery, not of SWIM."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import pytest

from meshlite._core.events import (
    Addr,
    Input,
    JoinRequested,
    PacketReceived,
    ReplyStream,
    SendPacket,
    SendStream,
    StreamReceived,
    StreamReplied,
    TimerFired,
)
from meshlite.errors import ConfigError
from meshlite.testing import (
    SimClock,
    SimNetwork,
    Simulation,
    SimulationError,
    replay_hint,
    sim_addr,
    sim_seeds,
)

_I = TypeVar("_I")
A, B, C = sim_addr(0), sim_addr(1), sim_addr(2)


class Echo:
    """Records every input; answers b"ping..." datagrams with b"pong..." and every stream
    request with its reversed bytes (unless ``mute``); sends on demand."""

    def __init__(self, name: str, *, mute: bool = False, deadline: float = math.inf) -> None:
        self.name = name
        self.mute = mute
        self.deadline = deadline
        self.log: list[tuple[float, Input]] = []
        self.outbox: list[object] = []

    def handle(self, inp: Input, now: float) -> Sequence[object]:
        self.log.append((now, inp))
        out, self.outbox = self.outbox, []
        if isinstance(inp, PacketReceived) and inp.data.startswith(b"ping"):
            out.append(SendPacket(inp.src, b"pong" + inp.data[4:]))
        elif isinstance(inp, StreamReceived) and not self.mute:
            out.append(ReplyStream(inp.stream_id, inp.data[::-1]))
        elif isinstance(inp, TimerFired) and now >= self.deadline:
            self.deadline = math.inf
        return out

    def next_deadline(self) -> float:
        return self.deadline

    def got(self, cls: type[_I]) -> list[tuple[float, _I]]:
        return [(t, i) for t, i in self.log if isinstance(i, cls)]


def make(n: int = 2, **net: object) -> tuple[Simulation, list[Echo]]:
    sim = Simulation(seed=1, network=SimNetwork(1, **net))  # type: ignore[arg-type]
    cores = [Echo(f"n{i}") for i in range(n)]
    for i, core in enumerate(cores):
        sim.add(core.name, sim_addr(i), core)
    return sim, cores


def send(sim: Simulation, core: Echo, *effects: object) -> None:
    """Make ``core`` emit ``effects`` now (they ride out on its next handled input)."""
    core.outbox.extend(effects)
    sim.feed(core.name, JoinRequested(()))


def test_clock_is_monotonic() -> None:
    clock = SimClock(5.0)
    assert clock.now == clock() == 5.0
    clock.advance_to(7.5)
    assert clock.now == 7.5
    with pytest.raises(ConfigError, match="backwards"):
        clock.advance_to(7.0)


def test_datagram_is_delivered_within_the_delay_range_with_the_sender_address() -> None:
    sim, (a, b) = make(delay_s=(0.01, 0.02))
    send(sim, a, SendPacket(B, b"ping1"))
    sim.run_for(1.0)
    [(t, pkt)] = b.got(PacketReceived)
    assert 0.01 <= t <= 0.02
    assert pkt == PacketReceived(A, b"ping1")
    [(t2, reply)] = a.got(PacketReceived)
    assert reply == PacketReceived(B, b"pong1")
    assert 0.02 <= t2 <= 0.04
    assert sim.clock.now == 1.0


def test_loss_drops_about_the_configured_fraction() -> None:
    sim, (a, b) = make(loss=0.3)
    send(sim, a, *(SendPacket(B, b"x") for _ in range(2000)))
    sim.run_for(1.0)
    assert 0.25 < 1 - len(b.got(PacketReceived)) / 2000 < 0.35
    assert sim.network.stats["lost"] == 2000 - len(b.got(PacketReceived))


def test_duplicate_delivers_twice() -> None:
    sim, (a, b) = make(duplicate=1.0)
    send(sim, a, *(SendPacket(B, b"x%d" % i) for i in range(10)))
    sim.run_for(1.0)
    datas = sorted(p.data for _, p in b.got(PacketReceived))
    assert datas == sorted([b"x%d" % i for i in range(10)] * 2)


def test_fixed_delay_keeps_order_and_reorder_breaks_it() -> None:
    payloads = [b"%03d" % i for i in range(100)]
    sim, (a, b) = make(delay_s=(0.01, 0.01))
    send(sim, a, *(SendPacket(B, p) for p in payloads))
    sim.run_for(1.0)
    assert [p.data for _, p in b.got(PacketReceived)] == payloads
    sim, (a, b) = make(delay_s=(0.01, 0.01), reorder=0.5, reorder_delay_s=0.05)
    send(sim, a, *(SendPacket(B, p) for p in payloads))
    sim.run_for(1.0)
    got = [p.data for _, p in b.got(PacketReceived)]
    assert sorted(got) == payloads
    assert got != payloads


def test_partition_drops_across_groups_and_heal_restores() -> None:
    sim, (a, b, c) = make(3)
    sim.network.partition([["n0"], ["n1"]])  # n2 is unlisted: its own group
    send(sim, a, SendPacket(B, b"x"), SendPacket(C, b"x"))
    send(sim, b, SendPacket(C, b"y"))
    sim.run_for(1.0)
    assert not b.got(PacketReceived)
    assert not c.got(PacketReceived)
    assert sim.network.reachable("n2", "n2")
    assert not sim.network.reachable("n0", "n2")
    sim.network.heal()
    send(sim, a, SendPacket(B, b"x"))
    sim.run_for(1.0)
    assert len(b.got(PacketReceived)) == 1


def test_partition_rejects_a_name_in_two_groups() -> None:
    with pytest.raises(ConfigError, match="two partition groups"):
        SimNetwork().partition([["a"], ["a", "b"]])


def test_clog_holds_one_direction_until_unclogged() -> None:
    sim, (a, b) = make()
    sim.network.clog("n0", "n1")
    send(sim, a, SendPacket(B, b"held1"), SendPacket(B, b"held2"))
    send(sim, b, SendPacket(A, b"free"))
    sim.run_for(5.0)
    assert not b.got(PacketReceived)
    assert [p.data for _, p in a.got(PacketReceived)] == [b"free"]
    assert sim.network.stats["held"] == 2
    sim.network.unclog("n0", "n1")
    sim.run_for(1.0)
    arrivals = b.got(PacketReceived)
    assert sorted(p.data for _, p in arrivals) == [b"held1", b"held2"]
    assert all(5.0 <= t <= 5.01 for t, _ in arrivals)


def test_clog_with_duration_lifts_itself() -> None:
    sim, (a, b) = make()
    sim.network.clog("n0", "n1", both=True, duration_s=2.0)
    send(sim, a, SendPacket(B, b"x"))
    sim.run_for(1.9)
    assert not b.got(PacketReceived)
    sim.run_for(0.2)
    [(t, _)] = b.got(PacketReceived)
    assert 2.0 <= t <= 2.01


def test_stream_round_trip() -> None:
    sim, (a, b) = make()
    send(sim, a, SendStream(7, B, b"abc", timeout_s=5.0))
    sim.run_for(10.0)
    [(_, req)] = b.got(StreamReceived)
    assert req.src == A and req.data == b"abc"
    [(t, rep)] = a.got(StreamReplied)
    assert rep == StreamReplied(7, b"cba")
    assert t < 0.02
    assert sim.stats["stream_timeouts"] == 0


@pytest.mark.parametrize("fault", ["stopped", "partitioned", "mute", "unknown"])
def test_failed_stream_replies_none_at_the_timeout(fault: str) -> None:
    sim, (a, b) = make()
    dst = B
    if fault == "stopped":
        sim.stop("n1")
    elif fault == "partitioned":
        sim.network.partition([["n0"], ["n1"]])
    elif fault == "mute":
        b.mute = True
    else:
        dst = ("10.9.9.9", 1)
    send(sim, a, SendStream(3, dst, b"abc", timeout_s=2.5))
    sim.run_for(10.0)
    assert a.got(StreamReplied) == [(2.5, StreamReplied(3, None))]


def test_a_reply_after_the_timeout_is_dropped() -> None:
    sim, (a, _) = make()
    sim.network.clog("n1", "n0")  # the request gets through; the reply is held
    send(sim, a, SendStream(1, B, b"abc", timeout_s=1.0))
    sim.run_for(3.0)
    sim.network.unclog()
    sim.run_for(3.0)
    assert a.got(StreamReplied) == [(1.0, StreamReplied(1, None))]


def test_timer_fires_at_the_deadline_and_stale_timers_do_not() -> None:
    sim = Simulation(seed=0)
    core = Echo("t", deadline=3.0)
    sim.add("t", A, core)
    sim.run_for(1.0)
    core.deadline = 2.0  # moved earlier; the loop learns it on the next handled input
    sim.feed("t", JoinRequested(()))
    sim.run_for(5.0)
    assert [t for t, _ in core.got(TimerFired)] == [2.0]


def test_stall_queues_inputs_and_timers_until_it_ends() -> None:
    sim, (a, b) = make(delay_s=(0.001, 0.001))
    b.deadline = 1.0
    sim.feed("n1", JoinRequested(()))  # the loop learns the 1.0 s deadline
    sim.stall("n1", 3.0)
    for i in range(3):
        sim.call_at(0.5 + i, lambda _: send(sim, a, SendPacket(B, b"x")))
    sim.run_for(5.0)
    times = [t for t, i in b.log if isinstance(i, PacketReceived | TimerFired)]
    assert times == [3.0] * 4
    assert isinstance(b.log[-1][1], TimerFired)


def test_stall_with_timers_first_fires_the_overdue_timer_before_the_backlog() -> None:
    sim, (a, b) = make(delay_s=(0.001, 0.001))
    b.deadline = 1.0
    sim.feed("n1", JoinRequested(()))
    sim.stall("n1", 3.0, timers_first=True)
    sim.call_at(0.5, lambda _: send(sim, a, SendPacket(B, b"x")))
    sim.run_for(5.0)
    kinds = [type(i) for t, i in b.log if t == 3.0]
    assert kinds == [TimerFired, PacketReceived]


def test_stopped_node_neither_receives_nor_has_its_in_flight_packets_delivered() -> None:
    sim, (a, b) = make(delay_s=(0.1, 0.1))
    send(sim, a, SendPacket(B, b"x"))
    sim.stop("n0")
    sim.run_for(1.0)
    assert not b.got(PacketReceived)
    send(sim, b, SendPacket(A, b"y"))
    sim.run_for(1.0)
    assert not a.got(PacketReceived)
    assert sim.stats["to_stopped"] == 2
    with pytest.raises(ConfigError, match="stopped"):
        sim.feed("n0", JoinRequested(()))


def test_restart_reuses_the_address_and_rejects_duplicates() -> None:
    sim, (a, b) = make()
    with pytest.raises(ConfigError, match="already running"):
        sim.add("n0", A, Echo("n0"))
    with pytest.raises(ConfigError, match="already used"):
        sim.add("n9", A, Echo("n9"))
    sim.stop("n0")
    fresh = Echo("n0")
    sim.add("n0", A, fresh)
    send(sim, b, SendPacket(A, b"x"))
    sim.run_for(1.0)
    assert len(fresh.got(PacketReceived)) == 1
    assert not a.got(PacketReceived)


def run_noisy(seed: int) -> str:
    sim = Simulation(seed, SimNetwork(seed, loss=0.2, duplicate=0.1, reorder=0.2))
    cores = [Echo(f"n{i}") for i in range(5)]
    for i, core in enumerate(cores):
        sim.add(core.name, sim_addr(i), core)
    for i, core in enumerate(cores):
        send(sim, core, *(SendPacket(sim_addr(j), b"ping%d" % i) for j in range(5)))
    sim.run_for(2.0)
    return sim.trace_digest()


def test_same_seed_same_trace_and_other_seed_other_trace() -> None:
    assert run_noisy(42) == run_noisy(42)
    assert run_noisy(42) != run_noisy(43)


def test_livelocked_core_is_reported_with_its_seed() -> None:
    class Spinner(Echo):
        def next_deadline(self) -> float:
            return 0.0

    sim = Simulation(seed=99)
    sim.add("s", A, Spinner("s"))
    with pytest.raises(SimulationError, match="livelocked") as info:
        sim.run_for(1.0)
    assert "replay with MESHLITE_SEED=99" in info.value.__notes__


def test_checkers_run_after_every_event_and_failures_carry_the_seed() -> None:
    sim, (a, _) = make()
    seen: list[float] = []
    sim.add_checker(lambda s: seen.append(s.clock.now))
    send(sim, a, SendPacket(B, b"ping"))
    sim.run_for(1.0)
    assert len(seen) == sim.stats["events"] == 2

    def no_pongs(s: Simulation) -> None:
        assert not a.got(PacketReceived), "a pong arrived"

    sim.add_checker(no_pongs)
    send(sim, a, SendPacket(B, b"ping"))
    with pytest.raises(AssertionError, match="a pong arrived") as info:
        sim.run_for(1.0)
    assert "replay with MESHLITE_SEED=1" in info.value.__notes__


def test_run_until_reports_whether_the_predicate_held() -> None:
    sim, (a, b) = make(delay_s=(0.5, 0.5))
    send(sim, a, SendPacket(B, b"x"))
    assert sim.run_until(lambda: bool(b.got(PacketReceived)), timeout_s=2.0)
    assert 0.5 <= sim.clock.now <= 0.6
    assert not sim.run_until(lambda: False, timeout_s=2.0)
    assert sim.clock.now == pytest.approx(2.5, abs=0.11)


def test_replay_hint_and_seed_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AssertionError) as info, replay_hint(1234):
        raise AssertionError("boom")
    assert info.value.__notes__ == ["replay with MESHLITE_SEED=1234"]
    monkeypatch.delenv("MESHLITE_SEED", raising=False)
    monkeypatch.delenv("MESHLITE_LONG", raising=False)
    assert sim_seeds(3, base=10) == [10, 11, 12]
    monkeypatch.setenv("MESHLITE_LONG", "1")
    assert len(sim_seeds(3, long_count=8)) == 8
    monkeypatch.setenv("MESHLITE_SEED", "77")
    assert sim_seeds(3) == [77]
    monkeypatch.setenv("MESHLITE_SEED", "x")
    with pytest.raises(ConfigError, match="MESHLITE_SEED"):
        sim_seeds()


def test_network_validates_its_settings() -> None:
    with pytest.raises(ConfigError, match="loss"):
        SimNetwork(loss=1.5)
    with pytest.raises(ConfigError, match="delay_s"):
        SimNetwork(delay_s=(0.2, 0.1))
    net = SimNetwork()
    Simulation(0, net)
    with pytest.raises(ConfigError, match="one simulation"):
        Simulation(0, net)


def addr_labels() -> list[Addr]:
    return [sim_addr(i) for i in (0, 254, 255, 10_000)]


def test_addresses_are_labels_in_ten_dot_zero() -> None:
    assert addr_labels() == [
        ("10.0.0.1", 7946),
        ("10.0.0.255", 7946),
        ("10.0.1.0", 7946),
        ("10.0.39.17", 7946),
    ]
