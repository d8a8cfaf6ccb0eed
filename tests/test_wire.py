"""Wire format: round trips, and garbage only ever decodes or raises DecodeError."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlite._core import wire
from meshlite._core.wire import DecodeError

names = st.text(min_size=1, max_size=20).filter(lambda s: len(s.encode()) <= wire.MAX_NAME_BYTES)
u64 = st.integers(min_value=0, max_value=2**64 - 1)
hosts = st.sampled_from(["127.0.0.1", "10.0.0.5", "::1", "fe80::1"])
addrs = st.tuples(hosts, st.integers(min_value=1, max_value=65535))
metas = st.dictionaries(st.text(max_size=8), st.text(max_size=16), max_size=6).filter(
    lambda m: sum(len(k.encode()) + len(v.encode()) for k, v in m.items()) <= 512
)
node_states = st.builds(wire.NodeState, names, addrs, u64, st.integers(0, 3), metas)

messages: st.SearchStrategy[wire.Message] = st.one_of(
    st.builds(wire.Ping, u64, names, names, addrs),
    st.builds(wire.IndirectPing, u64, names, addrs, st.booleans(), names, addrs),
    st.builds(wire.Ack, u64, st.binary(max_size=64)),
    st.builds(wire.Nack, u64),
    st.builds(wire.Alive, u64, names, addrs, metas),
    st.builds(wire.Suspect, u64, names, names),
    st.builds(wire.Dead, u64, names, names),
    st.builds(
        wire.PushPull,
        st.booleans(),
        st.lists(node_states, max_size=5).map(tuple),
        st.binary(max_size=64),
    ),
    st.builds(wire.User, st.binary(max_size=128)),
    st.builds(wire.KeyringRequest, st.sampled_from(["list", "install"]), st.none() | st.binary()),
    st.builds(wire.KeyringResponse, st.booleans(), st.text(max_size=20), st.lists(st.text())),
)


@given(messages)
def test_message_round_trip(msg: wire.Message) -> None:
    assert wire.decode_message(wire.encode_message(msg)) == msg


@given(names, st.lists(messages, max_size=8))
def test_packet_round_trip(sender: str, msgs: list[wire.Message]) -> None:
    data = wire.encode_packet(sender, [wire.encode_message(m) for m in msgs])
    assert wire.decode_packet(data) == (sender, msgs)


@given(names, st.lists(messages, max_size=8))
def test_packet_overhead_is_an_upper_bound(sender: str, msgs: list[wire.Message]) -> None:
    encoded = [wire.encode_message(m) for m in msgs]
    data = wire.encode_packet(sender, encoded)
    assert len(data) <= wire.packet_overhead(sender, len(encoded)) + sum(map(len, encoded))


@given(messages)
def test_peek_kind_agrees_with_decode(msg: wire.Message) -> None:
    assert wire.peek_kind(wire.encode_message(msg)) == msg.KIND


@settings(max_examples=500)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    for decode in (wire.decode_message, wire.decode_packet):
        with contextlib.suppress(DecodeError):
            decode(data)


@settings(max_examples=500)
@given(messages, st.data())
def test_mutated_messages_decode_or_raise_decode_error(
    msg: wire.Message, data: st.DataObject
) -> None:
    raw = bytearray(wire.encode_message(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    with contextlib.suppress(DecodeError):
        wire.decode_message(bytes(raw))


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats()
        | st.text()
        | st.binary(),
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
        max_leaves=20,
    )
)
def test_any_msgpack_value_decodes_or_raises_decode_error(value: object) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    for decode in (wire.decode_message, wire.decode_packet):
        with contextlib.suppress(DecodeError):
            decode(data)


def test_unknown_kind_is_a_decode_error_and_skipped_inside_a_packet() -> None:
    unknown = msgpack.packb([200, 1, 2])
    with pytest.raises(DecodeError, match="unknown message kind"):
        wire.decode_message(unknown)
    good = wire.encode_message(wire.Nack(7))
    assert wire.decode_packet(wire.encode_packet("a", [unknown, good])) == ("a", [wire.Nack(7)])


def test_bounds_are_enforced_before_allocation() -> None:
    big = wire.encode_message(wire.User(b"x" * 2000))
    with pytest.raises(DecodeError, match="too large"):
        wire.decode_message(big, max_bytes=1000)
    with pytest.raises(DecodeError):
        wire.decode_message(
            msgpack.packb([int(wire.Kind.ALIVE), 1, "n", ["::1", 1], {"k": "v" * 600}])
        )


def test_bool_is_not_an_integer_and_ports_are_checked() -> None:
    with pytest.raises(DecodeError):
        wire.decode_message(msgpack.packb([int(wire.Kind.NACK), True]))
    with pytest.raises(DecodeError):
        wire.decode_message(msgpack.packb([int(wire.Kind.PING), 1, "a", "b", ["127.0.0.1", 0]]))
