"""Snapshots of the KV state: every table as one msgpack document, and back.

Theory of operation
-------------------
Raft compacts its log by replacing a prefix with a snapshot of the state machine
(Raft thesis §5.1); a server far behind receives the leader's snapshot instead of the
entries it missed.  The snapshot must therefore capture *everything* that decides a
future command's outcome, or two servers would part ways after one restores: the
entries, the tombstones (blocking-query indexes), the sessions with their TTL
deadlines, the lock delays (Consul keeps those in memory only, because its leader
checks them before Raft; ours are decided in the state machine, so they are state),
and the three indexes.  The held-locks index is derived from the entries on restore.

The encoding is canonical — tables in key order — so the same state always gives the
same bytes: tests compare snapshots byte for byte, and ``restore(b).snapshot() == b``.
A snapshot comes from disk or from the leader over the network, so
:func:`decode_state` checks every field and raises :class:`DecodeError` on garbage.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack

from meshlite._core.kv_prefixmap import PrefixMap
from meshlite._core.kv_state import KVState
from meshlite._core.kv_types import BEHAVIORS, KVEntry, Session
from meshlite._core.wire_checks import DecodeError, check_bytes, check_str, check_uint, unpack

__all__ = [
    "decode_state",
    "encode_state",
    "entry_from_wire",
    "entry_to_wire",
    "session_from_wire",
    "session_to_wire",
]

_VERSION = 1


def entry_to_wire(e: KVEntry) -> list[Any]:
    return [e.key, e.value, e.flags, e.create_index, e.modify_index, e.lock_index, e.session]


def session_to_wire(s: Session) -> list[Any]:
    return [
        s.id,
        s.node,
        s.name,
        s.behavior,
        s.ttl_s,
        s.lock_delay_s,
        s.create_index,
        s.modify_index,
        s.expires_at_s,
    ]


def encode_state(st: KVState) -> bytes:
    doc = [
        _VERSION,
        st.last_index,
        st.max_index,
        st.session_index,
        [entry_to_wire(e) for _, e in st.entries.items()],
        [[k, i] for k, i in st.tombstones.items()],
        [session_to_wire(st.sessions[sid]) for sid in sorted(st.sessions)],
        [[k, st.lock_delays[k]] for k in sorted(st.lock_delays)],
    ]
    data: bytes = msgpack.packb(doc, use_bin_type=True)
    return data


def _list(v: Any, n: int | None = None) -> list[Any]:
    if type(v) is not list or (n is not None and len(v) != n):
        raise DecodeError("snapshot: malformed table")
    return v


def _float(v: Any) -> float:
    if type(v) is float and math.isfinite(v):
        return v
    raise DecodeError("snapshot: expected a finite float")


def _opt_str(v: Any) -> str | None:
    return None if v is None else check_str(v)


def entry_from_wire(v: Any) -> KVEntry:
    key, value, flags, created, modified, locks, session = _list(v, 7)
    return KVEntry(
        check_str(key),
        check_bytes(value),
        check_uint(flags),
        check_uint(created),
        check_uint(modified),
        check_uint(locks),
        _opt_str(session),
    )


def session_from_wire(v: Any) -> Session:
    sid, node, name, behavior, ttl, delay, created, modified, expires = _list(v, 9)
    if behavior not in BEHAVIORS:
        raise DecodeError("snapshot: unknown session behavior")
    return Session(
        check_str(sid),
        check_str(node),
        check_str(name),
        behavior,
        _float(ttl),
        _float(delay),
        check_uint(created),
        check_uint(modified),
        None if expires is None else _float(expires),
    )


def _fill(st: KVState, entries: Any, tombs: Any, sessions: Any, delays: Any) -> None:
    st.entries = PrefixMap()
    for e in map(entry_from_wire, _list(entries)):
        st.entries.set(e.key, e)
    for pair in _list(tombs):
        key, index = _list(pair, 2)
        st.tombstones.set(check_str(key), check_uint(index))
    for s in map(session_from_wire, _list(sessions)):
        st.sessions[s.id] = s
    for pair in _list(delays):
        key, until_s = _list(pair, 2)
        st.lock_delays[check_str(key)] = _float(until_s)
    for key, e in st.entries.items():
        if e.session is not None:
            if e.session not in st.sessions:
                raise DecodeError("snapshot: a key is held by an unknown session")
            st.held.setdefault(e.session, set()).add(key)


def decode_state(data: bytes) -> KVState:
    """The state in ``data`` (made by :func:`encode_state`), or :class:`DecodeError`."""
    doc = unpack(data, "snapshot")
    version, last, max_index, session_index, entries, tombs, sessions, delays = _list(doc, 8)
    if version != _VERSION:
        raise DecodeError(f"snapshot: unknown version {version!r}")
    st = KVState()
    st.last_index = check_uint(last)
    st.max_index = check_uint(max_index)
    st.session_index = check_uint(session_index)
    _fill(st, entries, tombs, sessions, delays)
    return st
