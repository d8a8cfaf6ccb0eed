"""Coverage-guided fuzzing (atheris + libFuzzer) of every decoder that takes outside bytes.

    python benchmarks/fuzz_atheris.py --list
    python benchmarks/fuzz_atheris.py TARGET [--max-time-s N] [--corpus DIR] [-flag=V] [FILE]
    python benchmarks/fuzz_atheris.py --all [--max-time-s N] [--corpus DIR] [--json FILE]

Theory of operation
-------------------
Hypothesis fuzzes the decoders in CI (docs/fuzzing.md lists where); this script is for
long runs.  atheris instruments the bytecode of the decoding modules (``INSTRUMENTED``)
as the block below imports them, so libFuzzer sees which branches an input reaches and
keeps the inputs that reach new ones.

One target per decoder that takes bytes from the network, and one per path from a
socket to the decoders behind it (``udp_datagram``, ``tcp_stream``, ``raft_channel``,
``rpc_mux``).  A path target reads its first byte as a mode: the rest is a raw frame
for a keyed peer (seeded with frames sealed under the test key, which mutations turn
into refusals), a raw frame for a keyless peer (whose frames anyone can forge, so the
fuzzer gets through the real frame checks), or a plaintext that the target seals with
the project's own seal functions and a fixed test key before opening it, so the fuzzer
reaches the decoders behind decryption.  Multi-frame inputs are ``length(2) | piece``
sequences.  Inputs that are one msgpack document are also mutated structurally.

The contract: a decoder returns a checked value or raises its documented error
(``DecodeError``; ``AuthError`` for opening frames; ``StreamFrameError`` and
``anyio.IncompleteRead`` for stream framing); what must survive any decoded value
(``KVStore.apply``, ``apply_entry``, ``Catalog.apply``/``merge_state``, the keyring
request handler) does not raise; the DNS answerer returns ``None`` or a reply that
parses, keeps the query's id and fits the size limit; and where an encoder exists, a
decoded value re-encodes and decodes to itself.  Anything else is a finding: atheris
reports the exception and libFuzzer writes the input to ``<corpus>/<TARGET>-artifacts/``
(``TARGET FILE`` runs it again).  So is an input that runs longer than ``-timeout``
(10 s) or a process above ``-rss_limit_mb`` (2,048 MiB).

Seed corpora are generated from valid encodings (each target's ``seeds``) into
``<corpus>/<TARGET>/``, where libFuzzer also keeps what it finds; ``--corpus`` defaults
to a new temporary directory.  Never commit a corpus.  Inputs are capped at
``-max_len=4096`` bytes unless given: the size limits above that are unit-tested.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import atheris

# Instrumenting costs start-up time and slows what it instruments: only the decoders and
# the code behind them are instrumented, not the drivers, the SWIM core or the Raft core.
INSTRUMENTED = frozenset(
    {
        "meshlite._channel_seal",
        "meshlite._crypto",
        "meshlite._keyring_ops",
        "meshlite._kv_wire",
        "meshlite._raft_server_kv",
        "meshlite._rpc_mux",
        "meshlite._core.catalog",
        "meshlite._core.dns_answer",
        "meshlite._core.dns_names",
        "meshlite._core.dns_records",
        "meshlite._core.kv",
        "meshlite._core.kv_commands",
        "meshlite._core.kv_decode",
        "meshlite._core.kv_prefixmap",
        "meshlite._core.kv_snapshot",
        "meshlite._core.kv_state",
        "meshlite._core.kv_types",
        "meshlite._core.messages",
        "meshlite._core.raft.codec",
        "meshlite._core.raft.messages",
        "meshlite._core.raft.types",
        "meshlite._core.wire",
        "meshlite._core.wire_checks",
    }
)


def _not_instrumented() -> list[str]:
    spec = importlib.util.find_spec("meshlite")  # finds the package without importing it
    assert spec is not None
    assert spec.origin is not None
    root = Path(spec.origin).parent
    names = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name not in INSTRUMENTED:
            names.append(name)
    return names


with atheris.instrument_imports(include=["meshlite"], exclude=_not_instrumented()):
    import anyio
    import anyio.abc
    import dns.message
    import msgpack
    from anyio.streams.buffered import BufferedByteReceiveStream

    from meshlite import _kv_wire, _rpc_mux
    from meshlite._channel_seal import (
        CHANNEL_HEADER_BYTES,
        CHANNEL_ID_BYTES,
        ChannelOpener,
        channel_header,
        parse_channel_header,
    )
    from meshlite._core import catalog, kv_commands, kv_snapshot, wire
    from meshlite._core.directory import Directory
    from meshlite._core.dns_answer import CLASSIC_UDP_BYTES, MAX_UDP_BYTES, TCP_BYTES, Answerer
    from meshlite._core.events import Member, MemberEvent, MemberEventKind
    from meshlite._core.kv import KVResult, KVStore, TxnOp
    from meshlite._core.kv_decode import decode_command
    from meshlite._core.kv_types import KVEntry, Session
    from meshlite._core.raft import (
        Append,
        AppendResp,
        Entry,
        EntryKind,
        Heartbeat,
        HeartbeatResp,
        InstallSnapshot,
        Snapshot,
        TimeoutNow,
        Vote,
        VoteResp,
        decode_raft,
        decode_voters,
        encode_raft,
        encode_voters,
    )
    from meshlite._core.wire_checks import DecodeError
    from meshlite._crypto import (
        MAX_STREAM_FRAME_BYTES,
        PLAINTEXT_OVERHEAD,
        SEALED_OVERHEAD,
        AuthError,
        Keyring,
        Sealer,
        StreamFrameError,
        encode_stream_frame,
        parse_length,
    )
    from meshlite._keyring_ops import apply_request
    from meshlite._raft_node import CHANNEL_RAFT
    from meshlite._raft_server_kv import KVRead

KEY = bytes(range(32))  # the fixed test key: never a real one
OTHER_KEY = bytes(range(100, 116))
LABEL = "fuzz"
NOW = 1_700_000_000.0  # every frame is sealed and opened at this wall-clock time
CHANNEL_ID = bytes(range(CHANNEL_ID_BYTES))
KEYRING = Keyring([KEY])
RAW_KEYED, RAW_KEYLESS, SEALED = 0, 1, 2  # the mode byte of a path target, modulo 3
MAX_PIECES = 16
DEFAULT_LIBFUZZER = ("-timeout=10", "-rss_limit_mb=2048", "-max_len=4096", "-print_final_stats=1")


class FindingError(Exception):
    """A contract violation that is not an exception of its own (a wrong value)."""


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise FindingError(what)


# ---------------------------------------------------------------------- helpers


def join_pieces(pieces: list[bytes]) -> bytes:
    return b"".join(len(p).to_bytes(2, "big") + p for p in pieces)


def split_pieces(data: bytes) -> list[bytes]:
    """Inverse of :func:`join_pieces`; a short last piece takes what is left."""
    pieces, at = [], 0
    while at < len(data) and len(pieces) < MAX_PIECES:
        n = int.from_bytes(data[at : at + 2], "big")
        pieces.append(data[at + 2 : at + 2 + n])
        at += 2 + n
    return pieces


def _mode(data: bytes) -> tuple[int, bytes]:
    return (data[0] % 3, data[1:]) if data else (RAW_KEYED, b"")


def _receiver(mode: int) -> Sealer:
    """A fresh peer (fresh replay cache) of the kind ``mode`` speaks to."""
    return Sealer(None if mode == RAW_KEYLESS else KEYRING, LABEL)


def _modes(plaintexts: list[bytes], frame: Callable[[Sealer, bytes], bytes]) -> list[bytes]:
    """Seeds for a path target: each plaintext raw-keyed, raw-keyless and to be sealed."""
    keyed = Sealer(KEYRING, LABEL)
    out = []
    for p in plaintexts:
        out.append(bytes([RAW_KEYED]) + frame(keyed, p))
        out.append(bytes([RAW_KEYLESS]) + frame(Sealer(None, LABEL), p))
        out.append(bytes([SEALED]) + p)
    return out


def _channel_frames(sealer: Sealer, plaintexts: list[bytes]) -> list[bytes]:
    """Frame 0 sealed as a one-shot frame, later ones in the channel's domain."""
    return [
        sealer.seal(p, NOW) if i == 0 else sealer.seal_in_channel(p, NOW)
        for i, p in enumerate(plaintexts)
    ]


class _Bytes(anyio.abc.ByteReceiveStream):
    """A stream over fixed bytes whose reads never suspend (so no event loop is needed)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not self._data:
            raise anyio.EndOfStream
        chunk, self._data = self._data[:max_bytes], self._data[max_bytes:]
        return chunk

    async def aclose(self) -> None:
        self._data = b""


def _run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise FindingError("a read over in-memory bytes suspended")


# ---------------------------------------------------------------------- valid values

SENDER = "node-a"
ADDR = ("10.0.0.1", 7946)
RECORDS = [
    catalog.Record(
        SENDER, "web-1", 5, "web", "10.0.0.1", 8080, ("v2", "primary"), {"zone": "a"}, "warning"
    ),
    catalog.Record("node-b", "db-1", 1_700_000_000_000_000, "db", "10.0.0.2", 5432),
    catalog.Record("node-b", "old-1", 9),  # a tombstone
]


def _catalog_state() -> bytes:
    data: bytes = msgpack.packb([3, [msgpack.unpackb(catalog.encode_record(r)) for r in RECORDS]])
    return data


MESSAGES: list[wire.Message] = [
    wire.Ping(1, "node-b", SENDER, ADDR),
    wire.IndirectPing(2, "node-c", ("10.0.0.3", 7946), True, SENDER, ADDR),
    wire.Ack(3, b"\x00\x01"),
    wire.Nack(4),
    wire.Alive(7, SENDER, ADDR, {"role": "web", "dc": "eu"}),
    wire.Suspect(8, "node-b", SENDER),
    wire.Dead(9, "node-b", SENDER),
    wire.PushPull(
        True,
        (wire.NodeState(SENDER, ADDR, 7, 0, {"k": "v"}), wire.NodeState("node-b", ADDR, 1, 1)),
        _catalog_state(),
    ),
    wire.User(catalog.encode_record(RECORDS[0])),
    wire.User(catalog.encode_record(RECORDS[2])),
    wire.KeyringRequest("install", OTHER_KEY),
    wire.KeyringRequest("use", KEY),
    wire.KeyringRequest("remove", OTHER_KEY),
    wire.KeyringRequest("list"),
    wire.KeyringResponse(True, "", ["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="]),
]


def _packets() -> list[bytes]:
    enc = [wire.encode_message(m) for m in MESSAGES]
    small = [wire.encode_packet(SENDER, [e]) for e in enc if len(e) < 100]
    big = [wire.encode_packet(SENDER, enc[:7]), wire.encode_packet(SENDER, enc[4:10])]
    return small + big


COMMANDS = [
    kv_commands.cmd_put("cfg/x", b"1", flags=3),
    kv_commands.cmd_put("cfg/y", b"2", cas=0),
    kv_commands.cmd_put("locks/a", b"", acquire="s-1"),
    kv_commands.cmd_put("locks/a", b"", release="s-1"),
    kv_commands.cmd_delete("cfg/", recurse=True),
    kv_commands.cmd_delete("cfg/x", cas=4),
    kv_commands.cmd_txn(
        [
            TxnOp("set", "t/a", b"1"),
            TxnOp("check-index", "cfg/x", index=2),
            TxnOp("get-tree", "t/"),
            TxnOp("check-session", "locks/a", session="s-1"),
        ]
    ),
    kv_commands.cmd_session_create("s-2", "node-b", name="n", ttl_s=10.0, behavior="delete"),
    kv_commands.cmd_session_destroy("s-1"),
    kv_commands.cmd_session_renew("s-1"),
    kv_commands.cmd_node_failed("node-b"),
    kv_commands.cmd_expire_sessions(),
    kv_commands.cmd_reset_session_timers(),
    kv_commands.cmd_reap_tombstones(5),
]


def _base_store() -> bytes:
    """A small store with keys, a lock, a tombstone and sessions, as a snapshot."""
    store = KVStore()
    setup = [
        kv_commands.cmd_session_create("s-1", SENDER, ttl_s=15.0),
        kv_commands.cmd_session_create("s-3", "node-b"),
        kv_commands.cmd_put("cfg/x", b"1"),
        kv_commands.cmd_put("cfg/z", b"3"),
        kv_commands.cmd_put("locks/b", b"held", acquire="s-1"),
        kv_commands.cmd_delete("cfg/z"),
    ]
    for i, cmd in enumerate(setup, 1):
        store.apply(i, cmd, NOW - 5)
    return store.snapshot()


BASE_STORE = _base_store()

RAFT_MESSAGES = [
    Vote(SENDER, "node-b", 3, 10, 2, False, False),
    Vote(SENDER, "node-b", 4, 10, 2, True, True),
    VoteResp("node-b", SENDER, 3, False, True),
    Append(
        SENDER,
        "node-b",
        5,
        6,
        2,
        (
            Entry(7, 3, EntryKind.NORMAL, kv_commands.stamp(COMMANDS[0], NOW)),
            Entry(8, 4, EntryKind.CONFIG, encode_voters((SENDER, "node-b", "node-c"))),
            Entry(9, 5, EntryKind.NOOP, b""),
            Entry(10, 5, EntryKind.NORMAL, kv_commands.stamp(COMMANDS[6], NOW)),
        ),
        6,
    ),
    AppendResp("node-b", SENDER, 5, 9, True, 6, 2),
    Heartbeat(SENDER, "node-b", 5, 9, 17),
    HeartbeatResp("node-b", SENDER, 5, 17),
    InstallSnapshot(SENDER, "node-b", 5, Snapshot(6, 5, (SENDER, "node-b"), BASE_STORE)),
    TimeoutNow(SENDER, "node-b", 5),
]

ENTRY = KVEntry("k", b"\x00v", 3, 4, 5, 1, "s-1")
SESSION = Session("s-1", SENDER, "n", "release", 10.0, 15.0, 2, 3, NOW + 30)
# (method, decoded args, answer value): the calls a client makes and what comes back
CALLS: list[tuple[str, tuple[Any, ...], Any]] = [
    ("put", ("k", b"v", 0, None, "s-1", None), True),
    ("delete", ("k", True, 7), False),
    (
        "txn",
        ([TxnOp("set", "a", b"1"), TxnOp("check-index", "a", index=3)],),
        KVResult(9, ok=True, results=()),
    ),
    ("session_create", ("n", "", 10.0, "release", 15.0), SESSION),
    ("session_destroy", ("s-1",), True),
    ("session_renew", ("s-1",), None),
    ("read", ("get", "k", None, "default", 3, 1.5), KVRead(ENTRY, 12, 0, SENDER)),
    ("read", ("list", "k/", None, "stale", None, None), KVRead([ENTRY], 12, 1, None)),
    ("read", ("keys", "", "/", "consistent", None, None), KVRead(["a/", "b"], 3, 0, None)),
    ("read", ("session_info", "s-1", None, "default", None, None), KVRead(SESSION, 2, 0, None)),
    ("read", ("session_list", "", None, "default", None, None), KVRead([SESSION], 2, 0, None)),
    ("read", ("session_node", SENDER, None, "default", None, None), KVRead([], 2, 0, None)),
    ("state", (), False),
]


def _encode_call(method: str, args: tuple[Any, ...]) -> bytes:
    return _kv_wire.encode_call(method, *args)


# ---------------------------------------------------------------------- consumers


def _consume_message(msg: wire.Message) -> None:
    """What a peer does next with a decoded message's nested bytes."""
    if isinstance(msg, wire.User):
        _consume_record(msg.payload)
    elif isinstance(msg, wire.PushPull):
        try:
            records = catalog.decode_state(msg.user_state)
        except DecodeError:
            return
        catalog.Catalog(SENDER, 1).merge_state(records, NOW)


def _consume_record(payload: bytes) -> None:
    try:
        record = catalog.decode_record(payload)
    except DecodeError:
        return
    catalog.Catalog(SENDER, 1).apply(record, NOW)  # must not raise, whatever the record


def _consume_raft(payload: bytes, store: KVStore) -> None:
    if payload[:1] != CHANNEL_RAFT:
        return
    try:
        msg = decode_raft(payload[1:])
    except DecodeError:
        return
    if isinstance(msg, Append):
        for entry in msg.entries:
            if entry.kind is EntryKind.NORMAL:
                result = store.apply_entry(entry.index, entry.data)
                _expect(isinstance(result, KVResult), "apply_entry returned no KVResult")
    elif isinstance(msg, InstallSnapshot):
        try:
            KVStore.restore(msg.snapshot.data)
        except DecodeError:
            return


# ---------------------------------------------------------------------- targets


def fuzz_wire_packet(data: bytes) -> None:
    try:
        sender, msgs = wire.decode_packet(data)
    except DecodeError:
        return
    _expect(type(sender) is str and type(msgs) is list, "decode_packet: wrong types")
    again = wire.encode_packet(sender, [wire.encode_message(m) for m in msgs])
    _expect(wire.decode_packet(again) == (sender, msgs), "packet round trip differs")


def fuzz_wire_message(data: bytes) -> None:
    kind = wire.peek_kind(data)
    try:
        msg = wire.decode_message(data)
    except DecodeError:
        return
    _expect(kind is None or kind == msg.KIND, "peek_kind disagrees with decode_message")
    _expect(wire.decode_message(wire.encode_message(msg)) == msg, "message round trip differs")


def fuzz_catalog_record(data: bytes) -> None:
    try:
        record = catalog.decode_record(data)
    except DecodeError:
        return
    _expect(catalog.decode_record(catalog.encode_record(record)) == record, "record round trip")
    _consume_record(data)


def fuzz_catalog_state(data: bytes) -> None:
    try:
        records = catalog.decode_state(data)
    except DecodeError:
        return
    _expect(all(type(r) is catalog.Record for r in records), "decode_state: not records")
    catalog.Catalog(SENDER, 1).merge_state(records, NOW)


def fuzz_kv_command(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_command(data)
    store = KVStore.restore(BASE_STORE)
    result = store.apply(store.last_index + 1, data, NOW)
    _expect(isinstance(result, KVResult), "KVStore.apply returned no KVResult")


def fuzz_kv_snapshot(data: bytes) -> None:
    try:
        state = kv_snapshot.decode_state(data)
    except DecodeError:
        return
    canonical = kv_snapshot.encode_state(state)
    again = kv_snapshot.encode_state(kv_snapshot.decode_state(canonical))
    _expect(again == canonical, "snapshot re-encoding is not canonical")
    store = KVStore.restore(data)
    for i, cmd in enumerate((COMMANDS[11], COMMANDS[4], COMMANDS[13]), 1):
        result = store.apply(store.last_index + i, cmd, NOW + 3600)
        _expect(isinstance(result, KVResult), "KVStore.apply returned no KVResult")


def fuzz_raft_message(data: bytes) -> None:
    try:
        msg = decode_raft(data)
    except DecodeError:
        return
    _expect(decode_raft(encode_raft(msg)) == msg, "raft round trip differs")


def fuzz_raft_voters(data: bytes) -> None:
    try:
        voters = decode_voters(data)
    except DecodeError:
        return
    _expect(decode_voters(encode_voters(voters)) == tuple(sorted(voters)), "voters round trip")


def fuzz_rpc_call(data: bytes) -> None:
    try:
        call = _kv_wire.decode_call(data)
    except DecodeError:
        return
    again = _kv_wire.decode_call(_encode_call(call.method, call.args))
    _expect(again == call, "rpc call round trip differs")


def _check_reply(method: str, args: tuple[Any, ...], data: bytes) -> None:
    try:
        value = _kv_wire.decode_reply(method, args, data)
    except DecodeError:
        return
    if isinstance(value, _kv_wire.RpcError):
        again = _kv_wire.encode_error(value.kind, value.text, value.leader_hint)
    else:
        again = _kv_wire.encode_result(method, args, value)
    _expect(_kv_wire.decode_reply(method, args, again) == value, "rpc reply round trip differs")


def fuzz_rpc_reply(data: bytes) -> None:
    if not data:
        return
    method, args, _ = CALLS[data[0] % len(CALLS)]
    _check_reply(method, args, data[1:])


def fuzz_stream_length(data: bytes) -> None:
    header = data[:4].ljust(4, b"\x00")
    limit = MAX_STREAM_FRAME_BYTES if len(data) < 8 else int.from_bytes(data[4:8], "big")
    try:
        length = parse_length(header, limit)
    except StreamFrameError:
        return
    _expect(min(SEALED_OVERHEAD, PLAINTEXT_OVERHEAD) <= length <= limit, "length out of bounds")


def fuzz_channel_header(data: bytes) -> None:
    header = parse_channel_header(data)
    if header is None:
        return
    channel_id, seq = header
    _expect(channel_header(channel_id, seq) == data[:CHANNEL_HEADER_BYTES], "header round trip")


def _dns_world() -> tuple[Directory, dict[str, str]]:
    """What a peer's DNS interface answers from: members, and services on them."""
    directory = Directory(SENDER, 1)
    nodes = {SENDER: "10.0.0.1", "node-b": "10.0.0.2", "six": "fd00::6"}
    for name, address in [*nodes.items(), ("gone", "10.0.0.9")]:
        directory.on_member(
            MemberEvent(MemberEventKind.JOIN, Member(name, address, 7946, "alive", 1))
        )
    gone = Member("gone", "10.0.0.9", 7946, "dead", 1)
    directory.on_member(MemberEvent(MemberEventKind.DEAD, gone))
    services = [
        catalog.Record(SENDER, "web-1", 11, "web", "10.0.0.1", 8080, ("v1", "primary")),
        catalog.Record("node-b", "web-2", 12, "web", "10.0.1.2", 8081, ("v2",)),
        catalog.Record("six", "web-3", 13, "web", "fd00::6", 8082),
        catalog.Record("gone", "web-4", 14, "web", "10.0.0.9", 8083),
        catalog.Record(SENDER, "db-1", 15, "db", "10.0.0.1", 5432, status="critical"),
        catalog.Record("node-b", "ext-1", 16, "ext", "api.example.org", 443),
    ]
    for record in services:
        directory.on_broadcast(catalog.encode_record(record), 0.0)
    return directory, nodes


DNS_DIRECTORY, DNS_NODES = _dns_world()
DNS_QUERIES = [
    ("web.service.meshlite.", "A", {}),
    ("web.service.meshlite.", "SRV", {"use_edns": 0, "payload": 4096}),
    ("primary.web.service.meshlite.", "AAAA", {}),
    ("_web._tcp.service.meshlite.", "SRV", {}),
    ("_web._v2.meshlite.", "SRV", {}),
    ("ext.service.meshlite.", "ANY", {}),
    ("db.service.meshlite.", "A", {}),
    ("node-b.node.meshlite.", "A", {}),
    ("0a000102.addr.meshlite.", "A", {}),
    ("fd000000000000000000000000000006.addr.meshlite.", "AAAA", {}),
    ("2.0.0.10.in-addr.arpa.", "PTR", {}),
    ("meshlite.", "SOA", {}),
    ("meshlite.", "NS", {}),
    ("example.org.", "A", {}),
    ("web.service.dc1.meshlite.", "TXT", {"use_edns": 1}),
]


def _dns_seeds() -> list[bytes]:
    return [
        dns.message.make_query(name, rdtype, id=i, **kw).to_wire()
        for i, (name, rdtype, kw) in enumerate(DNS_QUERIES)
    ]


def fuzz_dns_query(data: bytes) -> None:
    for tcp in (False, True):
        server = Answerer(node=SENDER, rng=random.Random(0))
        reply = server.respond(data, DNS_DIRECTORY, DNS_NODES, tcp=tcp, serial=42)
        if reply is None:
            continue
        query = dns.message.from_wire(data)  # it parsed there, so here too
        limit = TCP_BYTES if tcp else CLASSIC_UDP_BYTES
        if not tcp and query.edns >= 0:
            limit = max(CLASSIC_UDP_BYTES, min(query.payload, MAX_UDP_BYTES))
        _expect(len(reply) <= limit, "a DNS reply over the size limit")
        answer = dns.message.from_wire(reply)
        _expect(answer.id == query.id, "a DNS reply with another id")


def fuzz_udp_datagram(data: bytes) -> None:
    mode, body = _mode(data)
    sealer = _receiver(mode)
    frame = sealer.seal(body, NOW) if mode == SEALED else body
    try:
        plaintext = sealer.open(frame, NOW)
    except AuthError:
        _expect(mode != SEALED, "a frame sealed here did not open")
        return
    try:
        _sender, msgs = wire.decode_packet(plaintext)
    except DecodeError:
        return
    for msg in msgs:
        _consume_message(msg)


def fuzz_tcp_stream(data: bytes) -> None:
    mode, body = _mode(data)
    sealer = _receiver(mode)
    stream = encode_stream_frame(sealer.seal(body, NOW)) if mode == SEALED else body
    try:
        length = parse_length(stream[:4].ljust(4, b"\x00"))
    except StreamFrameError:
        return
    frame = stream[4 : 4 + length]
    if len(frame) < length:
        return  # the peer hung up mid-frame: IncompleteRead in the transport
    try:
        plaintext = sealer.open(frame, NOW)
    except AuthError:
        _expect(mode != SEALED, "a frame sealed here did not open")
        return
    if wire.peek_kind(plaintext) == wire.Kind.KEYRING_REQUEST:
        reply = wire.decode_message(apply_request(Keyring([KEY]), plaintext))
        _expect(isinstance(reply, wire.KeyringResponse), "keyring request got no response")
        return
    try:
        msg = wire.decode_message(plaintext)
    except DecodeError:
        return
    _consume_message(msg)


def _open_channel_frames(mode: int, body: bytes) -> Iterator[bytes]:
    """The payloads a channel opener accepts, in order, until it refuses a frame."""
    sealer = _receiver(mode)
    pieces = split_pieces(body)
    frames = _channel_frames(sealer, pieces) if mode == SEALED else pieces
    opener = ChannelOpener(sealer)
    for i, frame in enumerate(frames):
        try:
            payload = opener.open(frame, NOW)
        except AuthError:
            _expect(opener.refused, "a refused frame left the channel open")
            return
        _expect(opener.next_seq == i + 1, "the channel's frame count is off")
        yield payload


def fuzz_raft_channel(data: bytes) -> None:
    mode, body = _mode(data)
    store = KVStore.restore(BASE_STORE)
    for payload in _open_channel_frames(mode, body):
        _consume_raft(payload, store)


def fuzz_rpc_mux(data: bytes) -> None:
    mode, body = _mode(data)
    sealer = _receiver(mode)
    if mode == SEALED:
        frames = _channel_frames(sealer, split_pieces(body))
        body = b"".join(encode_stream_frame(f) for f in frames)
    opener = ChannelOpener(sealer)

    def open_frame(frame: bytes) -> bytes | None:
        try:
            return opener.open(frame, NOW)
        except AuthError:
            return None

    reader = BufferedByteReceiveStream(_Bytes(body))
    for _ in range(MAX_PIECES):
        try:
            parsed = _run_sync(_rpc_mux._next_frame(reader, MAX_STREAM_FRAME_BYTES, open_frame))
        except (anyio.IncompleteRead, StreamFrameError):
            return
        if parsed is None:
            return
        call_id, status, request = parsed
        if status == _rpc_mux.CALL:
            if wire.peek_kind(request) == wire.Kind.RPC:
                fuzz_rpc_call(request)
        else:
            method, args, _ = CALLS[call_id % len(CALLS)]
            _check_reply(method, args, request)


# ---------------------------------------------------------------------- seeds


def _channel_plaintexts() -> list[list[bytes]]:
    raft = [CHANNEL_RAFT + encode_raft(m) for m in RAFT_MESSAGES]
    return [
        [channel_header(CHANNEL_ID, i) + p for i, p in enumerate(raft[:4])],
        [channel_header(CHANNEL_ID, i) + p for i, p in enumerate(raft[4:])],
    ]


def _mux_plaintexts() -> list[list[bytes]]:
    calls = [
        _rpc_mux._header(i + 1, _rpc_mux.CALL) + _encode_call(m, a)
        for i, (m, a, _) in enumerate(CALLS)
    ]
    replies = [
        _rpc_mux._header(i, _rpc_mux.OK) + _kv_wire.encode_result(m, a, v)
        for i, (m, a, v) in enumerate(CALLS)
    ]
    replies.append(_rpc_mux._header(1, _rpc_mux.OK) + _kv_wire.encode_error("not_leader", "x", "b"))
    replies.append(_rpc_mux._header(2, _rpc_mux.REFUSED))
    return [
        [channel_header(CHANNEL_ID, i) + p for i, p in enumerate(group)]
        for group in (calls[:6], calls[6:], replies[:7], replies[7:])
    ]


def _seeds_udp() -> list[bytes]:
    return _modes(_packets(), lambda s, p: s.seal(p, NOW))


def _seeds_tcp() -> list[bytes]:
    plaintexts = [wire.encode_message(m) for m in MESSAGES]
    return _modes(plaintexts, lambda s, p: encode_stream_frame(s.seal(p, NOW)))


def _seeds_frames(groups: list[list[bytes]], *, length_prefix: bool) -> list[bytes]:
    out = []
    for plaintexts in groups:
        for mode, sealer in (
            (RAW_KEYED, Sealer(KEYRING, LABEL)),
            (RAW_KEYLESS, Sealer(None, LABEL)),
        ):
            frames = _channel_frames(sealer, plaintexts)
            if length_prefix:
                out.append(bytes([mode]) + b"".join(encode_stream_frame(f) for f in frames))
            else:
                out.append(bytes([mode]) + join_pieces(frames))
        out.append(bytes([SEALED]) + join_pieces(plaintexts))
    return out


def _seeds_rpc_reply() -> list[bytes]:
    out = []
    for i, (method, args, value) in enumerate(CALLS):
        out.append(bytes([i]) + _kv_wire.encode_result(method, args, value))
    out.append(bytes([0]) + _kv_wire.encode_error("bad_request", "no such key", None))
    return out


@dataclass(frozen=True)
class Target:
    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]
    about: str
    # Where the input's msgpack document starts (after a mode or method byte), to mutate it
    # as msgpack too; None: the input is not one msgpack document.
    msgpack_at: int | None = 0


TARGETS: dict[str, Target] = {
    "wire_packet": Target(
        fuzz_wire_packet, _packets, "_core/wire.py decode_packet: a datagram's plaintext"
    ),
    "wire_message": Target(
        fuzz_wire_message,
        lambda: [wire.encode_message(m) for m in MESSAGES],
        "_core/wire.py decode_message, peek_kind: a stream frame's plaintext",
    ),
    "catalog_record": Target(
        fuzz_catalog_record,
        lambda: [catalog.encode_record(r) for r in RECORDS],
        "_core/catalog.py decode_record + Catalog.apply: a gossiped service record",
    ),
    "catalog_state": Target(
        fuzz_catalog_state,
        lambda: [_catalog_state(), msgpack.packb([3, []])],
        "_core/catalog.py decode_state + Catalog.merge_state: push/pull user state",
    ),
    "kv_command": Target(
        fuzz_kv_command,
        lambda: list(COMMANDS),
        "_core/kv_decode.py decode_command + KVStore.apply: a Raft log entry's command",
    ),
    "kv_snapshot": Target(
        fuzz_kv_snapshot,
        lambda: [BASE_STORE, KVStore().snapshot()],
        "_core/kv_snapshot.py decode_state + KVStore.restore: an InstallSnapshot image",
    ),
    "raft_message": Target(
        fuzz_raft_message,
        lambda: [encode_raft(m) for m in RAFT_MESSAGES],
        "_core/raft/codec.py decode_raft: a Raft message",
    ),
    "raft_voters": Target(
        fuzz_raft_voters,
        lambda: [encode_voters((SENDER, "node-b", "node-c")), encode_voters(())],
        "_core/raft/types.py decode_voters: a CONFIG entry's data",
    ),
    "rpc_call": Target(
        fuzz_rpc_call,
        lambda: [_encode_call(m, a) for m, a, _ in CALLS],
        "_kv_wire.py decode_call: a forwarded KV/session call",
    ),
    "rpc_reply": Target(
        fuzz_rpc_reply,
        _seeds_rpc_reply,
        "_kv_wire.py decode_reply: the answer to a call",
        msgpack_at=1,
    ),
    "stream_length": Target(
        fuzz_stream_length,
        lambda: [encode_stream_frame(b"\x00" * 40)[:4], b"\xff\xff\xff\xff", b"\x00\x00\x00\x10"],
        "_crypto.py parse_length: a TCP stream frame's length header",
        msgpack_at=None,
    ),
    "channel_header": Target(
        fuzz_channel_header,
        lambda: [channel_header(CHANNEL_ID, 0) + b"R", channel_header(CHANNEL_ID, 2**64 - 1)],
        "_channel_seal.py parse_channel_header: an opened channel frame's header",
        msgpack_at=None,
    ),
    "dns_query": Target(
        fuzz_dns_query,
        _dns_seeds,
        "_core/dns_answer.py Answerer.respond: a DNS query (UDP and TCP)",
        msgpack_at=None,
    ),
    "udp_datagram": Target(
        fuzz_udp_datagram,
        _seeds_udp,
        "UDP path: Sealer.open -> decode_packet -> decode_record/Catalog.apply",
        msgpack_at=1,
    ),
    "tcp_stream": Target(
        fuzz_tcp_stream,
        _seeds_tcp,
        "TCP one-shot stream: parse_length -> Sealer.open -> keyring request | "
        "decode_message -> catalog decode_state",
        msgpack_at=1,
    ),
    "raft_channel": Target(
        fuzz_raft_channel,
        lambda: _seeds_frames(_channel_plaintexts(), length_prefix=False),
        "Raft channel: ChannelOpener.open (open, open_in_channel) -> decode_raft -> "
        "apply_entry/KVStore.restore",
        msgpack_at=None,
    ),
    "rpc_mux": Target(
        fuzz_rpc_mux,
        lambda: _seeds_frames(_mux_plaintexts(), length_prefix=True),
        "_rpc_mux.py frames: parse_length -> ChannelOpener -> _parse -> decode_call/decode_reply",
        msgpack_at=None,
    ),
}


# ---------------------------------------------------------------------- mutation

INTERESTING: tuple[Any, ...] = (
    None, True, False, 0, 1, -1, 255, 65535, 65536, 2**32, 2**63 - 1, 2**63, 2**64 - 1, -(2**63),
    0.0, -0.0, 1.5, float("nan"), float("inf"), float("-inf"),
    "", "a", "\x00", "é" * 40, "k" * 129, "x" * 4097, b"", b"\x00" * 17, [], {}, {"k": "v"},
)  # fmt: skip


def _nodes(value: Any, depth: int = 0) -> list[Any]:
    """The containers in ``value``, outermost first (bounded depth: msgpack allows 1,024)."""
    if depth > 32 or not isinstance(value, list | dict):
        return []
    found = [value]
    for child in value if isinstance(value, list) else value.values():
        found.extend(_nodes(child, depth + 1))
    return found


def _mutate_value(value: Any, rng: random.Random) -> Any:
    """One structural change: replace, drop, duplicate or insert an element somewhere."""
    nodes = _nodes(value)
    if not nodes or rng.random() < 0.05:
        return rng.choice(INTERESTING)
    node = rng.choice(nodes)
    donor = rng.choice([*nodes, *INTERESTING])  # splice a part of the value, or a classic
    if isinstance(node, list):
        op = rng.randrange(4) if node else 3
        at = rng.randrange(len(node)) if node else 0
        if op == 0:
            node[at] = rng.choice(INTERESTING)
        elif op == 1:
            del node[at]
        elif op == 2:
            node.insert(at, node[at])
        else:
            node.insert(at, donor if donor is not node else [])
    elif node:
        key = rng.choice(list(node))
        node[key] = rng.choice(INTERESTING) if rng.random() < 0.7 else donor
        if rng.random() < 0.2:
            node[rng.choice(INTERESTING[:14])] = "v"  # a key of another type
    else:
        node[rng.choice(("k", 1, ""))] = rng.choice(INTERESTING)
    return value


def msgpack_mutator(at: int) -> Callable[[bytes, int, int], bytes]:
    """libFuzzer's byte mutations, or half the time a structural change of the msgpack
    document that starts at ``at`` (plain byte mutations where there is none)."""

    def mutate(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.5 or len(data) <= at:
            return atheris.Mutate(data, max_size)
        try:
            value = msgpack.unpackb(data[at:], raw=False, strict_map_key=False, max_ext_len=0)
            out = data[:at] + msgpack.packb(_mutate_value(value, rng), use_bin_type=True)
        except Exception:  # not msgpack, or not packable after the change: bytes it is
            return atheris.Mutate(data, max_size)
        return out if len(out) <= max_size else atheris.Mutate(data, max_size)

    return mutate


# ---------------------------------------------------------------------- running


def write_seeds(name: str, corpus: Path) -> Path:
    """The target's corpus directory, with its seeds (kept if already there)."""
    target_dir = corpus / name
    target_dir.mkdir(parents=True, exist_ok=True)
    for seed in TARGETS[name].seeds():
        TARGETS[name].run(seed)  # a seed that breaks the contract is a bug here or there
        path = target_dir / f"seed-{hashlib.sha1(seed).hexdigest()[:16]}"
        if not path.exists():
            path.write_bytes(seed)
    return target_dir


def fuzz(name: str, corpus: Path, max_time_s: int, extra: list[str]) -> None:
    """Hand over to libFuzzer; it exits the process (0: ran out of time, no finding).

    Input files among ``extra`` (a finding to replay) are run once each instead.
    """
    files = [a for a in extra if not a.startswith("-")]
    target_dir = write_seeds(name, corpus)
    artifacts = corpus / f"{name}-artifacts"
    artifacts.mkdir(exist_ok=True)
    given = {a.split("=", 1)[0] for a in extra}
    argv = [sys.argv[0]] + ([] if files else [str(target_dir)])
    argv.append(f"-artifact_prefix={artifacts}/")
    argv += [a for a in DEFAULT_LIBFUZZER if a.split("=", 1)[0] not in given]
    if max_time_s > 0 and "-max_total_time" not in given and not files:
        argv.append(f"-max_total_time={max_time_s}")
    argv += extra
    print(f"fuzz_atheris: {name}: corpus {target_dir}", file=sys.stderr, flush=True)
    at = TARGETS[name].msgpack_at
    if at is None:
        atheris.Setup(argv, TARGETS[name].run)
    else:
        atheris.Setup(argv, TARGETS[name].run, custom_mutator=msgpack_mutator(at))
    atheris.Fuzz()


_DONE = re.compile(
    r"^#(?P<execs>\d+)\s+DONE\s+cov: (?P<cov>\d+) ft: (?P<ft>\d+) corp: (?P<corp>\d+)/\S+"
    r".*exec/s: (?P<execs_per_s>\d+)",
    re.MULTILINE,
)


def parse_output(text: str) -> dict[str, Any]:
    """Figures of one libFuzzer run from its output; ``finding`` says what went wrong."""
    out: dict[str, Any] = {"finding": None}
    done = list(_DONE.finditer(text))
    if done:
        out.update({k: int(v) for k, v in done[-1].groupdict().items()})
    stat = re.search(r"stat::number_of_executed_units: (\d+)", text)
    if stat:
        out["execs"] = int(stat.group(1))
    for marker in (
        "Uncaught Python exception",
        "ERROR: libFuzzer",
        "ALARM: working on the last Unit",
        "out-of-memory",
        "Test unit written to",
    ):
        if marker in text:
            out["finding"] = marker
            break
    return out


def run_all(
    names: list[str], corpus: Path, max_time_s: int, extra: list[str]
) -> list[dict[str, Any]]:
    """Each target in its own process, one after another; a row of figures per target."""
    rows = []
    for name in names:
        started = time.monotonic()
        cmd = [sys.executable, __file__, name, f"--max-time-s={max_time_s}", f"--corpus={corpus}"]
        proc = subprocess.run([*cmd, *extra], capture_output=True, text=True, check=False)
        row = {
            "target": name,
            "exit": proc.returncode,
            "wall_s": round(time.monotonic() - started, 1),
        }
        row.update(parse_output(proc.stderr + proc.stdout))
        row["corpus_files"] = sum(1 for _ in (corpus / name).iterdir())
        if proc.returncode != 0 and row["finding"] is None:
            row["finding"] = f"exit {proc.returncode}"
        if row["finding"] is not None:
            (corpus / f"{name}.log").write_text(proc.stderr + proc.stdout)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], allow_abbrev=False, usage=__doc__.split("\n\n")[1]
    )
    parser.add_argument("target", nargs="?", choices=sorted(TARGETS))
    parser.add_argument("--list", action="store_true", help="print the targets and exit")
    parser.add_argument("--all", action="store_true", help="run every target in turn")
    parser.add_argument("--max-time-s", type=int, default=60, help="per target; 0: no limit")
    parser.add_argument("--corpus", type=Path, help="corpus root (default: a new temp dir)")
    parser.add_argument("--json", type=Path, help="with --all: write the figures here")
    args, extra = parser.parse_known_args()
    unknown = [a for a in extra if a.startswith("--") or not (a[:1] == "-" or Path(a).is_file())]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (libFuzzer flags are -flag=V)")
    if args.list:
        for name, target in TARGETS.items():
            print(f"{name:16} {target.about}")
        return
    corpus = args.corpus or Path(tempfile.mkdtemp(prefix="meshlite-fuzz-"))
    corpus.mkdir(parents=True, exist_ok=True)
    if args.all:
        rows = run_all(list(TARGETS), corpus.resolve(), args.max_time_s, extra)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")
        sys.exit(1 if any(r["finding"] for r in rows) else 0)
    if args.target is None:
        parser.error("name a TARGET, or --list, or --all")
    fuzz(args.target, corpus, args.max_time_s, extra)


if __name__ == "__main__":
    main()
