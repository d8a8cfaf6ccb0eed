"""meshlite._crypto: keys, keyring rotation, sealed frames, replay protection, stream framing."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlite._crypto import (
    DEFAULT_WINDOW_S,
    MAX_KEYS,
    MAX_STREAM_FRAME_BYTES,
    PLAINTEXT_OVERHEAD,
    SEALED_OVERHEAD,
    AuthError,
    Keyring,
    ReplayCache,
    Sealer,
    StreamFrameError,
    encode_stream_frame,
    generate_key,
    parse_key,
    parse_length,
)
from meshlite.errors import ConfigError, KeyringError

T0 = 1_700_000_000.0  # a fixed wall-clock instant: every test passes time explicitly
KEY_A = base64.b64encode(bytes(range(32))).decode()
KEY_B = base64.b64encode(bytes(range(100, 116))).decode()  # a 16-byte key
KEY_C = base64.b64encode(bytes(range(200, 224))).decode()  # a 24-byte key

labels = st.text(max_size=40)
payloads = st.binary(max_size=2000)


def sealer(*keys: str, label: str = "prod", **kwargs: int) -> Sealer:
    return Sealer(Keyring(keys) if keys else None, label, **kwargs)


def reason_of(receiver: Sealer, frame: bytes, now_s: float = T0) -> str:
    with pytest.raises(AuthError) as info:
        receiver.open(frame, now_s)
    return info.value.reason


# ---------------------------------------------------------------------------------------
# Keys


def test_generate_key_is_32_random_bytes_of_base64() -> None:
    a, b = generate_key(), generate_key()
    assert len(parse_key(a)) == 32
    assert a != b


@pytest.mark.parametrize("size", [16, 24, 32])
def test_parse_key_accepts_base64_text_and_raw_bytes(size: int) -> None:
    raw = bytes(range(size))
    text = base64.b64encode(raw).decode()
    assert parse_key(text) == raw
    assert parse_key(f"  {text}\n") == raw  # a key file's trailing newline is fine
    assert parse_key(raw) == raw


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("", "is empty"),
        ("   \n", "is empty"),
        ("not base64!!", "not valid base64"),
        ("clé-é", "not valid base64"),
        (base64.b64encode(bytes(20)).decode(), "key, decoded from base64, is 20 bytes"),
        (base64.b64encode(bytes(64)).decode(), "is 64 bytes; it must be 16, 24 or 32"),
        (bytes(31), "raw key is 31 bytes"),
        (b"", "raw key is 0 bytes"),
        (12345, "must be base64 text or raw bytes, not int"),
    ],
)
def test_parse_key_errors_say_what_is_wrong_and_how_to_fix_it(key: object, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_key(key)  # type: ignore[arg-type]
    message = str(info.value)
    assert expected in message
    assert "generate one with `meshlite keygen`" in message


def test_parse_key_errors_never_echo_the_key() -> None:
    secret = base64.b64encode(b"S3cr3t-material-of-20").decode()
    with pytest.raises(ConfigError) as info:
        parse_key(secret)
    assert secret not in str(info.value)


# ---------------------------------------------------------------------------------------
# Keyring


def test_keyring_lists_primary_first_and_collapses_duplicates() -> None:
    ring = Keyring([KEY_A, KEY_B, KEY_A, parse_key(KEY_B)])
    assert ring.list() == [KEY_A, KEY_B]
    assert ring.primary == parse_key(KEY_A)
    assert len(ring) == 2


def test_keyring_install_use_remove() -> None:
    ring = Keyring([KEY_A])
    ring.install(KEY_B)
    ring.install(KEY_B)  # idempotent, like memberlist's AddKey
    assert ring.list() == [KEY_A, KEY_B]
    ring.use(KEY_B)
    assert ring.list() == [KEY_B, KEY_A]
    assert ring.primary == parse_key(KEY_B)
    ring.remove(KEY_A)
    ring.remove(KEY_C)  # absent: no-op, so a cluster-wide request can be retried
    assert ring.list() == [KEY_B]


def test_keyring_misuse_raises_keyring_error() -> None:
    ring = Keyring([KEY_A, KEY_B])
    with pytest.raises(KeyringError, match="cannot remove the primary key"):
        ring.remove(KEY_A)
    with pytest.raises(KeyringError, match="not installed; install it first"):
        ring.use(KEY_C)
    with pytest.raises(ConfigError, match="meshlite keygen"):
        ring.install("garbage")
    assert ring.list() == [KEY_A, KEY_B]


def test_keyring_is_bounded() -> None:
    keys = [bytes([i]) * 16 for i in range(MAX_KEYS)]
    ring = Keyring(keys)
    with pytest.raises(KeyringError, match="keyring is full"):
        ring.install(bytes([255]) * 16)
    with pytest.raises(ConfigError, match="at most 16 keys"):
        Keyring([*keys, bytes([255]) * 16])
    with pytest.raises(ConfigError, match="at least one key"):
        Keyring([])


def test_keyring_repr_hides_keys() -> None:
    ring = Keyring([KEY_A])
    assert KEY_A not in repr(ring)
    assert repr(parse_key(KEY_A)) not in repr(ring)


# ---------------------------------------------------------------------------------------
# Sealing: properties


@given(plaintext=payloads, label=labels, skew_s=st.floats(-DEFAULT_WINDOW_S, DEFAULT_WINDOW_S))
def test_sealed_round_trip(plaintext: bytes, label: str, skew_s: float) -> None:
    sender, receiver = sealer(KEY_A, label=label), sealer(KEY_B, KEY_A, label=label)
    frame = sender.seal(plaintext, T0 + skew_s)
    assert len(frame) == len(plaintext) + SEALED_OVERHEAD == len(plaintext) + sender.overhead_bytes
    assert receiver.open(frame, T0) == plaintext


@given(plaintext=payloads, label=labels)
def test_plaintext_round_trip(plaintext: bytes, label: str) -> None:
    sender, receiver = sealer(label=label), sealer(label=label)
    frame = sender.seal(plaintext, T0)
    assert (
        len(frame) == len(plaintext) + PLAINTEXT_OVERHEAD == len(plaintext) + sender.overhead_bytes
    )
    assert receiver.open(frame, T0 + 1) == plaintext
    assert receiver.open(frame, T0 + 1) == plaintext  # no integrity, so no replay cache


@given(plaintext=payloads, data=st.data())
def test_any_flipped_bit_fails_open(plaintext: bytes, data: st.DataObject) -> None:
    frame = bytearray(sealer(KEY_A).seal(plaintext, T0))
    bit = data.draw(st.integers(0, len(frame) * 8 - 1), label="bit")
    frame[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(AuthError) as info:
        sealer(KEY_A).open(bytes(frame), T0)
    expected = {0: {"plaintext", "version"}}.get(bit // 8, {"auth"})
    assert info.value.reason in expected


@given(frame=st.binary(max_size=200) | st.binary(max_size=200).map(lambda b: b"\x01" + b))
def test_arbitrary_bytes_raise_only_auth_error(frame: bytes) -> None:
    with pytest.raises(AuthError):
        sealer(KEY_A, KEY_B).open(frame, T0)


@given(frame=st.binary(max_size=200))
def test_arbitrary_bytes_to_keyless_peer_return_or_raise_auth_error(frame: bytes) -> None:
    try:
        plaintext = sealer().open(frame, T0)
    except AuthError:
        return
    assert plaintext == frame[PLAINTEXT_OVERHEAD:]  # version 0 has no integrity to check


@given(label=labels, other=labels)
def test_another_cluster_label_is_rejected(label: str, other: str) -> None:
    if label == other:
        return
    frame = sealer(KEY_A, label=label).seal(b"hello", T0)
    assert reason_of(sealer(KEY_A, label=other), frame) == "auth"
    frame = sealer(label=label).seal(b"hello", T0)
    assert reason_of(sealer(label=other), frame) == "label"


# ---------------------------------------------------------------------------------------
# Sealing: examples


def test_unknown_key_is_rejected() -> None:
    frame = sealer(KEY_A).seal(b"hello", T0)
    assert reason_of(sealer(KEY_B, KEY_C), frame) == "auth"


def test_keyed_and_keyless_peers_never_admit_each_other() -> None:
    assert reason_of(sealer(KEY_A), sealer().seal(b"hi", T0)) == "plaintext"
    assert reason_of(sealer(), sealer(KEY_A).seal(b"hi", T0)) == "encrypted"


@pytest.mark.parametrize("keys", [(KEY_A,), ()])
def test_short_and_unknown_version_frames(keys: tuple[str, ...]) -> None:
    receiver = sealer(*keys)
    assert reason_of(receiver, b"") == "short"
    assert reason_of(receiver, b"\x07" + bytes(64)) == "version"
    valid = sealer(*keys).seal(b"", T0)
    assert reason_of(receiver, valid[:-1]) == "short"


def test_replayed_frame_is_rejected() -> None:
    sender, receiver = sealer(KEY_A), sealer(KEY_A)
    frame = sender.seal(b"ping", T0)
    assert receiver.open(frame, T0) == b"ping"
    assert reason_of(receiver, frame, T0 + 1) == "replay"
    assert reason_of(receiver, frame, T0 + DEFAULT_WINDOW_S + 1) == "stale"


@pytest.mark.parametrize("keys", [(KEY_A,), ()])
def test_frames_outside_the_window_are_stale(keys: tuple[str, ...]) -> None:
    window_s = DEFAULT_WINDOW_S
    receiver = sealer(*keys)
    for skew_s in (-window_s, window_s):  # the edges are inside
        assert receiver.open(sealer(*keys).seal(b"x", T0 + skew_s), T0) == b"x"
    for skew_s in (-window_s - 0.002, window_s + 0.002):
        frame = sealer(*keys).seal(b"x", T0 + skew_s)
        with pytest.raises(AuthError, match="clock needing NTP") as info:
            receiver.open(frame, T0)
        assert info.value.reason == "stale"


def test_rotation_without_partition() -> None:
    old_only = sealer(KEY_A)
    sender, receiver = sealer(KEY_A), sealer(KEY_A)
    # 1. install the new key everywhere: senders still seal with the old primary
    assert receiver.keyring is not None
    assert sender.keyring is not None
    receiver.keyring.install(KEY_B)
    sender.keyring.install(KEY_B)
    assert receiver.open(sender.seal(b"1", T0), T0) == b"1"
    # 2. use the new key: peers with both keys accept, a peer with only the old one does not
    sender.keyring.use(KEY_B)
    frame = sender.seal(b"2", T0)
    assert receiver.open(frame, T0) == b"2"
    assert reason_of(old_only, frame) == "auth"
    # 3. remove the old key: frames sealed with it are now refused
    receiver.keyring.use(KEY_B)
    receiver.keyring.remove(KEY_A)
    assert reason_of(receiver, old_only.seal(b"3", T0)) == "auth"
    assert receiver.open(sender.seal(b"4", T0), T0) == b"4"


def test_every_installed_key_is_tried() -> None:
    keys = [base64.b64encode(bytes([i]) * 32).decode() for i in range(MAX_KEYS)]
    receiver = sealer(*keys)
    for key in keys:
        assert receiver.open(sealer(key).seal(key.encode(), T0), T0) == key.encode()


def test_sealer_config_errors() -> None:
    with pytest.raises(ConfigError, match="at most 255"):
        Sealer(None, "x" * 256)
    with pytest.raises(ConfigError, match="must be a string"):
        Sealer(None, b"prod")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="window_s"):
        Sealer(None, "", window_s=0)
    with pytest.raises(ConfigError, match="max_nonces"):
        Sealer(None, "", max_nonces=0)
    with pytest.raises(ValueError, match="wall-clock seconds"):
        Sealer(None).seal(b"", -1.0)


# ---------------------------------------------------------------------------------------
# Channel frames: their own domain, no nonce cache (meshlite._channel_seal binds them)


@given(plaintext=payloads, label=labels, keyed=st.booleans())
def test_in_channel_round_trip_skips_the_nonce_cache(
    plaintext: bytes, label: str, keyed: bool
) -> None:
    keys = (KEY_A,) if keyed else ()
    sender, receiver = sealer(*keys, label=label), sealer(*keys, label=label)
    frame = sender.seal_in_channel(plaintext, T0)
    assert len(frame) == len(plaintext) + sender.overhead_bytes
    assert receiver.open_in_channel(frame, T0) == plaintext
    assert receiver.open_in_channel(frame, T0) == plaintext  # the caller refuses replays
    assert len(receiver.replay_cache) == 0


@pytest.mark.parametrize(("keys", "reason"), [((KEY_A,), "auth"), ((), "label")])
def test_channel_and_ordinary_frames_never_open_as_each_other(
    keys: tuple[str, ...], reason: str
) -> None:
    sender, receiver = sealer(*keys), sealer(*keys)
    assert reason_of(receiver, sender.seal_in_channel(b"append", T0)) == reason
    with pytest.raises(AuthError) as info:
        receiver.open_in_channel(sender.seal(b"ping", T0), T0)
    assert info.value.reason == reason
    assert len(receiver.replay_cache) == 0


@pytest.mark.parametrize("keys", [(KEY_A,), ()])
def test_in_channel_frames_still_check_the_window_and_tag(keys: tuple[str, ...]) -> None:
    sender, receiver = sealer(*keys), sealer(*keys)
    late = sender.seal_in_channel(b"x", T0 - DEFAULT_WINDOW_S - 1)
    with pytest.raises(AuthError) as info:
        receiver.open_in_channel(late, T0)
    assert info.value.reason == "stale"
    with pytest.raises(AuthError) as info:
        sealer(KEY_B).open_in_channel(sealer(KEY_A).seal_in_channel(b"x", T0), T0)
    assert info.value.reason == "auth"


# ---------------------------------------------------------------------------------------
# Replay cache: bounded, and never admits a frame twice


def test_nonce_cache_stays_bounded_under_a_flood() -> None:
    cap = 64
    sender, receiver = sealer(KEY_A), sealer(KEY_A, max_nonces=cap)
    frames = []
    for i in range(1000):  # 1,000 distinct frames in 10 s: far beyond what 64 entries cover
        now_s = T0 + i / 100
        frames.append(sender.seal(b"flood", now_s))
        assert receiver.open(frames[-1], now_s) == b"flood"
        assert len(receiver.replay_cache) <= cap
    # Every frame evicted by the cap is still refused: the effective window shrank.
    assert receiver.replay_cache.floor_ms >= int((T0 + 9) * 1000)
    for frame in frames:
        assert reason_of(receiver, frame, T0 + 10) in {"replay", "stale"}


def test_replay_refused_after_our_clock_steps_back() -> None:
    sender, receiver = sealer(KEY_A), sealer(KEY_A)
    frame = sender.seal(b"x", T0)
    receiver.open(frame, T0)
    receiver.open(sender.seal(b"y", T0 + 100), T0 + 100)  # expires the first nonce
    assert len(receiver.replay_cache) == 1
    assert reason_of(receiver, frame, T0) == "stale"  # clock back: the floor still holds


@settings(max_examples=200)
@given(
    cap=st.integers(1, 8),
    sent_ms=st.lists(st.integers(0, 200), min_size=1, max_size=30),
    steps=st.lists(st.tuples(st.integers(0, 29), st.integers(0, 400)), max_size=120),
)
def test_replay_cache_never_admits_twice(
    cap: int, sent_ms: list[int], steps: list[tuple[int, int]]
) -> None:
    """Any order of arrivals, any clock (also backwards): a nonce is admitted at most once."""
    cache = ReplayCache(cap)
    admitted: set[int] = set()
    window_ms = 50
    for index, now_ms in steps:
        frame = index % len(sent_ms)
        nonce = frame.to_bytes(12, "big")  # one frame: one nonce, one send time
        if abs(sent_ms[frame] - now_ms) > window_ms:
            continue  # the sealer refuses these before the cache sees them
        floor_before = cache.floor_ms
        reason = cache.admit(nonce, sent_ms[frame], now_ms - window_ms)
        if reason is None:
            assert frame not in admitted
            admitted.add(frame)
        elif reason == "replay":
            assert frame in admitted
        else:
            assert reason == "stale"
            assert sent_ms[frame] <= max(floor_before, cache.floor_ms)
        assert len(cache) <= cap


# ---------------------------------------------------------------------------------------
# Stream framing


@given(sealed=st.binary(min_size=PLAINTEXT_OVERHEAD, max_size=3000))
def test_stream_frame_round_trip(sealed: bytes) -> None:
    framed = encode_stream_frame(sealed)
    assert parse_length(framed[:4]) == len(sealed)
    assert framed[4:] == sealed


def test_stream_length_limits() -> None:
    assert parse_length(MAX_STREAM_FRAME_BYTES.to_bytes(4, "big")) == MAX_STREAM_FRAME_BYTES
    with pytest.raises(StreamFrameError) as info:
        parse_length((MAX_STREAM_FRAME_BYTES + 1).to_bytes(4, "big"))
    assert info.value.reason == "oversize"
    with pytest.raises(StreamFrameError) as info:
        parse_length(b"\xff\xff\xff\xff")
    assert info.value.reason == "oversize"
    with pytest.raises(StreamFrameError) as info:
        parse_length((PLAINTEXT_OVERHEAD - 1).to_bytes(4, "big"))
    assert info.value.reason == "short"
    assert parse_length(b"\x00\x00\x01\x00", max_bytes=256) == 256
    with pytest.raises(StreamFrameError):
        parse_length(b"\x00\x00\x01\x01", max_bytes=256)
    with pytest.raises(ValueError, match="4 bytes"):
        parse_length(b"\x00\x01")
    with pytest.raises(ValueError, match="exceeds"):
        encode_stream_frame(bytes(300), max_bytes=256)


def test_sealed_stream_frame_end_to_end() -> None:
    sender, receiver = sealer(KEY_A), sealer(KEY_A)
    framed = encode_stream_frame(sender.seal(b"push-pull state" * 100, T0))
    length = parse_length(framed[:4])
    assert receiver.open(framed[4 : 4 + length], T0) == b"push-pull state" * 100
