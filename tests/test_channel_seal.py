"""meshlite._channel_seal: channel frames bound by id and sequence, no replay hole."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlite._channel_seal import (
    CHANNEL_FRAME_TAG,
    CHANNEL_HEADER_BYTES,
    CHANNEL_ID_BYTES,
    ChannelOpener,
    ChannelSealer,
    channel_header,
    parse_channel_header,
)
from meshlite._core.raft.codec import decode_raft
from meshlite._core.wire import DecodeError, decode_message
from meshlite._crypto import DEFAULT_WINDOW_S, PLAINTEXT_OVERHEAD, AuthError, Keyring, Sealer

T0 = 1_700_000_000.0  # a fixed wall-clock instant: every test passes time explicitly
KEY = bytes(range(32))


def sealer(keyed: bool = True) -> Sealer:
    return Sealer(Keyring([KEY]) if keyed else None, "prod")


def record(n: int, keyed: bool = True) -> list[bytes]:
    """The frames of one channel carrying payloads b"0", b"1", ..."""
    sending = ChannelSealer(sealer(keyed))
    return [sending.seal(str(i).encode(), T0 + i / 1000) for i in range(n)]


def refusal(opener: ChannelOpener, frame: bytes, now_s: float = T0 + 1) -> str:
    with pytest.raises(AuthError) as info:
        opener.open(frame, now_s)
    return info.value.reason


# ---------------------------------------------------------------------------------------
# Header


@given(channel_id=st.binary(min_size=CHANNEL_ID_BYTES, max_size=CHANNEL_ID_BYTES))
def test_header_round_trip(channel_id: bytes) -> None:
    for seq in (0, 1, 2**64 - 1):
        header = channel_header(channel_id, seq)
        assert len(header) == CHANNEL_HEADER_BYTES
        assert parse_channel_header(header + b"payload") == (channel_id, seq)


@given(data=st.binary(max_size=64))
def test_header_parse_of_arbitrary_bytes_is_none_or_exact(data: bytes) -> None:
    parsed = parse_channel_header(data)
    if parsed is None:
        assert len(data) < CHANNEL_HEADER_BYTES or data[:1] != CHANNEL_FRAME_TAG
    else:
        assert data.startswith(channel_header(*parsed))


def test_a_channel_id_must_be_16_bytes() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        ChannelSealer(sealer(), b"short")


def test_channel_plaintext_decodes_as_neither_a_wire_nor_a_raft_message() -> None:
    plaintext = sealer().open(record(1)[0], T0)
    assert plaintext[:1] == CHANNEL_FRAME_TAG
    with pytest.raises(DecodeError):
        decode_message(plaintext)
    with pytest.raises(DecodeError):
        decode_raft(plaintext)


# ---------------------------------------------------------------------------------------
# Opening: examples


@pytest.mark.parametrize("keyed", [True, False])
def test_frames_open_in_order_with_one_cache_entry(keyed: bool) -> None:
    receiver = sealer(keyed)
    opener = ChannelOpener(receiver)
    frames = record(500, keyed)
    assert [opener.open(f, T0 + 1) for f in frames] == [str(i).encode() for i in range(500)]
    assert len(receiver.replay_cache) == (1 if keyed else 0)


def test_a_recorded_channel_replayed_on_a_new_connection_is_refused() -> None:
    receiver = sealer()
    frames = record(10)
    first = ChannelOpener(receiver)
    for f in frames:
        first.open(f, T0 + 1)
    assert refusal(ChannelOpener(receiver), frames[0]) == "replay"
    assert refusal(ChannelOpener(receiver), frames[0], T0 + DEFAULT_WINDOW_S + 2) == "stale"
    for f in frames[1:]:  # a later frame cannot start a connection: another domain
        assert refusal(ChannelOpener(receiver), f) == "auth"


def test_a_frame_spliced_from_another_channel_is_refused() -> None:
    opener = ChannelOpener(sealer())
    ours, theirs = record(5), record(5)
    for f in ours[:3]:
        opener.open(f, T0 + 1)
    assert refusal(opener, theirs[3]) == "channel"  # the right number, another channel


@pytest.mark.parametrize(
    "order",
    [[0, 1, 1], [0, 2], [0, 1, 0], [1], [0, 1, 3]],
    ids=["duplicate", "2-before-1", "back-to-0", "starts-at-1", "3-before-2"],
)
def test_duplicated_skipped_or_reordered_frames_are_refused(order: list[int]) -> None:
    opener = ChannelOpener(sealer())
    frames = record(5)
    *accepted, bad = order
    for i in accepted:
        opener.open(frames[i], T0 + 1)
    assert refusal(opener, frames[bad]) in {"channel", "auth"}  # auth: frame 1+ first
    assert opener.refused


def test_a_tampered_frame_is_refused_and_nothing_after_it() -> None:
    opener = ChannelOpener(sealer())
    frames = record(3)
    opener.open(frames[0], T0 + 1)
    tampered = bytearray(frames[1])
    tampered[-1] ^= 1
    assert refusal(opener, bytes(tampered)) == "auth"
    assert refusal(opener, frames[1]) == "channel"  # refused once: refused for good


def test_a_frame_without_a_header_is_refused() -> None:
    sending = sealer()
    assert refusal(ChannelOpener(sealer()), sending.seal(b"\x93\x01", T0)) == "channel"
    opener = ChannelOpener(sealer())
    opener.open(record(1)[0], T0 + 1)
    assert refusal(opener, sending.seal_in_channel(b"x" * 40, T0)) == "channel"


def test_continuation_frames_outside_the_window_are_stale() -> None:
    opener = ChannelOpener(sealer())
    frames = record(2)
    opener.open(frames[0], T0)
    assert refusal(opener, frames[1], T0 + DEFAULT_WINDOW_S + 1) == "stale"


# ---------------------------------------------------------------------------------------
# Properties: arbitrary bytes, and no replay hole whatever the attacker delivers


@given(frames=st.lists(st.binary(max_size=120), max_size=4), keyed=st.booleans())
def test_arbitrary_frames_raise_only_auth_error(frames: list[bytes], keyed: bool) -> None:
    opener = ChannelOpener(sealer(keyed))
    for frame in frames:
        try:
            payload = opener.open(frame, T0)
        except AuthError:
            assert opener.refused
            return
        assert not keyed  # nobody without the key forges a keyed frame
        assert payload == frame[PLAINTEXT_OVERHEAD + CHANNEL_HEADER_BYTES :]


CHANNELS, FRAMES = 3, 4
# Each connection the attacker opens delivers some recorded frames, in any order.
deliveries = st.lists(
    st.lists(st.tuples(st.integers(0, CHANNELS - 1), st.integers(0, FRAMES - 1)), max_size=8),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(connections=deliveries)
def test_recorded_frames_are_accepted_once_in_order_whatever_the_delivery(
    connections: list[list[tuple[int, int]]],
) -> None:
    receiver = sealer()
    recorded = [record(FRAMES) for _ in range(CHANNELS)]
    payload_of = {f: (c, n) for c, frames in enumerate(recorded) for n, f in enumerate(frames)}
    accepted: list[tuple[int, int]] = []
    for connection in connections:
        opener = ChannelOpener(receiver)
        got: list[tuple[int, int]] = []
        for c, n in connection:
            frame = recorded[c][n]
            try:
                assert opener.open(frame, T0 + 1) == str(n).encode()
            except AuthError:
                break
            got.append(payload_of[frame])
        if got:  # one connection: frames 0, 1, 2, ... of a single channel
            assert got == [(got[0][0], n) for n in range(len(got))]
        accepted.extend(got)
    assert len(accepted) == len(set(accepted))  # no frame is ever accepted twice
