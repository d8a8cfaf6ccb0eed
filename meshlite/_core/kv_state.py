"""The tables of the KV store and every rule that changes them (Consul's ``state`` package).

Theory of operation
-------------------
:class:`KVState` holds what Consul's state store keeps for the KV feature: the entries
(``kvs`` table), the delete tombstones (the ``graveyard``, so that an index never slides
back when a key disappears), the sessions, the lock delays, and the "table index" that
blocking queries use.  The verb functions follow ``agent/consul/state/kvs.go``,
``session.go`` and ``txn.go`` rule for rule:

* ``set`` keeps the key's ``create_index`` and session; an update that changes nothing
  (same value, flags, session, lock index) is skipped and keeps its ``modify_index``
  (``kvsSetTxn``'s ``existing.Equal`` check).  Unlike Consul's code, a plain ``set`` also
  keeps ``lock_index``: Consul resets it to the request's zero, but documents it as "the
  number of times this key has successfully been acquired", which is what we keep.
* ``cas`` with index 0 creates only; with N, writes only if ``modify_index == N``.
* ``lock`` (``?acquire=``) fails while the key is in its lock delay (Consul checks that on
  the leader before Raft; here the leader's time is in the command, so every server
  decides alike), errors for a missing or unknown session, succeeds if the key is free or
  already held by the same session, and counts ``lock_index`` up on a new acquisition.
  ``unlock`` succeeds only for the holder.  Both also write the value and flags.
* ``delete-cas`` on a missing key succeeds (``kvsDeleteCASTxn`` answers ``entry == nil``).
  ``delete-tree`` leaves one tombstone for the prefix (none for the empty prefix).
* Invalidating a session (destroy, TTL expiry, its node failing) releases or deletes every
  key it holds, per its behaviour, and puts each such key in lock delay.

A verb signals a false precondition by raising :class:`OpFailedError` (a put answers
``False``, a transaction reports an error) and a refused request by :class:`OpRefusedError`
(an error either way).  Transactions are all-or-nothing through an undo journal:
between :meth:`KVState.begin` and :meth:`KVState.rollback` every change to the entries,
the tombstones and the table index records what it replaced, and rollback puts it back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from meshlite._core.kv_commands import SessionCreateCmd
from meshlite._core.kv_prefixmap import PrefixMap
from meshlite._core.kv_types import (
    MAX_LOCK_DELAY_S,
    SESSION_TTL_MULTIPLIER,
    KVEntry,
    Session,
    TxnOp,
)

__all__ = ["KVState", "OpFailedError", "OpRefusedError"]

_ENTRY, _TOMB, _MAX = 0, 1, 2  # journal record kinds


class OpFailedError(Exception):
    """A precondition is false (stale index, lock held): ``False``, or a txn error."""


class OpRefusedError(Exception):
    """The request is refused (unknown session): an error in every form."""


class KVState:
    """The KV tables of one server; changed only by the verb methods below."""

    def __init__(self) -> None:
        self.entries: PrefixMap[KVEntry] = PrefixMap()
        self.tombstones: PrefixMap[int] = PrefixMap()
        self.sessions: dict[str, Session] = {}
        self.lock_delays: dict[str, float] = {}
        self.held: dict[str, set[str]] = {}  # session id -> keys it holds (derived)
        self.max_index = 0  # Consul's kvs/tombstones table index
        self.session_index = 0  # Consul's sessions table index
        self.last_index = 0  # the last Raft index applied
        self.touched: list[str] = []
        self._undo: list[tuple[int, str, Any]] | None = None

    # ------------------------------------------------------------------ primitives

    def _put(self, key: str, entry: KVEntry | None) -> None:
        old = self.entries.pop(key) if entry is None else self.entries.get(key)
        if old is not None and old.session is not None:
            self.held[old.session].discard(key)
            if not self.held[old.session]:
                del self.held[old.session]
        if entry is not None:
            self.entries.set(key, entry)
            if entry.session is not None:
                self.held.setdefault(entry.session, set()).add(key)

    def _store(self, key: str, entry: KVEntry | None, index: int) -> None:
        if self._undo is not None:
            self._undo.append((_ENTRY, key, self.entries.get(key)))
            self._undo.append((_MAX, "", self.max_index))
        self._put(key, entry)
        self.max_index = index
        self.touched.append(key)

    def _bury(self, key: str, index: int) -> None:
        if self._undo is not None:
            self._undo.append((_TOMB, key, self.tombstones.get(key)))
        self.tombstones.set(key, index)

    def begin(self) -> None:
        self._undo = []

    def commit(self) -> None:
        self._undo = None

    def rollback(self) -> None:
        undo, self._undo = self._undo or [], None
        for kind, key, old in reversed(undo):
            if kind == _ENTRY:
                self._put(key, old)
            elif kind == _TOMB:
                if old is None:
                    self.tombstones.pop(key)
                else:
                    self.tombstones.set(key, old)
            else:
                self.max_index = old
        self.touched.clear()

    # ------------------------------------------------------------------ KV verbs

    def run(self, op: TxnOp, index: int, now_s: float) -> tuple[KVEntry, ...]:
        """Apply one operation; the entries it answers (Consul's ``TxnResult`` order)."""
        return _VERBS[op.verb](self, op, index, now_s)

    def _write(
        self, key: str, value: bytes, flags: int, index: int, session: str | None, lock_index: int
    ) -> KVEntry:
        old = self.entries.get(key)
        if (
            old is not None
            and old.value == value
            and old.flags == flags
            and old.session == session
            and old.lock_index == lock_index
        ):
            return old  # nothing changes: keep the modify index (kvsSetTxn's Equal)
        created = index if old is None else old.create_index
        new = KVEntry(key, value, flags, created, index, lock_index, session)
        self._store(key, new, index)
        return new

    def _set(self, op: TxnOp, index: int, _now_s: float) -> tuple[KVEntry, ...]:
        old = self.entries.get(op.key)
        session, locks = (None, 0) if old is None else (old.session, old.lock_index)
        return (self._write(op.key, op.value, op.flags, index, session, locks),)

    def _cas(self, op: TxnOp, index: int, now_s: float) -> tuple[KVEntry, ...]:
        old = self.entries.get(op.key)
        if (old is None) != (op.index == 0) or (old is not None and old.modify_index != op.index):
            raise OpFailedError(f"failed to set key {op.key!r}, index is stale")
        return self._set(op, index, now_s)

    def _lock(self, op: TxnOp, index: int, now_s: float) -> tuple[KVEntry, ...]:
        until_s = self.lock_delays.get(op.key)
        if until_s is not None and now_s < until_s:
            raise OpFailedError(f"failed to lock key {op.key!r} due to lock delay")
        if op.session is None or op.session not in self.sessions:
            raise OpRefusedError(f"invalid session {op.session!r}")
        old = self.entries.get(op.key)
        if old is None:
            locks = 1
        elif old.session == op.session:
            locks = old.lock_index
        elif old.session is not None:
            raise OpFailedError(f"failed to lock key {op.key!r}, lock is already held")
        else:
            locks = old.lock_index + 1
        return (self._write(op.key, op.value, op.flags, index, op.session, locks),)

    def _unlock(self, op: TxnOp, index: int, _now_s: float) -> tuple[KVEntry, ...]:
        old = self.entries.get(op.key)
        if old is None or old.session is None or old.session != op.session:
            raise OpFailedError(
                f"failed to unlock key {op.key!r}, lock isn't held, or is held by another session"
            )
        return (self._write(op.key, op.value, op.flags, index, None, old.lock_index),)

    def _delete(self, op: TxnOp, index: int, _now_s: float) -> tuple[KVEntry, ...]:
        if op.key in self.entries:
            self._bury(op.key, index)
            self._store(op.key, None, index)
        return ()

    def _delete_cas(self, op: TxnOp, index: int, now_s: float) -> tuple[KVEntry, ...]:
        old = self.entries.get(op.key)
        if old is not None and old.modify_index != op.index:
            raise OpFailedError(f"failed to delete key {op.key!r}, index is stale")
        return self._delete(op, index, now_s)

    def _delete_tree(self, op: TxnOp, index: int, _now_s: float) -> tuple[KVEntry, ...]:
        keys = self.entries.keys_with_prefix(op.key)
        if keys:
            for key in keys:
                self._store(key, None, index)
            if op.key:  # Consul leaves no tombstone for the whole tree
                self._bury(op.key, index)
        return ()

    def _get(self, op: TxnOp, _index: int, _now_s: float) -> tuple[KVEntry, ...]:
        entry = self.entries.get(op.key)
        if entry is None:
            raise OpFailedError(f"key {op.key!r} doesn't exist")
        return (entry,)

    def _get_tree(self, op: TxnOp, _index: int, _now_s: float) -> tuple[KVEntry, ...]:
        return tuple(e for _, e in self.entries.items_with_prefix(op.key))

    def _check_index(self, op: TxnOp, _index: int, _now_s: float) -> tuple[KVEntry, ...]:
        entry = self.entries.get(op.key)
        if entry is None:
            raise OpFailedError(f"failed to check index, key {op.key!r} doesn't exist")
        if entry.modify_index != op.index:
            raise OpFailedError(
                f"failed index check for key {op.key!r}, "
                f"current modify index {entry.modify_index} != {op.index}"
            )
        return (entry,)

    def _check_session(self, op: TxnOp, _index: int, _now_s: float) -> tuple[KVEntry, ...]:
        entry = self.entries.get(op.key)
        if entry is None:
            raise OpFailedError(f"failed to check session, key {op.key!r} doesn't exist")
        if entry.session != op.session:
            raise OpFailedError(
                f"failed session check for key {op.key!r}, "
                f"current session {entry.session!r} != {op.session!r}"
            )
        return (entry,)

    def _check_not_exists(self, op: TxnOp, _index: int, _now_s: float) -> tuple[KVEntry, ...]:
        if op.key in self.entries:
            raise OpFailedError(f"key {op.key!r} exists")
        return ()

    # ------------------------------------------------------------------ sessions

    def create_session(self, c: SessionCreateCmd, index: int, now_s: float) -> Session:
        if c.session_id in self.sessions:
            raise OpRefusedError(f"session {c.session_id!r} already exists")
        expires = now_s + SESSION_TTL_MULTIPLIER * c.ttl_s if c.ttl_s else None
        s = Session(
            c.session_id, c.node, c.name, c.behavior, c.ttl_s, c.lock_delay_s, index, index, expires
        )
        self.sessions[s.id] = s
        self.session_index = index
        return s

    def renew_session(self, session_id: str, now_s: float) -> Session | None:
        s = self.sessions.get(session_id)
        if s is not None and s.ttl_s:
            s = attrs.evolve(s, expires_at_s=now_s + SESSION_TTL_MULTIPLIER * s.ttl_s)
            self.sessions[session_id] = s
        return s

    def reset_session_timers(self, now_s: float) -> None:
        for sid in sorted(self.sessions):
            self.renew_session(sid, now_s)

    def invalidate(self, session_id: str, index: int, now_s: float) -> bool:
        """Destroy a session, releasing or deleting its keys (``deleteSessionTxn``)."""
        s = self.sessions.pop(session_id, None)
        if s is None:
            return False
        self.session_index = index
        delay_s = min(s.lock_delay_s, MAX_LOCK_DELAY_S)
        for key in sorted(self.held.get(session_id, ())):
            old = self.entries.get(key)
            assert old is not None
            assert old.session == session_id
            if s.behavior == "delete":
                self._bury(key, index)
                self._store(key, None, index)
            else:
                self._write(key, old.value, old.flags, index, None, old.lock_index)
            if delay_s > 0:
                self.lock_delays[key] = now_s + delay_s
        return True

    def expire_sessions(self, index: int, now_s: float) -> list[str]:
        due = sorted(
            sid
            for sid, s in self.sessions.items()
            if s.expires_at_s is not None and s.expires_at_s <= now_s
        )
        for sid in due:
            self.invalidate(sid, index, now_s)
        for key in [k for k, until_s in self.lock_delays.items() if until_s <= now_s]:
            del self.lock_delays[key]
        return due

    def node_failed(self, node: str, index: int, now_s: float) -> list[str]:
        gone = sorted(sid for sid, s in self.sessions.items() if s.node == node)
        for sid in gone:
            self.invalidate(sid, index, now_s)
        return gone

    def reap_tombstones(self, upto_index: int) -> None:
        for key in [k for k, i in self.tombstones.items() if i <= upto_index]:
            self.tombstones.pop(key)


_Verb = Callable[[KVState, TxnOp, int, float], tuple[KVEntry, ...]]
_VERBS: dict[str, _Verb] = {
    "set": KVState._set,
    "cas": KVState._cas,
    "lock": KVState._lock,
    "unlock": KVState._unlock,
    "delete": KVState._delete,
    "delete-cas": KVState._delete_cas,
    "delete-tree": KVState._delete_tree,
    "get": KVState._get,
    "get-tree": KVState._get_tree,
    "check-index": KVState._check_index,
    "check-session": KVState._check_session,
    "check-not-exists": KVState._check_not_exists,
}
