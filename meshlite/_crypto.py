"""Keyring, sealed frames, replay protection and TCP stream framing (DESIGN.md §4).

Theory of operation
-------------------
Every datagram and every TCP stream frame is *sealed* before it leaves a peer and
*opened* before anything parses it.  Two frame versions exist (the first byte)::

    key configured:  0x01 | nonce(12) | AES-GCM(sent_at_ms(8) | plaintext) | tag(16)
                     (additional authenticated data = the cluster label, utf-8)
    no key:          0x00 | label_tag(8) | sent_at_ms(8) | plaintext

Version 1 is memberlist's ``security.go`` scheme (random 96-bit nonce, AES-GCM, the
label as AAD, see memberlist ``label.go``) plus what memberlist lacks: the sender's
wall-clock send time sealed *inside* the ciphertext, so a captured frame cannot be
replayed.  The primary key seals; :meth:`Sealer.open` tries the primary, then every
other installed key -- installing a new key everywhere, then ``use``-ing it, then
removing the old one rotates keys without a partition (memberlist ``keyring.go``).

A peer is never half-admitted: a keyed peer rejects version 0 (``"plaintext"``), a
keyless peer rejects version 1 (``"encrypted"``), a wrong key or wrong label fails the
tag (``"auth"``), and a keyless frame from another cluster fails the label tag
(``"label"``).  Every rejection is one :class:`AuthError` with a ``reason`` for the
driver to count and log once; nothing else escapes :meth:`Sealer.open`, whatever the
bytes.  Version 0 has no integrity, so a keyless cluster trusts its network: it checks
the label and the send time (so clock trouble shows up before encryption is switched
on) but keeps no nonce cache -- anyone can forge a fresh header there anyway.

Replay protection (version 1).  A frame is accepted only if its send time is within
``window_s`` of our clock *and* its nonce has not been accepted before.  The window
only bounds how long a nonce must be remembered; the nonce cache is what stops a
replay.  The cache (:class:`ReplayCache`) is a min-heap by send time plus a set, capped
at ``max_nonces`` entries.  Whenever it forgets an entry -- because it fell out of the
window, or because the cap forced out the oldest -- it raises ``floor_ms`` to that
entry's send time, and frames sent at or before ``floor_ms`` are rejected as stale.
Invariant: every nonce ever accepted is either still in the set or has a send time
``<= floor_ms``, so no accepted frame can be accepted twice, whatever the traffic and
even if the local clock steps backwards.  Under a flood the effective window shrinks
(to the span the cap covers) instead of memory growing.  Only authenticated, fresh,
unseen frames are inserted, so a peer without the key cannot fill the cache.

Channel frames.  A long-lived TCP channel (``meshlite._channel_seal``) spends one nonce
cache entry on its first frame only: later frames are sealed with
:meth:`Sealer.seal_in_channel` and opened with :meth:`Sealer.open_in_channel`, which
checks the tag and the window but not the cache -- the channel's own sequence numbers
stop replays there.  Those frames use a separate domain (another AAD, another label
tag), so :meth:`Sealer.open` never accepts one of them and they cannot be replayed as
datagrams or one-shot stream frames, and vice versa.

Nonces are 12 random bytes from ``os.urandom`` per frame.  By the birthday bound, a
repeat among n frames under one key has probability about n^2 / 2^97; NIST SP
800-38D §8.3 caps random-nonce GCM at 2^32 frames per key (probability 2^-33).  A
100-peer cluster at ~20 frames/s per peer seals 2,000 frames/s and reaches 2^32 in
about 25 days; a repeat is still only ~2^-25 likely after a year.  Rotating the key
(``meshlite keyring install/use/remove``) every few months keeps under the NIST cap.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import os
import secrets
from collections.abc import Iterable
from typing import Final, Literal, TypeAlias

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from meshlite._core.wire import MAX_STREAM_BYTES
from meshlite.errors import ConfigError, KeyringError

__all__ = [
    "DEFAULT_MAX_NONCES",
    "DEFAULT_WINDOW_S",
    "KEY_SIZES",
    "MAX_KEYS",
    "MAX_STREAM_FRAME_BYTES",
    "PLAINTEXT_OVERHEAD",
    "SEALED_OVERHEAD",
    "STREAM_HEADER_BYTES",
    "AuthError",
    "AuthReason",
    "Keyring",
    "ReplayCache",
    "Sealer",
    "StreamFrameError",
    "encode_stream_frame",
    "generate_key",
    "parse_key",
    "parse_length",
]

VERSION_PLAINTEXT: Final = 0
VERSION_AESGCM: Final = 1
NONCE_BYTES: Final = 12  # the GCM-native nonce size (SP 800-38D §5.2.1.1)
TAG_BYTES: Final = 16  # full-length GCM tag; memberlist uses the same
TIMESTAMP_BYTES: Final = 8  # unsigned big-endian milliseconds since the Unix epoch
# 64 bits of BLAKE2b: separates clusters by accident-proof margin (not a security
# boundary -- version 0 frames have no integrity at all).
LABEL_TAG_BYTES: Final = 8
# Associated data of channel frames after the first: this prefix, then the label.  0xFF
# never occurs in UTF-8, so no cluster label's AAD can equal a channel AAD.
CHANNEL_AAD_PREFIX: Final = b"\xffmeshlite-channel:"
SEALED_OVERHEAD: Final = 1 + NONCE_BYTES + TIMESTAMP_BYTES + TAG_BYTES  # 37
PLAINTEXT_OVERHEAD: Final = 1 + LABEL_TAG_BYTES + TIMESTAMP_BYTES  # 17

KEY_SIZES: Final = (16, 24, 32)  # AES-128/192/256, as memberlist and Consul accept
GENERATED_KEY_BYTES: Final = 32
# Rotation needs two keys at once; 16 leaves ample room for staged rotations while
# bounding the work a garbage frame can cost: it is tried against every installed key
# before it is rejected (16 GCM tag checks: ~25 us per 1,400-byte frame, 2.5-4x a good
# frame's seal+open; benchmarks/bench_crypto.py).
MAX_KEYS: Final = 16
MAX_LABEL_BYTES: Final = 255  # memberlist's label limit (label.go)

# Clocks on a LAN are NTP-synced to milliseconds, but VMs resumed from suspend and
# hosts without NTP drift by seconds; Kerberos allows 5 min.  60 s tolerates any sane
# host while keeping the nonce cache's retention (and so its size) short.  The window
# is not what stops replays -- the nonce cache is -- it only bounds how long to remember.
DEFAULT_WINDOW_S: Final = 60.0
# ~190 bytes per entry (measured: heap tuple + set slot + 12-byte nonce), so ~3 MiB at
# most.  A peer receives ~20-50 frames/s (probes, acks, gossip fan-out of 3 every
# 200 ms); 16,384 covers 270 frames/s for the full 60 s window, 5-10x headroom.
DEFAULT_MAX_NONCES: Final = 16_384

STREAM_HEADER_BYTES: Final = 4  # big-endian length prefix of a TCP stream frame
MAX_STREAM_FRAME_BYTES: Final = MAX_STREAM_BYTES + max(SEALED_OVERHEAD, PLAINTEXT_OVERHEAD)
_MIN_FRAME_BYTES: Final = min(SEALED_OVERHEAD, PLAINTEXT_OVERHEAD)

_KEYGEN_HINT: Final = "generate one with `meshlite keygen`"

AuthReason: TypeAlias = Literal[
    "short", "version", "plaintext", "encrypted", "label", "auth", "stale", "replay", "channel"
]


class AuthError(Exception):
    """A frame was rejected.  Remote garbage: count by ``reason``, log once, drop.

    ``detail`` is a human sentence for the log line; it never contains key material.
    """

    def __init__(self, reason: AuthReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: AuthReason = reason
        self.detail = detail


class StreamFrameError(Exception):
    """A TCP stream frame header announces an impossible length (``"short"``, ``"oversize"``).

    The stream cannot be resynchronised: close the connection.
    """

    def __init__(self, reason: Literal["short", "oversize"], detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------------------------------
# Keys


def generate_key() -> str:
    """A fresh 32-byte key as base64 text (what ``meshlite keygen`` prints)."""
    return base64.b64encode(secrets.token_bytes(GENERATED_KEY_BYTES)).decode("ascii")


def parse_key(text: str | bytes) -> bytes:
    """Key bytes from base64 *text* (``str``) or raw key *bytes*; else :class:`ConfigError`.

    ``str`` is always base64 (surrounding whitespace, e.g. a newline from a file, is
    ignored); ``bytes`` are always raw key material.  Messages never echo the key.
    """
    if isinstance(text, bytes | bytearray | memoryview):
        raw = bytes(text)
        what = "raw key"
    elif isinstance(text, str):
        raw = _b64decode_key(text.strip())
        what = "key, decoded from base64,"
    else:
        raise ConfigError(
            f"the encryption key must be base64 text or raw bytes, not {type(text).__name__}; "
            f"{_KEYGEN_HINT}"
        )
    if len(raw) not in KEY_SIZES:
        raise ConfigError(
            f"the encryption {what} is {len(raw)} bytes; it must be 16, 24 or 32 bytes "
            f"(AES-128/192/256); {_KEYGEN_HINT}"
        )
    return raw


def _b64decode_key(text: str) -> bytes:
    if not text:
        raise ConfigError(f"the encryption key is empty; {_KEYGEN_HINT}")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise ConfigError(
            f"the encryption key is not valid base64 (standard alphabet A-Z a-z 0-9 + /, "
            f"'=' padding); {_KEYGEN_HINT}"
        ) from None


class Keyring:
    """Installed keys, primary first.  The primary seals; all of them open.

    Like memberlist's ``Keyring``: ``install`` of a present key and ``remove`` of an
    absent one are no-ops (so a cluster-wide keyring request can be retried), ``use``
    of an absent key and ``remove`` of the primary are :class:`KeyringError`.  One
    event loop owns a keyring; it is not thread-safe.
    """

    def __init__(self, keys: Iterable[str | bytes]) -> None:
        self._keys: list[tuple[bytes, AESGCM]] = []
        for key in keys:
            raw = parse_key(key)
            if raw not in self:
                self._keys.append((raw, AESGCM(raw)))
        if not self._keys:
            raise ConfigError(f"a keyring needs at least one key; {_KEYGEN_HINT}")
        if len(self._keys) > MAX_KEYS:
            raise ConfigError(f"a keyring holds at most {MAX_KEYS} keys, got {len(self._keys)}")

    def __repr__(self) -> str:
        return f"<Keyring: {len(self._keys)} key(s)>"  # never the keys themselves

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return any(raw == key for raw, _ in self._keys)

    @property
    def primary(self) -> bytes:
        """The key that seals outgoing frames."""
        return self._keys[0][0]

    @property
    def ciphers(self) -> tuple[AESGCM, ...]:
        """One cipher per installed key, primary first (the order :meth:`Sealer.open` tries)."""
        return tuple(cipher for _, cipher in self._keys)

    def list(self) -> list[str]:
        """Installed keys as base64 text, primary first."""
        return [base64.b64encode(raw).decode("ascii") for raw, _ in self._keys]

    def install(self, key: str | bytes) -> None:
        """Add a key for opening frames (not sealing: see :meth:`use`)."""
        raw = parse_key(key)
        if raw in self:
            return
        if len(self._keys) >= MAX_KEYS:
            raise KeyringError(
                f"the keyring is full ({MAX_KEYS} keys); remove an old key before installing"
            )
        self._keys.append((raw, AESGCM(raw)))

    def use(self, key: str | bytes) -> None:
        """Make an installed key the primary."""
        raw = parse_key(key)
        index = self._index(raw)
        if index is None:
            raise KeyringError("that key is not installed; install it first, then use it")
        self._keys.insert(0, self._keys.pop(index))

    def remove(self, key: str | bytes) -> None:
        """Forget a key.  Removing the primary is refused: ``use`` another key first."""
        raw = parse_key(key)
        index = self._index(raw)
        if index == 0:
            raise KeyringError("cannot remove the primary key; `use` another key first")
        if index is not None:
            del self._keys[index]

    def _index(self, raw: bytes) -> int | None:
        for i, (installed, _) in enumerate(self._keys):
            if installed == raw:
                return i
        return None


# ---------------------------------------------------------------------------------------
# Replay protection


class ReplayCache:
    """Accepted nonces with their send times, bounded at ``max_entries`` (see module doc)."""

    def __init__(self, max_entries: int = DEFAULT_MAX_NONCES) -> None:
        if max_entries < 1:
            raise ConfigError(f"max_nonces must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self.floor_ms = -1  # frames sent at or before this are refused; -1: nothing forgotten
        self._heap: list[tuple[int, bytes]] = []
        self._seen: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, nonce: bytes, sent_ms: int, horizon_ms: int) -> AuthReason | None:
        """Record ``nonce`` and return None, or return why the frame must be refused.

        ``horizon_ms`` is the oldest send time still inside the window; older entries
        are forgotten first.
        """
        heap = self._heap
        while heap and heap[0][0] < horizon_ms:
            self._forget(heapq.heappop(heap))
        if sent_ms <= self.floor_ms:
            return "stale"
        if nonce in self._seen:
            return "replay"
        if len(heap) < self.max_entries:
            heapq.heappush(heap, (sent_ms, nonce))
            self._seen.add(nonce)
        else:  # full: forget the oldest entry (possibly this very one) and raise the floor
            self._seen.add(nonce)
            self._forget(heapq.heappushpop(heap, (sent_ms, nonce)))
        return None

    def _forget(self, entry: tuple[int, bytes]) -> None:
        sent_ms, nonce = entry
        self._seen.discard(nonce)
        self.floor_ms = max(self.floor_ms, sent_ms)


# ---------------------------------------------------------------------------------------
# Sealing


def _label_bytes(label: str) -> bytes:
    if not isinstance(label, str):
        raise ConfigError(f"the cluster label must be a string, not {type(label).__name__}")
    raw = label.encode("utf-8")
    if len(raw) > MAX_LABEL_BYTES:
        raise ConfigError(f"the cluster label is {len(raw)} bytes; at most {MAX_LABEL_BYTES}")
    return raw


def _to_ms(now_s: float) -> int:
    if not 0 <= now_s < 2**63 / 1000:
        raise ValueError(f"now_s must be wall-clock seconds since the epoch, got {now_s!r}")
    return int(now_s * 1000)


class Sealer:
    """Seals and opens frames for one peer: a keyring (or None: no encryption) and a label.

    The keyring is read on every call, so ``install``/``use``/``remove`` take effect at
    once.  Whether encryption is on is fixed for the sealer's life.  ``seal``/``open`` are
    for datagrams, one-shot streams and a channel's first frame; ``seal_in_channel`` /
    ``open_in_channel`` for the rest of a channel (see the module docstring).
    """

    def __init__(
        self,
        keyring: Keyring | None,
        label: str = "",
        *,
        window_s: float = DEFAULT_WINDOW_S,
        max_nonces: int = DEFAULT_MAX_NONCES,
    ) -> None:
        if not window_s > 0:
            raise ConfigError(f"window_s must be > 0, got {window_s!r}")
        self.keyring = keyring
        self.label = label
        self._aad = _label_bytes(label)
        self._label_tag = hashlib.blake2b(
            self._aad, digest_size=LABEL_TAG_BYTES, person=b"meshlite-label"
        ).digest()
        self._channel_aad = CHANNEL_AAD_PREFIX + self._aad
        self._channel_tag = hashlib.blake2b(
            self._aad, digest_size=LABEL_TAG_BYTES, person=b"meshlite-chan"
        ).digest()
        self._window_ms = int(window_s * 1000)
        self.replay_cache = ReplayCache(max_nonces)

    @property
    def overhead_bytes(self) -> int:
        """Bytes :meth:`seal` adds to a plaintext (for the datagram budget)."""
        return PLAINTEXT_OVERHEAD if self.keyring is None else SEALED_OVERHEAD

    def seal(self, plaintext: bytes, now_s: float) -> bytes:
        """One frame carrying ``plaintext``, stamped with wall-clock ``now_s``."""
        return self._seal(plaintext, now_s, self._aad, self._label_tag)

    def seal_in_channel(self, plaintext: bytes, now_s: float) -> bytes:
        """A channel frame after the first: only :meth:`open_in_channel` opens it."""
        return self._seal(plaintext, now_s, self._channel_aad, self._channel_tag)

    def _seal(self, plaintext: bytes, now_s: float, aad: bytes, tag: bytes) -> bytes:
        sent = _to_ms(now_s).to_bytes(TIMESTAMP_BYTES, "big")
        if self.keyring is None:
            return b"\x00" + tag + sent + plaintext
        nonce = os.urandom(NONCE_BYTES)
        cipher = self.keyring.ciphers[0]
        return b"\x01" + nonce + cipher.encrypt(nonce, sent + plaintext, aad)

    def open(self, frame: bytes, now_s: float) -> bytes:
        """The plaintext of a frame, or :class:`AuthError` -- never anything else."""
        return self._open(frame, now_s, in_channel=False)

    def open_in_channel(self, frame: bytes, now_s: float) -> bytes:
        """Like :meth:`open` for a :meth:`seal_in_channel` frame, without the nonce cache.

        Checks the tag (or label tag) and the window only: the caller must refuse
        replays itself, as ``meshlite._channel_seal`` does with sequence numbers.
        """
        return self._open(frame, now_s, in_channel=True)

    def _open(self, frame: bytes, now_s: float, *, in_channel: bool) -> bytes:
        if not frame:
            raise AuthError("short", "empty frame")
        version = frame[0]
        if version == VERSION_AESGCM:
            if self.keyring is None:
                raise AuthError("encrypted", "peer encrypts but no key is configured here")
            return self._open_sealed(frame, _to_ms(now_s), in_channel)
        if version == VERSION_PLAINTEXT:
            if self.keyring is not None:
                raise AuthError("plaintext", "peer sends unencrypted frames; it needs the key")
            return self._open_plain(frame, _to_ms(now_s), in_channel)
        raise AuthError("version", f"unknown frame version {version}")

    def _open_sealed(self, frame: bytes, now_ms: int, in_channel: bool) -> bytes:
        if len(frame) < SEALED_OVERHEAD:
            raise AuthError("short", f"{len(frame)}-byte frame, need {SEALED_OVERHEAD}")
        nonce = frame[1 : 1 + NONCE_BYTES]
        body = frame[1 + NONCE_BYTES :]
        aad = self._channel_aad if in_channel else self._aad
        assert self.keyring is not None
        for cipher in self.keyring.ciphers:
            try:
                data = cipher.decrypt(nonce, body, aad)
            except InvalidTag:
                continue
            break
        else:
            raise AuthError("auth", "no installed key opens it (wrong key or cluster label)")
        sent_ms = int.from_bytes(data[:TIMESTAMP_BYTES], "big")
        self._check_window(sent_ms, now_ms)
        if in_channel:
            return data[TIMESTAMP_BYTES:]
        reason = self.replay_cache.admit(nonce, sent_ms, now_ms - self._window_ms)
        if reason == "replay":
            raise AuthError("replay", "this frame was already received")
        if reason is not None:
            raise AuthError(
                reason,
                "sent before the replay cache's horizon (heavy traffic, or our clock stepped back)",
            )
        return data[TIMESTAMP_BYTES:]

    def _open_plain(self, frame: bytes, now_ms: int, in_channel: bool) -> bytes:
        if len(frame) < PLAINTEXT_OVERHEAD:
            raise AuthError("short", f"{len(frame)}-byte frame, need {PLAINTEXT_OVERHEAD}")
        if frame[1 : 1 + LABEL_TAG_BYTES] != (self._channel_tag if in_channel else self._label_tag):
            raise AuthError("label", "peer belongs to another cluster label")
        sent_ms = int.from_bytes(frame[1 + LABEL_TAG_BYTES : PLAINTEXT_OVERHEAD], "big")
        self._check_window(sent_ms, now_ms)
        return frame[PLAINTEXT_OVERHEAD:]

    def _check_window(self, sent_ms: int, now_ms: int) -> None:
        skew_ms = sent_ms - now_ms
        if abs(skew_ms) > self._window_ms:
            where = "behind" if skew_ms < 0 else "ahead of"
            raise AuthError(
                "stale",
                f"sent {abs(skew_ms) / 1000:.1f} s {where} our clock (window "
                f"±{self._window_ms / 1000:g} s): a replay, or a clock needing NTP",
            )


# ---------------------------------------------------------------------------------------
# TCP stream framing: length(4, big-endian) | sealed frame


def encode_stream_frame(sealed: bytes, max_bytes: int = MAX_STREAM_FRAME_BYTES) -> bytes:
    """Length-prefix one sealed frame for a TCP stream."""
    if len(sealed) > max_bytes:
        raise ValueError(f"stream frame of {len(sealed)} bytes exceeds the {max_bytes} limit")
    return len(sealed).to_bytes(STREAM_HEADER_BYTES, "big") + sealed


def parse_length(header: bytes, max_bytes: int = MAX_STREAM_FRAME_BYTES) -> int:
    """The frame length a 4-byte header announces, or :class:`StreamFrameError`.

    Check this *before* reading the body, so a hostile length allocates nothing.
    """
    if len(header) != STREAM_HEADER_BYTES:
        raise ValueError(f"a stream header is {STREAM_HEADER_BYTES} bytes, got {len(header)}")
    length = int.from_bytes(header, "big")
    if length > max_bytes:
        raise StreamFrameError("oversize", f"{length}-byte frame exceeds the {max_bytes} limit")
    if length < _MIN_FRAME_BYTES:
        raise StreamFrameError("short", f"{length}-byte frame cannot be a sealed frame")
    return length
