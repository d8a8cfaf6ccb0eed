"""One SwimCore driven by hand: the protocol step by step, and hostile input."""

from __future__ import annotations

import random

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlite._core import probe as probe_mod
from meshlite._core.config import SwimConfig
from meshlite._core.events import (
    Addr,
    Effect,
    JoinRequested,
    LeaveRequested,
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
)
from meshlite._core.swim import SwimCore, push_pull_scale_s
from meshlite._core.wire import (
    Ack,
    Alive,
    Dead,
    IndirectPing,
    KeyringRequest,
    Message,
    Nack,
    NodeState,
    Ping,
    PushPull,
    Suspect,
    User,
    decode_message,
    decode_packet,
    encode_message,
    encode_packet,
)
from meshlite.errors import ConfigError

CFG = SwimConfig.local()
ME: Addr = ("10.0.0.1", 7000)
PEER: Addr = ("10.0.0.2", 7000)
OTHER: Addr = ("10.0.0.3", 7000)


def make(config: SwimConfig = CFG, **kw: object) -> SwimCore:
    return SwimCore("me", ME, config, random.Random(7), 0.0, **kw)  # type: ignore[arg-type]


def pkt(sender: str, *msgs: Message) -> PacketReceived:
    return PacketReceived(PEER, encode_packet(sender, [encode_message(m) for m in msgs]))


def sent(effects: list[Effect]) -> list[tuple[Addr, list[Message]]]:
    out = []
    for e in effects:
        if isinstance(e, SendPacket):
            _sender, msgs = decode_packet(e.data)
            out.append((e.dst, msgs))
    return out


def first_of(effects: list[Effect], kind: type[Message]) -> tuple[Addr, Message]:
    for dst, msgs in sent(effects):
        for m in msgs:
            if isinstance(m, kind):
                return dst, m
    raise AssertionError(f"no {kind.__name__} sent in {effects!r}")


def run_to(core: SwimCore, t: float) -> list[Effect]:
    """Fire every timer due up to ``t`` (at its own deadline); all effects."""
    effects: list[Effect] = []
    for _ in range(10_000):
        deadline = core.next_deadline()
        if deadline > t:
            return effects
        effects += core.handle(TimerFired(), deadline)
    raise AssertionError("timer livelock")


def with_peers(core: SwimCore, *peers: tuple[str, Addr]) -> None:
    for name, addr in peers:
        core.handle(pkt(name, Alive(1, name, addr)), 0.0)


# ------------------------------------------------------------------------- answering


def test_ping_is_acked_to_the_source_address() -> None:
    core = make()
    effects = core.handle(pkt("peer", Ping(42, "me", "peer", OTHER)), 1.0)
    dst, ack = first_of(effects, Ack)
    assert dst == OTHER and ack == Ack(42)


def test_ping_for_another_name_is_dropped_and_counted() -> None:
    core = make()
    assert sent(core.handle(pkt("peer", Ping(1, "someone-else", "peer", PEER)), 1.0)) == []
    assert core.stats["drop_wrong_target"] == 1


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x92\xa1x\x91\x05", b"\x93" + b"\x00" * 3])
def test_garbage_packets_are_counted_not_raised(data: bytes) -> None:
    core = make()
    assert core.handle(PacketReceived(PEER, data), 1.0) == []
    assert core.stats.get("drop_decode", 0) + core.stats.get("udp_received", 0) == 1


def test_pushpull_or_keyring_over_udp_is_dropped() -> None:
    core = make()
    core.handle(pkt("peer", PushPull(False, ()), KeyringRequest("list")), 1.0)
    assert core.stats["drop_unexpected_kind"] == 2


# ------------------------------------------------------------------------- relaying


def test_indirect_ping_is_relayed_and_the_ack_forwarded() -> None:
    core = make()
    effects = core.handle(pkt("asker", IndirectPing(9, "target", OTHER, True, "asker", PEER)), 1.0)
    dst, ping = first_of(effects, Ping)
    assert dst == OTHER and isinstance(ping, Ping)
    assert ping.target == "target" and ping.source == "me" and ping.source_addr == ME
    effects = core.handle(
        PacketReceived(OTHER, encode_packet("t", [encode_message(Ack(ping.seq))])), 1.01
    )
    assert first_of(effects, Ack) == (PEER, Ack(9))
    later = run_to(core, 5.0)
    assert all(not isinstance(m, Nack) for _, msgs in sent(later) for m in msgs)


def test_relay_nacks_before_the_probe_timeout_then_forgets() -> None:
    core = make()
    core.handle(pkt("asker", IndirectPing(9, "target", OTHER, True, "asker", PEER)), 1.0)
    nack_at = 1.0 + probe_mod.NACK_AT_TIMEOUT_FRACTION * CFG.probe_timeout_s
    early = run_to(core, nack_at - 1e-6)
    assert all(not isinstance(m, Nack) for _, msgs in sent(early) for m in msgs)
    assert first_of(run_to(core, nack_at), Nack) == (PEER, Nack(9))
    run_to(core, 1.0 + CFG.probe_timeout_s)
    late = core.handle(PacketReceived(OTHER, encode_packet("t", [encode_message(Ack(1))])), 1.2)
    assert sent(late) == [] and core.stats["ack_unmatched"] == 1


def test_relay_without_nack_request_stays_silent() -> None:
    core = make()
    core.handle(pkt("asker", IndirectPing(9, "target", OTHER, False, "asker", PEER)), 1.0)
    effects = run_to(core, 1.0 + CFG.probe_timeout_s)
    assert all(not isinstance(m, Nack) for _, msgs in sent(effects) for m in msgs)


def test_indirect_ping_about_ourselves_is_answered_directly() -> None:
    core = make()
    effects = core.handle(pkt("asker", IndirectPing(3, "me", ME, True, "asker", PEER)), 1.0)
    assert first_of(effects, Ack) == (PEER, Ack(3))


def test_relays_in_flight_are_capped() -> None:
    core = make()
    for i in range(probe_mod.MAX_PENDING_RELAYS + 5):
        core.handle(pkt("asker", IndirectPing(i, "target", OTHER, True, "asker", PEER)), 1.0)
    assert core.stats["relays"] == probe_mod.MAX_PENDING_RELAYS
    assert core.stats["drop_relay_full"] == 5


# ------------------------------------------------------------------------- probing


def probe_started(core: SwimCore) -> tuple[float, Ping]:
    """Fire timers until a probe goes out; its start time and ping."""
    for _ in range(100):
        t = core.next_deadline()
        for _dst, msgs in sent(core.handle(TimerFired(), t)):
            pings = [m for m in msgs if isinstance(m, Ping)]
            if pings:
                return t, pings[0]
    raise AssertionError("no probe started")


def test_probe_ack_keeps_the_peer_alive_and_health_good() -> None:
    core = make()
    with_peers(core, ("peer", PEER))
    t, ping = probe_started(core)
    core.handle(
        PacketReceived(PEER, encode_packet("peer", [encode_message(Ack(ping.seq))])), t + 0.01
    )
    assert core.stats["probes_acked"] == 1 and core.health_score == 0
    quiet = run_to(core, t + CFG.probe_interval_s - 1e-6)  # no indirect probe, no new probe
    assert not any(isinstance(m, Ping | IndirectPing) for _, ms in sent(quiet) for m in ms)
    assert any(
        isinstance(m, Ping) for _, ms in sent(run_to(core, t + CFG.probe_interval_s)) for m in ms
    )


def test_failed_probe_goes_indirect_with_tcp_fallback_then_suspects() -> None:
    core = make()
    with_peers(core, ("peer", PEER), ("relay", OTHER))
    for _ in range(4):  # probe until the shuffled order reaches "peer"
        t, ping = probe_started(core)
        if ping.target == "peer":
            break
        core.handle(PacketReceived(OTHER, encode_packet("r", [encode_message(Ack(ping.seq))])), t)
    assert ping.target == "peer"
    timeout_at = t + CFG.probe_timeout_s
    assert not any(isinstance(e, SendStream) for e in run_to(core, timeout_at - 1e-6))
    effects = run_to(core, timeout_at)
    dst, req = first_of(effects, IndirectPing)
    assert dst == OTHER and req == IndirectPing(ping.seq, "peer", PEER, True, "me", ME)
    (stream,) = [e for e in effects if isinstance(e, SendStream)]
    assert stream.dst == PEER and decode_message(stream.data) == Ping(ping.seq, "peer", "me", ME)
    assert stream.timeout_s == pytest.approx(CFG.probe_interval_s - CFG.probe_timeout_s)
    core.handle(pkt("relay", Nack(ping.seq)), timeout_at + 0.01)
    core.handle(StreamReplied(stream.req_id, None), timeout_at + 0.05)
    effects = run_to(core, t + CFG.probe_interval_s)
    assert core.member("peer").status == "suspect"  # type: ignore[union-attr]
    assert [e.event.kind for e in effects if isinstance(e, MemberChanged)] == [
        MemberEventKind.SUSPECT
    ]
    assert core.stats["probes_failed"] == 1 and core.stats["suspicions"] == 1
    assert core.health_score == 0  # the one relay nacked: not our fault


def test_probing_a_suspect_carries_the_suspicion_so_it_can_refute() -> None:
    core = make()
    with_peers(core, ("peer", PEER))
    core.handle(pkt("x", Suspect(1, "peer", "x")), 0.0)
    effects = run_to(core, CFG.probe_interval_s)  # the first probe starts within an interval
    dst, msgs = next(p for p in sent(effects) if any(isinstance(m, Ping) for m in p[1]))
    assert dst == PEER and Suspect(1, "peer", "me") in msgs


def test_independent_confirmations_shorten_the_suspicion_and_are_regossiped() -> None:
    core = make()
    peers = [(n, ("10.0.0.9", 7000 + i)) for i, n in enumerate("abcd")]
    with_peers(core, *peers)  # 5 members: k = suspicion_mult - 2 = 1, min 0.6 s, max 3.6 s
    core.handle(pkt("a", Suspect(1, "b", "a")), 0.0)
    core.handle(pkt("a", Suspect(1, "b", "a")), 0.0)  # the accuser again: no confirmation
    assert core.stats.get("suspicion_confirmations", 0) == 0
    core.handle(pkt("c", Suspect(1, "b", "c")), 0.0)
    assert core.stats["suspicion_confirmations"] == 1
    _, msgs = sent(core.handle(pkt("d", Ping(1, "me", "d", PEER)), 0.0))[0]
    assert Suspect(1, "b", "c") in msgs  # the confirmation spreads (replacing "a"'s)
    run_to(core, 0.59)
    assert core.member("b").status == "suspect"  # type: ignore[union-attr]
    run_to(core, 0.61)  # min timeout: without the confirmation it would be 3.6 s
    assert core.member("b").status == "dead"  # type: ignore[union-attr]


def test_tcp_fallback_ack_prevents_the_suspicion() -> None:
    core = make()
    with_peers(core, ("peer", PEER))
    t, ping = probe_started(core)
    effects = run_to(core, t + CFG.probe_timeout_s)
    (stream,) = [e for e in effects if isinstance(e, SendStream)]
    core.handle(StreamReplied(stream.req_id, encode_message(Ack(ping.seq))), t + 0.15)
    run_to(core, t + CFG.probe_interval_s)
    assert core.member("peer").status == "alive"  # type: ignore[union-attr]
    assert core.stats["probes_tcp_only"] == 1


def test_next_deadline_always_moves_forward() -> None:
    core = make()
    with_peers(core, ("a", PEER), ("b", OTHER))
    t = 0.0
    for _ in range(2000):
        t = max(t, core.next_deadline())
        core.handle(TimerFired(), t)
        assert core.next_deadline() > t
    assert t > 10.0


def test_push_pull_interval_scaling() -> None:
    assert [push_pull_scale_s(1.0, n) for n in (1, 32, 33, 64, 65, 128, 129)] == [
        1.0,
        1.0,
        2.0,
        2.0,
        3.0,
        3.0,
        4.0,
    ]


# ------------------------------------------------------------------------- streams


def test_push_pull_request_is_answered_with_our_state_then_merged() -> None:
    core = make(local_state=lambda: b"mine")
    request = PushPull(True, (NodeState("peer", PEER, 3, 0, {"r": "x"}),), b"theirs")
    effects = core.handle(StreamReceived(5, PEER, encode_message(request)), 1.0)
    (reply,) = [e for e in effects if isinstance(e, ReplyStream)]
    answer = decode_message(reply.data)
    assert isinstance(answer, PushPull) and answer.join and answer.user_state == b"mine"
    assert [n.name for n in answer.nodes] == ["me"]  # our state from before the merge
    assert core.member("peer").meta == {"r": "x"}  # type: ignore[union-attr]
    assert any(getattr(e, "state", None) == b"theirs" for e in effects)


def test_merge_turns_dead_into_suspect_and_keeps_left() -> None:
    core = make()
    with_peers(core, ("d", PEER), ("l", OTHER), ("s", ("10.0.0.4", 1)))
    state = PushPull(
        False,
        (
            NodeState("d", PEER, 1, 2),
            NodeState("l", OTHER, 1, 3),
            NodeState("s", ("10.0.0.4", 1), 1, 1),
            NodeState("bogus", ("10.0.0.5", 1), 1, 9),
        ),
    )
    core.handle(StreamReceived(1, PEER, encode_message(state)), 1.0)
    view = {m.name: m.status for m in core.members()}
    assert view == {"me": "alive", "d": "suspect", "l": "left", "s": "suspect"}
    assert core.stats["drop_bad_node_state"] == 1


def test_stream_ping_is_acked_only_for_us() -> None:
    core = make()
    ok = core.handle(StreamReceived(1, PEER, encode_message(Ping(8, "me", "p", PEER))), 1.0)
    assert ok == [ReplyStream(1, encode_message(Ack(8)))]
    assert core.handle(StreamReceived(2, PEER, encode_message(Ping(8, "x", "p", PEER))), 1.0) == []


def test_streams_with_garbage_or_keyring_get_no_reply() -> None:
    core = make()
    assert core.handle(StreamReceived(1, PEER, b"\xff\x00"), 1.0) == []
    assert core.handle(StreamReceived(2, PEER, encode_message(KeyringRequest("list"))), 1.0) == []
    assert core.handle(StreamReceived(3, PEER, encode_message(Ack(1))), 1.0) == []
    assert core.handle(StreamReplied(99, b"whatever"), 1.0) == []
    assert core.stats["drop_stream_decode"] == 1
    assert core.stats["ignored_keyring_stream"] == 1
    assert core.stats["stream_reply_unmatched"] == 1


def test_join_skips_our_own_address() -> None:
    core = make()
    effects = core.handle(JoinRequested((ME, PEER)), 0.0)
    assert [e.dst for e in effects if isinstance(e, SendStream)] == [PEER]


# ------------------------------------------------------------------------- news


def test_dead_about_ourselves_is_refuted_unless_leaving() -> None:
    core = make()
    core.handle(pkt("x", Dead(0, "me", "x")), 1.0)
    assert core.member("me").status == "alive"  # type: ignore[union-attr]
    assert core.member("me").incarnation == 1  # type: ignore[union-attr]
    assert core.stats["refutes"] == 1 and core.health_score == 1


def test_alive_with_our_incarnation_but_other_meta_is_refuted() -> None:
    core = make(meta={"v": "1"})
    core.handle(pkt("x", Alive(0, "me", ME, {"v": "forged"})), 1.0)
    me = core.member("me")
    assert me is not None and me.incarnation == 1 and me.meta == {"v": "1"}


def test_user_messages_are_delivered_every_time_and_never_relayed_by_the_core() -> None:
    """Relaying is the application's decision (it knows what is news: gossip.py)."""
    core = make()
    with_peers(core, ("peer", PEER))
    first = core.handle(pkt("peer", User(b"x")), 1.0)
    again = core.handle(pkt("peer", User(b"x")), 1.1)
    assert [e for e in first if isinstance(e, UserMessage)] == [UserMessage(b"x")]
    assert [e for e in again if isinstance(e, UserMessage)] == [UserMessage(b"x")]
    assert core.stats["user_delivered"] == 2
    _, msgs = sent(core.handle(pkt("peer", Ping(1, "me", "peer", PEER)), 1.2))[0]
    assert User(b"x") not in msgs  # nothing queued to relay
    core.handle(UserBroadcast("k", b"x"), 1.3)  # the application relays it
    _, msgs = sent(core.handle(pkt("peer", Ping(2, "me", "peer", PEER)), 1.4))[0]
    assert User(b"x") in msgs  # piggybacked on the ack


def test_a_newer_user_broadcast_replaces_the_queued_one_of_its_key() -> None:
    core = make()
    core.handle(UserBroadcast("k", b"v1"), 1.0)
    core.handle(UserBroadcast("k", b"v2"), 1.0)  # replaces v1 in the queue
    _, msgs = sent(core.handle(pkt("peer", Ping(1, "me", "peer", PEER)), 1.2))[0]
    assert User(b"v2") in msgs and User(b"v1") not in msgs


def test_piggybacking_respects_the_datagram_budget() -> None:
    cfg = attrs.evolve(CFG, udp_buffer_bytes=300)
    core = make(cfg)
    for i in range(50):
        core.handle(pkt("peer", Alive(1, f"node-{i:03d}", ("10.1.0.1", 1000 + i))), 0.0)
    effects = core.handle(pkt("peer", Ping(1, "me", "peer", PEER)), 0.1)
    (packet,) = [e for e in effects if isinstance(e, SendPacket)]
    _, msgs = decode_packet(packet.data)
    assert len(packet.data) <= 300 and msgs[0] == Ack(1) and len(msgs) > 3


def test_leave_broadcasts_dead_from_ourselves_with_a_new_incarnation() -> None:
    core = make()
    with_peers(core, ("peer", PEER))
    effects = core.handle(LeaveRequested(), 1.0)
    assert [e.event.kind for e in effects if isinstance(e, MemberChanged)] == [MemberEventKind.LEFT]
    assert core.pending_broadcasts() == 1
    _, msgs = sent(core.handle(pkt("peer", Ping(1, "me", "peer", PEER)), 1.1))[0]
    assert Dead(1, "me", "me") in msgs
    core.handle(pkt("x", Alive(5, "me", ME)), 1.2)  # a stale alive cannot revive us
    assert core.member("me").status == "left"  # type: ignore[union-attr]
    assert core.handle(LeaveRequested(), 1.3) == []


def test_meta_change_bumps_incarnation_and_notifies() -> None:
    core = make()
    effects = core.handle(MetaChanged({"zone": "b"}), 1.0)
    me = core.member("me")
    assert me is not None and me.incarnation == 1 and me.meta == {"zone": "b"}
    assert [e.event.kind for e in effects if isinstance(e, MemberChanged)] == [
        MemberEventKind.UPDATE
    ]


def test_local_misuse_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="node name"):
        SwimCore("", ME, CFG, random.Random(), 0.0)
    with pytest.raises(ConfigError, match="at most 512"):
        make(meta={"k": "v" * 600})
    core = make()
    with pytest.raises(ConfigError, match="at most 512"):
        core.handle(MetaChanged({"k": "v" * 600}), 1.0)
    with pytest.raises(ConfigError, match="udp_buffer_bytes"):
        core.handle(UserBroadcast("k", b"x" * 2000), 1.0)


# ------------------------------------------------------------------------- hostile input

_names = st.sampled_from(["me", "peer", "other", "x"])
_addrs = st.sampled_from([ME, PEER, OTHER, ("::1", 9)])
_incs = st.integers(0, 5) | st.just(2**64 - 1)
_metas = st.dictionaries(st.sampled_from(["a", "b"]), st.sampled_from(["", "1"]), max_size=2)
_messages = st.one_of(
    st.builds(Ping, st.integers(0, 20), _names, _names, _addrs),
    st.builds(IndirectPing, st.integers(0, 20), _names, _addrs, st.booleans(), _names, _addrs),
    st.builds(Ack, st.integers(0, 20)),
    st.builds(Nack, st.integers(0, 20)),
    st.builds(Alive, _incs, _names, _addrs, _metas),
    st.builds(Suspect, _incs, _names, _names),
    st.builds(Dead, _incs, _names, _names),
    st.builds(User, st.binary(max_size=20)),
)
_inputs = st.one_of(
    st.lists(_messages, max_size=4).map(lambda ms: ("packet", ms)),
    st.binary(max_size=64).map(lambda b: ("raw", b)),
    st.floats(0.0, 3.0).map(lambda dt: ("time", dt)),
    st.lists(
        st.builds(NodeState, _names, _addrs, _incs, st.integers(0, 5), _metas), max_size=4
    ).map(lambda ns: ("pushpull", ns)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_inputs, max_size=30))
def test_any_input_sequence_is_survived(inputs: list[tuple[str, object]]) -> None:
    core = make()
    now = last = 0.0  # last: the time of the latest input (time never runs backwards)
    for kind, value in inputs:
        if kind == "packet":
            core.handle(pkt("peer", *value), now)  # type: ignore[misc]
        elif kind == "raw":
            core.handle(PacketReceived(PEER, value), now)  # type: ignore[arg-type]
        elif kind == "pushpull":
            data = encode_message(PushPull(False, tuple(value)))  # type: ignore[arg-type]
            core.handle(StreamReceived(1, PEER, data), now)
        else:
            now += value  # type: ignore[operator]
        # An input may make a timer due at once (a confirmation shrinks a suspicion past
        # its elapsed time; memberlist then fires immediately): run what is due, as the
        # driver does, before checking that no deadline is left in the past.
        for _ in range(1000):
            if core.next_deadline() > now:
                break
            last = max(last, core.next_deadline())
            core.handle(TimerFired(), last)
        last = now
        me = core.member("me")
        assert me is not None and me.status == "alive" and me.address == ME[0]
        assert core.next_deadline() > now
