"""Raft messages on the wire: msgpack arrays, decoded without trusting the peer.

Theory of operation
-------------------
A message is the msgpack array ``[kind, frm, to, term, field, ...]`` with a
:class:`RaftKind` first (append-only numbering, like ``meshlite._core.wire.Kind``), in the
field order of the class in ``messages.py``.  Entries inside an ``Append`` travel as
``[term, kind, data]``: their indexes are implied by ``prev_index``, so a peer cannot send
a log with gaps.  :func:`decode_raft` returns a fully checked frozen message or raises
:class:`~meshlite._core.wire.DecodeError`, whatever the bytes: sizes are bounded before
anything is allocated, integers must be non-negative, names must be valid node names,
entry terms must not decrease and must not exceed the message's term (Raft's log shape:
thesis §3.5), and a ``CONFIG`` entry's data must be a voter set.  The core can then take
any decoded message as a well-formed one and only judge whether it is stale.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import msgpack

from meshlite._core.raft.messages import (
    Append,
    AppendResp,
    Heartbeat,
    HeartbeatResp,
    InstallSnapshot,
    Message,
    TimeoutNow,
    Vote,
    VoteResp,
)
from meshlite._core.raft.types import MAX_VOTERS, Entry, EntryKind, Snapshot, decode_voters
from meshlite._core.wire_checks import (
    DecodeError,
    check_bool,
    check_bytes,
    check_name,
    check_uint,
    unpack,
)

__all__ = ["MAX_RAFT_MESSAGE_BYTES", "RaftKind", "decode_raft", "encode_raft"]

# The largest message: an InstallSnapshot carries a whole state machine image.  A KV store
# holding tens of thousands of small keys fits easily; raise it (and the stream frame
# limit) for bigger stores rather than letting a peer make us allocate without bound.
MAX_RAFT_MESSAGE_BYTES = 64 * 1024 * 1024
# Far above any sane batch (RaftConfig.max_append_entries defaults to 64).
_MAX_WIRE_ENTRIES = 65_536


class RaftKind(enum.IntEnum):
    VOTE = 1
    VOTE_RESP = 2
    APPEND = 3
    APPEND_RESP = 4
    HEARTBEAT = 5
    HEARTBEAT_RESP = 6
    INSTALL_SNAPSHOT = 7
    TIMEOUT_NOW = 8


def encode_raft(msg: Message) -> bytes:
    """The bytes of ``msg`` (see the module docstring for the layout)."""
    head: list[Any] = [0, msg.frm, msg.to, msg.term]
    if isinstance(msg, Append):
        ents = [[e.term, int(e.kind), e.data] for e in msg.entries]
        body: list[Any] = [RaftKind.APPEND, msg.prev_index, msg.prev_term, msg.commit, ents]
    elif isinstance(msg, AppendResp):
        body = [RaftKind.APPEND_RESP, msg.index, msg.reject, msg.hint_index, msg.hint_term]
    elif isinstance(msg, Heartbeat):
        body = [RaftKind.HEARTBEAT, msg.commit, msg.read_seq]
    elif isinstance(msg, HeartbeatResp):
        body = [RaftKind.HEARTBEAT_RESP, msg.read_seq]
    elif isinstance(msg, Vote):
        body = [RaftKind.VOTE, msg.last_index, msg.last_term, msg.pre, msg.transfer]
    elif isinstance(msg, VoteResp):
        body = [RaftKind.VOTE_RESP, msg.reject, msg.pre]
    elif isinstance(msg, InstallSnapshot):
        s = msg.snapshot
        body = [RaftKind.INSTALL_SNAPSHOT, s.index, s.term, list(s.voters), s.data]
    else:
        body = [RaftKind.TIMEOUT_NOW]
    head[0] = int(body[0])
    return msgpack.packb(head + body[1:])


def decode_raft(data: bytes, max_bytes: int = MAX_RAFT_MESSAGE_BYTES) -> Message:
    """The message in ``data``; anything malformed raises :class:`DecodeError` only."""
    if len(data) > max_bytes:
        raise DecodeError("raft message too large")
    value = unpack(
        data,
        "raft message",
        max_str_len=max_bytes,
        max_bin_len=max_bytes,
        max_array_len=_MAX_WIRE_ENTRIES,
        max_map_len=0,
    )
    if type(value) is not list or len(value) < 4:
        raise DecodeError("a raft message is an array [kind, frm, to, term, ...]")
    kind = value[0]
    parse = _PARSERS.get(kind) if type(kind) is int else None
    if parse is None:
        raise DecodeError(f"unknown raft message kind {kind!r}")
    frm, to, term = check_name(value[1]), check_name(value[2]), check_uint(value[3])
    return parse(frm, to, term, value[4:])


def _fields(rest: list[Any], n: int) -> list[Any]:
    if len(rest) != n:
        raise DecodeError(f"expected {n} fields, got {len(rest)}")
    return rest


def _vote(frm: str, to: str, term: int, rest: list[Any]) -> Message:
    last_index, last_term, pre, transfer = _fields(rest, 4)
    return Vote(
        frm,
        to,
        term,
        check_uint(last_index),
        check_uint(last_term),
        check_bool(pre),
        check_bool(transfer),
    )


def _vote_resp(frm: str, to: str, term: int, rest: list[Any]) -> Message:
    reject, pre = _fields(rest, 2)
    return VoteResp(frm, to, term, check_bool(reject), check_bool(pre))


def _append(frm: str, to: str, term: int, rest: list[Any]) -> Message:
    prev_index, prev_term, commit, ents = _fields(rest, 4)
    prev_index, prev_term = check_uint(prev_index), check_uint(prev_term)
    if type(ents) is not list:
        raise DecodeError("entries must be a list")
    entries = []
    floor = prev_term
    for offset, item in enumerate(ents, start=1):
        entry = _entry(prev_index + offset, item)
        if not floor <= entry.term <= term:
            raise DecodeError("entry terms must not decrease nor exceed the message term")
        floor = entry.term
        entries.append(entry)
    return Append(frm, to, term, prev_index, prev_term, tuple(entries), check_uint(commit))


def _entry(index: int, item: Any) -> Entry:
    if type(item) is not list or len(item) != 3:
        raise DecodeError("an entry is [term, kind, data]")
    term, kind, data = check_uint(item[0]), check_uint(item[1]), check_bytes(item[2])
    try:
        entry_kind = EntryKind(kind)
    except ValueError:
        raise DecodeError(f"unknown entry kind {kind}") from None
    if entry_kind is EntryKind.CONFIG:
        decode_voters(data)
    return Entry(index, term, entry_kind, data)


def _append_resp(frm: str, to: str, term: int, rest: list[Any]) -> Message:
    index, reject, hint_index, hint_term = _fields(rest, 4)
    return AppendResp(
        frm, to, term, check_uint(index), check_bool(reject), check_uint(hint_index),
        check_uint(hint_term),
    )  # fmt: skip


def _heartbeat(frm: str, to: str, term: int, rest: list[Any]) -> Message:
    commit, read_seq = _fields(rest, 2)
    return Heartbeat(frm, to, term, check_uint(commit), check_uint(read_seq))


def _heartbeat_resp(frm: str, to: str, term: int, rest: list[Any]) -> Message:
    (read_seq,) = _fields(rest, 1)
    return HeartbeatResp(frm, to, term, check_uint(read_seq))


def _snapshot(frm: str, to: str, term: int, rest: list[Any]) -> Message:
    index, snap_term, voters, data = _fields(rest, 4)
    index, snap_term = check_uint(index), check_uint(snap_term)
    if index == 0 or snap_term > term:
        raise DecodeError("a snapshot covers index >= 1 at a term no later than the message")
    if type(voters) is not list or len(voters) > MAX_VOTERS:
        raise DecodeError("snapshot voters must be a short list")
    names = tuple(check_name(v) for v in voters)
    if len(set(names)) != len(names):
        raise DecodeError("snapshot voters have duplicates")
    return InstallSnapshot(frm, to, term, Snapshot(index, snap_term, names, check_bytes(data)))


def _timeout_now(frm: str, to: str, term: int, rest: list[Any]) -> Message:
    _fields(rest, 0)
    return TimeoutNow(frm, to, term)


_PARSERS: dict[int, Callable[[str, str, int, list[Any]], Message]] = {
    RaftKind.VOTE: _vote,
    RaftKind.VOTE_RESP: _vote_resp,
    RaftKind.APPEND: _append,
    RaftKind.APPEND_RESP: _append_resp,
    RaftKind.HEARTBEAT: _heartbeat,
    RaftKind.HEARTBEAT_RESP: _heartbeat_resp,
    RaftKind.INSTALL_SNAPSHOT: _snapshot,
    RaftKind.TIMEOUT_NOW: _timeout_now,
}
