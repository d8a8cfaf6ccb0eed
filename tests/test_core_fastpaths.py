"""The core's fast paths answer exactly what the straightforward computation would.

Each shortcut taken for speed (the decode memo, re-gossip without re-encoding, cached
minimum deadlines, the queue's packed sort keys and their renumbering, interned names)
is checked here against the plain computation it replaces.
"""

from __future__ import annotations

import random
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlite._core import broadcasts, wire
from meshlite._core.broadcasts import TransmitLimitedQueue
from meshlite._core.config import SwimConfig
from meshlite._core.events import PacketReceived, Status, TimerFired
from meshlite._core.members import MemberTable
from meshlite._core.swim import SwimCore
from meshlite._core.wire import Alive, Dead, DecodeError, Ping, Suspect

ADDR = ("10.0.0.1", 7946)


def _alive(i: int, inc: int = 0) -> Alive:
    return Alive(inc, f"node-{i}", (f"10.0.0.{i % 250 + 2}", 7946), {})


# ----------------------------------------------------------------------- wire memo

# Alives that make a datagram big enough to be split into messages (and memoised).
PADDING = [wire.encode_message(_alive(100 + i)) for i in range(6)]


def _packet(sender: str, encoded: list[bytes]) -> bytes:
    data = wire.encode_packet(sender, [*encoded, *PADDING])
    assert len(data) > wire._SPLIT_MIN_BYTES
    return data


def test_memoised_messages_decode_to_the_same_values_and_objects() -> None:
    msgs = [wire.encode_message(m) for m in (_alive(1), Suspect(2, "node-1", "node-2"))]
    data = _packet("node-9", [*msgs, wire.encode_message(Ping(1, "a", "b", ADDR))])
    first = wire.decode_packet(data)
    second = wire.decode_packet(data)
    assert first == second
    assert first[1][:3] == [_alive(1), Suspect(2, "node-1", "node-2"), Ping(1, "a", "b", ADDR)]
    assert first[1][0] is second[1][0]  # a broadcast: memoised
    assert first[1][2] is not second[1][2]  # a ping: not worth remembering


def test_small_and_split_datagrams_decode_alike() -> None:
    msgs = [wire.encode_message(_alive(7)), wire.encode_message(Ping(2, "a", "b", ADDR))]
    small = wire.encode_packet("s", msgs)
    assert len(small) <= wire._SPLIT_MIN_BYTES
    assert wire.decode_packet(small)[1] == wire.decode_packet(_packet("s", msgs))[1][:2]


def test_known_messages_do_not_excuse_a_broken_envelope() -> None:
    packet = _packet("s", [wire.encode_message(_alive(3))])
    wire.decode_packet(packet)  # its messages are now memoised
    for bad in (packet + b"\x00", packet[:-1], b"\x93" + packet[1:], b"\x92\xa0" + packet[3:]):
        with pytest.raises(DecodeError):
            wire.decode_packet(bad)


def test_invalid_msgpack_inside_any_message_rejects_the_whole_packet() -> None:
    bad_utf8 = b"\x95\x05\x00\xa2\xff\xfe\x92\xa810.0.0.1\xcd\x1f\x0a\x80"
    for packet in (
        wire.encode_packet("s", [wire.encode_message(_alive(4)), bad_utf8]),
        _packet("s", [wire.encode_message(_alive(4)), bad_utf8]),
    ):
        with pytest.raises(DecodeError):
            wire.decode_packet(packet)


def test_regossip_reuses_canonical_bytes_and_reencodes_anything_else() -> None:
    msg = _alive(5, inc=7)
    canonical = wire.encode_message(msg)
    # The same message with its incarnation as a uint64 rather than a fixint.
    assert canonical[:3] == b"\x95\x05\x07"
    odd = b"\x95\x05\xcf" + (7).to_bytes(8, "big") + canonical[3:]
    decoded = wire.decode_packet(_packet("s", [odd]))[1][0]
    assert decoded == msg
    assert wire.encode_message(decoded) == canonical  # never the peer's odd encoding
    again = wire.decode_packet(_packet("s", [canonical]))[1][0]
    assert again is not decoded and wire.encode_message(again) == canonical


def test_the_memo_stays_bounded() -> None:
    for i in range(wire._MEMO_ENTRIES + 10):
        wire.decode_packet(_packet("s", [wire.encode_message(_alive(i, inc=i))]))
    assert len(wire._MEMO) <= wire._MEMO_ENTRIES
    assert len(wire._RECEIVED) <= wire._MEMO_ENTRIES


def test_decoded_names_are_interned() -> None:
    name = "".join(["node-", "interned"])
    msg = wire.decode_packet(_packet("s", [wire.encode_message(_alive(0))]))[1][0]
    decoded = wire.decode_message(wire.encode_message(Dead(1, name, name)))
    assert isinstance(decoded, Dead) and decoded.node is sys.intern(name)
    assert isinstance(msg, Alive) and msg.node is sys.intern("node-0")


# ----------------------------------------------------------------------- queue


def _drain_order(q: TransmitLimitedQueue, rounds: int) -> list[list[bytes]]:
    return [q.get_broadcasts(1, 60) for _ in range(rounds)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcdefg"), st.integers(1, 30)), max_size=40))
def test_renumbering_seqs_changes_nothing(ops: list[tuple[str, int]]) -> None:
    """A queue whose seqs run out mid-way behaves exactly like one that never does."""
    fresh = TransmitLimitedQueue(3, lambda: 20)
    worn = TransmitLimitedQueue(3, lambda: 20)
    worn._seq = broadcasts._HALF_MAX - 3
    for i, (key, size) in enumerate(ops):
        for q in (fresh, worn):
            q.queue(key, key.encode() * size)
        if i % 4 == 3:
            assert _drain_order(fresh, 1) == _drain_order(worn, 1)
        for key in "abcdefg":
            assert fresh.transmits(key) == worn.transmits(key)
    assert len(ops) < 4 or worn._seq <= len(ops)  # renumbered on the fourth
    assert _drain_order(fresh, 30) == _drain_order(worn, 30)


def test_prune_drops_the_most_sent_then_smallest_then_oldest() -> None:
    q = TransmitLimitedQueue(5, lambda: 10)
    for key, size in (("a", 5), ("b", 3), ("c", 3), ("d", 9)):
        q.queue(key, b"x" * size)
    assert q.get_broadcasts(0, 9) == [b"x" * 9]  # d goes out once
    assert q.prune(3) == 1 and "d" not in q  # most transmitted first
    assert q.prune(2) == 1 and "b" not in q  # then the smallest, oldest first
    assert len(q) == len(q._ranked) == 2


# ----------------------------------------------------------------------- cached minima


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from("adrs"), st.integers(0, 3))))
def test_next_reap_matches_the_dead_members(ops: list[tuple[int, str, int]]) -> None:
    t = MemberTable("me", ADDR, {}, now=0.0)
    now = 0.0
    for i, what, inc in ops:
        now += 0.5
        name = f"n{i}"
        if what == "a":
            t.apply_alive(Alive(inc, name, ("10.0.0.2", 7000 + i)), now)
        elif what == "d":
            t.apply_dead(Dead(inc, name, "z" if inc % 2 else name), now)
        elif what == "s":
            t.apply_suspect(Suspect(inc, name, "z"), now)
        else:
            t.reap(now, 2.0)
        gone = [e.state_change_s for e in t if e.name != "me" and e.status in (2, 3)]
        assert t.next_reap_s(2.0) == (min(gone) + 2.0 if gone else None)
        # The order used for random picks still lists every member exactly once.
        assert sorted(t._order) == sorted(e.name for e in t)
        assert all(t._order[e.order_index] == e.name for e in t)


def test_next_suspicion_tracks_starts_confirmations_and_refutations() -> None:
    cfg = SwimConfig.lan()
    core = SwimCore("me", ADDR, cfg, random.Random(3), 0.0)
    peers = [_alive(i) for i in range(1, 12)]
    packet = wire.encode_packet("node-1", [wire.encode_message(m) for m in peers])
    core.handle(PacketReceived(ADDR, packet), 0.0)
    gossip = core._gossip

    def brute() -> float:
        return min((s.deadline_s for s in gossip._suspicions.values()), default=float("inf"))

    rng = random.Random(5)
    now = 0.0
    for _ in range(200):
        now += rng.uniform(0.0, 2.0)
        peer = rng.choice(peers)
        roll = rng.random()
        if roll < 0.5:  # an accusation, or a confirmation from another member
            msg = wire.encode_message(Suspect(0, peer.node, f"node-{rng.randint(1, 11)}"))
        elif roll < 0.7:
            msg = wire.encode_message(Alive(rng.randint(1, 3), peer.node, peer.addr))
        else:
            msg = wire.encode_message(Dead(0, peer.node, "node-2"))
        core.handle(PacketReceived(ADDR, wire.encode_packet("node-2", [msg])), now)
        assert gossip.next_suspicion_s() == brute()
        core.handle(TimerFired(), now)
        assert gossip.next_suspicion_s() == brute()
    assert core.stats.get("suspicions", 0) > 0


def test_stale_alives_leave_the_table_as_it_was() -> None:
    t = MemberTable("me", ADDR, {}, now=0.0)
    t.apply_alive(Alive(3, "b", ("10.0.0.2", 1)), 1.0)
    before = [(e.name, e.addr, e.incarnation, e.status) for e in t]
    assert t.is_old_alive("b", 3, ("10.0.0.2", 1))
    assert not t.is_old_alive("b", 4, ("10.0.0.2", 1))
    assert not t.is_old_alive("b", 2, ("10.0.0.2", 2))  # a conflict is not old news
    assert not t.is_old_alive("me", 0, ADDR)  # about us: the refutation rules decide
    assert t.get("b").status == Status.ALIVE  # type: ignore[union-attr]
    assert before == [(e.name, e.addr, e.incarnation, e.status) for e in t]
