"""Raft messages on the wire: round trips, and garbage becomes DecodeError only."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlite._core.raft import (
    Append,
    AppendResp,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResp,
    InstallSnapshot,
    Message,
    Snapshot,
    TimeoutNow,
    Vote,
    VoteResp,
    decode_raft,
    decode_voters,
    encode_raft,
    encode_voters,
)
from meshlite._core.wire import DecodeError
from meshlite.testing import long_run

EXAMPLES = 2000 if long_run() else 200
names = st.text(min_size=1, max_size=12)
uints = st.integers(min_value=0, max_value=2**64 - 1)
small = st.integers(min_value=0, max_value=1000)
voter_sets = st.lists(names, max_size=7, unique=True).map(tuple)


@st.composite
def appends(draw: st.DrawFn) -> Append:
    prev_index, prev_term = draw(small), draw(small)
    steps = draw(st.lists(st.integers(0, 3), max_size=6))
    term = prev_term
    entries = []
    for offset, step in enumerate(steps, 1):
        term += step
        kind = draw(st.sampled_from(EntryKind))
        data = encode_voters(draw(voter_sets)) if kind is EntryKind.CONFIG else draw(st.binary())
        entries.append(Entry(prev_index + offset, term, kind, data))
    msg_term = term + draw(st.integers(0, 5))
    return Append(
        draw(names), draw(names), msg_term, prev_index, prev_term, tuple(entries), draw(uints)
    )


@st.composite
def snapshots(draw: st.DrawFn) -> InstallSnapshot:
    term = draw(small)
    snap = Snapshot(draw(st.integers(1, 10**9)), term, draw(voter_sets), draw(st.binary()))
    return InstallSnapshot(draw(names), draw(names), term + draw(small), snap)


messages = st.one_of(
    st.builds(Vote, names, names, uints, uints, uints, st.booleans(), st.booleans()),
    st.builds(VoteResp, names, names, uints, st.booleans(), st.booleans()),
    appends(),
    st.builds(AppendResp, names, names, uints, uints, st.booleans(), uints, uints),
    st.builds(Heartbeat, names, names, uints, uints, uints),
    st.builds(HeartbeatResp, names, names, uints, uints),
    snapshots(),
    st.builds(TimeoutNow, names, names, uints),
)


@settings(max_examples=EXAMPLES)
@given(messages)
def test_round_trip(msg: Message) -> None:
    assert decode_raft(encode_raft(msg)) == msg


@settings(max_examples=EXAMPLES)
@given(st.binary(max_size=300))
def test_garbage_is_decode_error_only(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_raft(data)


@settings(max_examples=EXAMPLES)
@given(messages, st.data())
def test_damaged_messages_decode_or_fail_cleanly(msg: Message, data: st.DataObject) -> None:
    raw = bytearray(encode_raft(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        decoded = decode_raft(bytes(raw[:cut]))
    except DecodeError:
        return
    assert decode_raft(encode_raft(decoded)) == decoded  # whatever decodes is well-formed


@settings(max_examples=EXAMPLES)
@given(
    st.lists(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(2**63), 2**64 - 1),
            st.text(max_size=5),
            st.binary(max_size=5),
            st.lists(small, max_size=3),
        ),
        max_size=9,
    )
)
def test_structured_garbage(fields: list[object]) -> None:
    for kind in range(10):
        with contextlib.suppress(DecodeError):
            decode_raft(msgpack.packb([kind, *fields]))


def append_wire(entries: list[list[object]], term: int = 5, prev_term: int = 1) -> bytes:
    return msgpack.packb([3, "a", "b", term, 0, prev_term, 0, entries])


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (append_wire([[2, 0, b""], [1, 0, b""]]), "terms decrease"),
        (append_wire([[6, 0, b""]]), "entry term above message term"),
        (append_wire([[0, 0, b""]], prev_term=1), "entry term below prev_term"),
        (append_wire([[1, 9, b""]]), "unknown entry kind"),
        (append_wire([[1, 1, b"\xc1"]]), "CONFIG data not a voter set"),
        (append_wire([[1, 0, "text"]]), "data not bytes"),
        (msgpack.packb([1, "a", "b", 1, 0, 0, 1, False]), "int where a bool belongs"),
        (msgpack.packb([2, "a", "b", 1, False]), "missing field"),
        (msgpack.packb([6, "a", "b", -1, 0]), "negative term"),
        (msgpack.packb([8, "", "b", 1]), "empty name"),
        (msgpack.packb([99, "a", "b", 1]), "unknown kind"),
        (msgpack.packb([7, "a", "b", 1, 0, 0, [], b""]), "snapshot at index 0"),
        (msgpack.packb([7, "a", "b", 1, 5, 2, [], b""]), "snapshot term above message"),
        (msgpack.packb([7, "a", "b", 3, 5, 2, ["x", "x"], b""]), "duplicate voters"),
        (msgpack.packb({"kind": 1}), "not an array"),
    ],
)
def test_invalid_messages(raw: bytes, why: str) -> None:
    with pytest.raises(DecodeError):
        decode_raft(raw)


def test_size_limit() -> None:
    msg = Append("a", "b", 1, 0, 0, (Entry(1, 1, EntryKind.NORMAL, b"x" * 2000),), 0)
    raw = encode_raft(msg)
    assert decode_raft(raw) == msg
    with pytest.raises(DecodeError):
        decode_raft(raw, max_bytes=1000)


def test_voters_round_trip_sorted() -> None:
    assert decode_voters(encode_voters(("c", "a", "b"))) == ("a", "b", "c")
    with pytest.raises(DecodeError):
        decode_voters(msgpack.packb(["a", "a"]))
    with pytest.raises(DecodeError):
        decode_voters(msgpack.packb("a"))
