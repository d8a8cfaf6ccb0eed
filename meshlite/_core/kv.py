"""The KV + sessions state machine that every server applies from the Raft log.

Theory of operation
-------------------
Raft (Ongaro's thesis, §2 and §6) replicates a log of commands; every server applies
the committed ones in order to a deterministic state machine, so all servers hold the
same state.  :class:`KVStore` is that machine for Consul's KV store and sessions:
``apply(index, command, now_s)`` is a pure function of the current state, the entry's
Raft index (which becomes ``CreateIndex``/``ModifyIndex``, as in Consul's FSM) and
``now_s`` — the *leader's* wall clock when it proposed the entry, carried with the
entry (see ``kv_commands.stamp``), never the applying server's clock.  Lock delays
and session TTLs are decided against that time, which is how Consul's leader-only
checks become deterministic here.

``apply`` never raises on what the log holds: a command that does not decode, an
index that is not after the last applied one, a non-finite time — each gives a
:class:`KVResult` with ``error`` set and leaves the state as it was.  The rules live
in ``kv_state.py``, the command format in ``kv_commands.py``, snapshots in
``kv_snapshot.py``.

Reads are local and cheap (``get``, ``list``, ``keys``); how fresh they are is the
caller's business (default, consistent and stale modes are decided by the I/O layer
around Raft).  For blocking queries (``?index=``), :meth:`KVStore.key_index` and
:meth:`KVStore.prefix_index` return what Consul returns in ``X-Consul-Index``:

* an existing key: its ``ModifyIndex``;
* a missing key: the KV table index — the last Raft index that changed or deleted any
  key (Consul's ``kvsMaxIndex``; at least 1, "Index 1 is impossible anyways");
* a prefix: the largest ``ModifyIndex`` under it or tombstone index under it, falling
  back to the table index when there is none (``kvsListTxn``).

A waiter with ``index=N`` returns once that value exceeds N; ``KVResult.touched`` lists
the keys each command changed, so the I/O layer need only re-check those waiters.

A batch entry (``kv_commands.cmd_batch``: single-key writes to distinct keys) applies
each write as if it were alone, at the entry's index, and answers each one's result in
``KVResult.batch``; ``touched`` covers them all.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Sequence

import attrs

from meshlite._core.kv_commands import (
    BatchCmd,
    Command,
    Kind,
    OpCmd,
    SessionCmd,
    SessionCreateCmd,
    TxnCmd,
    batch_groups,
    check_txn,
    cmd_batch,
    cmd_delete,
    cmd_expire_sessions,
    cmd_node_failed,
    cmd_op,
    cmd_put,
    cmd_reap_tombstones,
    cmd_reset_session_timers,
    cmd_session_create,
    cmd_session_destroy,
    cmd_session_renew,
    cmd_txn,
    cmd_writes,
    delete_op,
    put_op,
    stamp,
    unstamp,
)
from meshlite._core.kv_decode import decode_command
from meshlite._core.kv_snapshot import decode_state, encode_state
from meshlite._core.kv_state import KVState, OpFailedError, OpRefusedError
from meshlite._core.kv_types import (
    READ_VERBS,
    KVEntry,
    KVResult,
    Session,
    TxnError,
    TxnOp,
    TxnResult,
)
from meshlite._core.wire_checks import DecodeError
from meshlite.errors import ConfigError

# The whole KV API in one import: the store, its values, and the command builders.
__all__ = [
    "KVEntry",
    "KVResult",
    "KVStore",
    "Session",
    "TxnError",
    "TxnOp",
    "TxnResult",
    "batch_groups",
    "cmd_batch",
    "cmd_delete",
    "cmd_expire_sessions",
    "cmd_node_failed",
    "cmd_op",
    "cmd_put",
    "cmd_reap_tombstones",
    "cmd_reset_session_timers",
    "cmd_session_create",
    "cmd_session_destroy",
    "cmd_session_renew",
    "cmd_txn",
    "cmd_writes",
    "delete_op",
    "put_op",
    "stamp",
    "unstamp",
]


class KVStore:
    """Consul's KV store and sessions, applied from the Raft log (see module doc)."""

    def __init__(self) -> None:
        self._st = KVState()

    # ------------------------------------------------------------------ apply

    def apply(self, index: int, command: bytes, now_s: float) -> KVResult:
        """Apply the committed entry at Raft ``index``; ``now_s`` is the leader's stamp."""
        refused = self._advance(index)
        if refused is not None:
            return refused
        if not math.isfinite(now_s):
            return KVResult(index, ok=False, error="the time stamp is not finite")
        try:
            cmd = decode_command(command)
        except DecodeError as exc:
            return KVResult(index, ok=False, error=f"malformed command: {exc}")
        result = self._dispatch(cmd, index, now_s)
        return attrs.evolve(result, touched=tuple(dict.fromkeys(self._st.touched)))

    def apply_entry(self, index: int, data: bytes) -> KVResult:
        """:meth:`apply` for entry data made by ``kv_commands.stamp(command, now_s)``."""
        try:
            now_s, command = unstamp(data)
        except DecodeError as exc:
            return self._advance(index) or KVResult(index, ok=False, error=f"bad entry: {exc}")
        return self.apply(index, command, now_s)

    def _advance(self, index: int) -> KVResult | None:
        """Take ``index`` as applied, or the refusal if it is not after the last one."""
        st = self._st
        if type(index) is not int or index <= st.last_index:
            return KVResult(index, ok=False, error=f"index {index} is not after {st.last_index}")
        st.last_index = index
        st.touched = []
        return None

    def _dispatch(self, cmd: Command, index: int, now_s: float) -> KVResult:
        st = self._st
        if isinstance(cmd, OpCmd):
            return self._single(cmd.op, index, now_s)
        if isinstance(cmd, TxnCmd):
            return self._txn(cmd.ops, index, now_s)
        if isinstance(cmd, BatchCmd):
            return KVResult(index, batch=tuple(self._single(op, index, now_s) for op in cmd.ops))
        if isinstance(cmd, SessionCreateCmd):
            try:
                return KVResult(index, session=st.create_session(cmd, index, now_s))
            except OpRefusedError as exc:
                return KVResult(index, ok=False, error=str(exc))
        return self._session_cmd(cmd, index, now_s)

    def _session_cmd(self, cmd: SessionCmd, index: int, now_s: float) -> KVResult:
        st = self._st
        if cmd.kind == Kind.SESSION_DESTROY:
            assert isinstance(cmd.arg, str)
            gone = st.invalidate(cmd.arg, index, now_s)
            return KVResult(index, invalidated=(cmd.arg,) if gone else ())
        if cmd.kind == Kind.SESSION_RENEW:
            assert isinstance(cmd.arg, str)
            s = st.renew_session(cmd.arg, now_s)
            return KVResult(index, ok=s is not None, session=s)
        if cmd.kind == Kind.NODE_FAILED:
            assert isinstance(cmd.arg, str)
            return KVResult(index, invalidated=tuple(st.node_failed(cmd.arg, index, now_s)))
        if cmd.kind == Kind.EXPIRE_SESSIONS:
            return KVResult(index, invalidated=tuple(st.expire_sessions(index, now_s)))
        if cmd.kind == Kind.RESET_SESSION_TIMERS:
            st.reset_session_timers(now_s)
            return KVResult(index)
        assert cmd.kind == Kind.REAP_TOMBSTONES
        assert isinstance(cmd.arg, int)
        st.reap_tombstones(cmd.arg)
        return KVResult(index)

    def _single(self, op: TxnOp, index: int, now_s: float) -> KVResult:
        st = self._st
        try:
            st.run(op, index, now_s)
            ok, error = True, None
        except OpFailedError:
            ok, error = False, None
        except OpRefusedError as exc:
            ok, error = False, str(exc)
        entry = None if op.verb == "delete-tree" else st.entries.get(op.key)
        return KVResult(index, ok=ok, error=error, entry=entry)

    def _txn(self, ops: tuple[TxnOp, ...], index: int, now_s: float) -> KVResult:
        """All or nothing, every error reported (``txnDispatch`` + ``TxnRW``)."""
        st = self._st
        st.begin()
        results: list[TxnResult] = []
        errors: list[TxnError] = []
        for i, op in enumerate(ops):
            try:
                entries = st.run(op, index, now_s)
            except (OpFailedError, OpRefusedError) as exc:
                errors.append(TxnError(i, str(exc)))
                continue
            keep_value = op.verb in ("get", "get-tree")
            results.extend(
                TxnResult(i, e if keep_value else attrs.evolve(e, value=b"")) for e in entries
            )
        if errors:
            st.rollback()
            return KVResult(index, ok=False, errors=tuple(errors))
        st.commit()
        return KVResult(index, results=tuple(results))

    def read_txn(self, ops: Sequence[TxnOp]) -> KVResult:
        """A read-only transaction served locally, without Raft (Consul's ``TxnRO``)."""
        check_txn(ops)
        for i, op in enumerate(ops):
            if op.verb not in READ_VERBS:
                raise ConfigError(f"operation {i} ({op.verb!r}) writes: send it through Raft")
        saved = self._st.touched
        try:
            return self._txn(tuple(ops), self._st.last_index, math.nan)
        finally:
            self._st.touched = saved

    # ------------------------------------------------------------------ reads

    @property
    def last_index(self) -> int:
        """The Raft index of the last entry applied (the store's "applied index")."""
        return self._st.last_index

    def get(self, key: str) -> KVEntry | None:
        return self._st.entries.get(key)

    def list(self, prefix: str = "") -> builtins.list[KVEntry]:
        """Every entry whose key starts with ``prefix``, in key order (``?recurse``)."""
        return [e for _, e in self._st.entries.items_with_prefix(prefix)]

    def keys(self, prefix: str = "", separator: str | None = None) -> builtins.list[str]:
        """Keys under ``prefix``, cut after the first ``separator`` past it (``?keys``)."""
        found = self._st.entries.keys_with_prefix(prefix)
        if not separator:
            return found
        out: dict[str, None] = {}
        n = len(prefix)
        for key in found:
            cut = key.find(separator, n)
            out[key if cut < 0 else key[: cut + len(separator)]] = None
        return list(out)

    def key_index(self, key: str) -> int:
        """``X-Consul-Index`` of a get of ``key`` (see the module doc)."""
        entry = self._st.entries.get(key)
        return entry.modify_index if entry is not None else max(self._st.max_index, 1)

    def prefix_index(self, prefix: str = "") -> int:
        """``X-Consul-Index`` of a recursive get or keys listing of ``prefix``."""
        st = self._st
        best = 0
        if prefix:
            for _, e in st.entries.items_with_prefix(prefix):
                best = max(best, e.modify_index)
            for _, i in st.tombstones.items_with_prefix(prefix):
                best = max(best, i)
        return max(best or st.max_index, 1)

    def lock_delay_until(self, key: str) -> float | None:
        """Leader-clock time until which ``key`` cannot be acquired, if in lock delay."""
        return self._st.lock_delays.get(key)

    # ------------------------------------------------------------------ sessions

    def sizes(self) -> tuple[int, int]:
        """``(keys, sessions)`` held now (for metrics)."""
        return len(self._st.entries), len(self._st.sessions)

    @property
    def sessions_index(self) -> int:
        """``X-Consul-Index`` of session listings: last create or invalidation."""
        return max(self._st.session_index, 1)

    def session(self, session_id: str) -> Session | None:
        return self._st.sessions.get(session_id)

    def sessions(self) -> builtins.list[Session]:
        st = self._st
        return [st.sessions[sid] for sid in sorted(st.sessions)]

    def node_sessions(self, node: str) -> builtins.list[Session]:
        return [s for s in self.sessions() if s.node == node]

    def next_session_expiry_s(self) -> float | None:
        """When the leader should propose ``cmd_expire_sessions`` next (leader clock)."""
        due = [s.expires_at_s for s in self._st.sessions.values() if s.expires_at_s is not None]
        return min(due) if due else None

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        """The whole state, canonically encoded (same state, same bytes)."""
        return encode_state(self._st)

    @classmethod
    def restore(cls, data: bytes) -> KVStore:
        """The store a :meth:`snapshot` describes; :class:`DecodeError` on garbage."""
        store = cls()
        store._st = decode_state(data)
        return store
