"""The KV state machine against a dict model: CAS, recurse, sessions, locks, lock delay, txn.

The model is Consul's rules written as plainly as possible (a dict of entries, a dict
of sessions, a dict of lock delays, a dict of tombstones), independent of the store's
sorted index, undo journal, held-locks index and snapshot code.  Hypothesis drives
both with the same commands, compares every answer, checks the whole state after
every step, and now and then swaps the store for ``restore(snapshot())`` of itself.
"""

from __future__ import annotations

import attrs
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from meshlite._core.kv import KVStore
from meshlite._core.kv_commands import (
    batch_groups,
    cmd_delete,
    cmd_expire_sessions,
    cmd_node_failed,
    cmd_put,
    cmd_session_create,
    cmd_session_destroy,
    cmd_session_renew,
    cmd_txn,
    cmd_writes,
)
from meshlite._core.kv_types import KVEntry, KVResult, TxnOp
from meshlite.testing import long_run

KEYS = ["a", "a/b", "a/b/c", "b"]
PREFIXES = ["", "a", "a/", "b", "c"]
NODES = ["n1", "n2"]
SIDS = ["s1", "s2", "s3"]  # "s3" is never created by the create rule below: unknown
HOLDERS = ["s1", "s1", "s2", "s3"]  # mostly live sessions: locks are taken, not refused
VALUES = [b"", b"x", b"y"]
TTLS = [0.0, 10.0, 30.0]
DELAYS = [0.0, 5.0, 15.0]
OK, FAIL, ERROR = "ok", "fail", "error"


@attrs.define
class MSession:
    node: str
    behavior: str
    ttl_s: float
    delay_s: float
    expires: float | None


class Model:
    """Consul's KV rules over plain dicts."""

    def __init__(self) -> None:
        self.kv: dict[str, KVEntry] = {}
        self.tombs: dict[str, int] = {}
        self.sessions: dict[str, MSession] = {}
        self.delays: dict[str, float] = {}
        self.max_index = 0

    def write(
        self, key: str, value: bytes, flags: int, i: int, sid: str | None, locks: int
    ) -> None:
        old = self.kv.get(key)
        if old is not None and (old.value, old.flags, old.session, old.lock_index) == (
            value,
            flags,
            sid,
            locks,
        ):
            return
        created = old.create_index if old is not None else i
        self.kv[key] = KVEntry(key, value, flags, created, i, locks, sid)
        self.max_index = i

    def delete(self, key: str, i: int, tomb: bool = True) -> None:
        if key in self.kv:
            del self.kv[key]
            self.max_index = i
            if tomb:
                self.tombs[key] = i

    def op(self, o: TxnOp, i: int, now: float) -> tuple[str, list[KVEntry]]:
        old = self.kv.get(o.key)
        v = o.verb
        if v == "cas" and (
            (o.index == 0) != (old is None) or (old and old.modify_index != o.index)
        ):
            return FAIL, []
        if v in ("set", "cas"):
            sid, locks = (old.session, old.lock_index) if old else (None, 0)
            self.write(o.key, o.value, o.flags, i, sid, locks)
            return OK, [self.kv[o.key]]
        if v == "lock":
            if now < self.delays.get(o.key, float("-inf")):
                return FAIL, []
            if o.session not in self.sessions:
                return ERROR, []
            if old is not None and old.session not in (None, o.session):
                return FAIL, []
            locks = 1 if old is None else old.lock_index + (old.session is None)
            self.write(o.key, o.value, o.flags, i, o.session, locks)
            return OK, [self.kv[o.key]]
        if v == "unlock":
            if old is None or old.session is None or old.session != o.session:
                return FAIL, []
            self.write(o.key, o.value, o.flags, i, None, old.lock_index)
            return OK, [self.kv[o.key]]
        if v == "delete-cas" and old is not None and old.modify_index != o.index:
            return FAIL, []
        if v in ("delete", "delete-cas"):
            self.delete(o.key, i)
            return OK, []
        if v == "delete-tree":
            doomed = [k for k in self.kv if k.startswith(o.key)]
            for k in doomed:
                self.delete(k, i, tomb=False)
            if doomed and o.key:
                self.tombs[o.key] = i
            return OK, []
        if v == "get-tree":
            return OK, [self.kv[k] for k in sorted(self.kv) if k.startswith(o.key)]
        if v == "check-not-exists":
            return (FAIL, []) if old is not None else (OK, [])
        if old is None:
            return FAIL, []
        if v == "check-index" and old.modify_index != o.index:
            return FAIL, []
        if v == "check-session" and old.session != o.session:
            return FAIL, []
        return OK, [old]  # get, check-index, check-session

    def invalidate(self, sid: str, i: int, now: float) -> bool:
        s = self.sessions.pop(sid, None)
        if s is None:
            return False
        for key in sorted(k for k, e in self.kv.items() if e.session == sid):
            e = self.kv[key]
            if s.behavior == "delete":
                self.delete(key, i)
            else:
                self.write(key, e.value, e.flags, i, None, e.lock_index)
            if s.delay_s > 0:
                self.delays[key] = now + s.delay_s
        return True

    def prefix_index(self, prefix: str) -> int:
        idx = [e.modify_index for k, e in self.kv.items() if k.startswith(prefix)]
        idx += [t for k, t in self.tombs.items() if k.startswith(prefix)]
        return max((max(idx) if idx and prefix else 0) or self.max_index, 1)


def blank(entries: list[KVEntry], verb: str) -> list[KVEntry]:
    return entries if verb in ("get", "get-tree") else [attrs.evolve(e, value=b"") for e in entries]


VERBS = "set cas lock unlock delete delete-cas delete-tree get get-tree check-index"
ops_verbs = st.sampled_from([*VERBS.split(), "check-session", "check-not-exists"])


class KVMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = KVStore()
        self.model = Model()
        self.index = 0
        self.now = 1000.0

    def apply(self, command: bytes) -> KVResult:
        self.index += 1
        r = self.store.apply(self.index, command, self.now)
        assert r.index == self.index
        return r

    def index_choices(self) -> list[int]:
        return sorted({0, self.index + 1} | {e.modify_index for e in self.model.kv.values()})

    def check_single(self, o: TxnOp, r: KVResult) -> None:
        status, _ = self.model.op(o, self.index, self.now)
        assert r.ok == (status == OK), (o, r)
        assert (r.error is not None) == (status == ERROR), (o, r)
        if o.verb != "delete-tree":
            assert r.entry == self.model.kv.get(o.key)

    @rule(key=st.sampled_from(KEYS), value=st.sampled_from(VALUES), flags=st.integers(0, 2))
    def put(self, key: str, value: bytes, flags: int) -> None:
        self.check_single(
            TxnOp("set", key, value, flags), self.apply(cmd_put(key, value, flags=flags))
        )

    @rule(key=st.sampled_from(KEYS), value=st.sampled_from(VALUES), data=st.data())
    def put_cas(self, key: str, value: bytes, data: st.DataObject) -> None:
        cas = data.draw(st.sampled_from(self.index_choices()))
        r = self.apply(cmd_put(key, value, cas=cas))
        self.check_single(TxnOp("cas", key, value, 0, cas), r)

    @rule(key=st.sampled_from(KEYS), value=st.sampled_from(VALUES), sid=st.sampled_from(HOLDERS))
    def acquire(self, key: str, value: bytes, sid: str) -> None:
        r = self.apply(cmd_put(key, value, acquire=sid))
        self.check_single(TxnOp("lock", key, value, 0, 0, sid), r)

    @rule(key=st.sampled_from(KEYS), value=st.sampled_from(VALUES), sid=st.sampled_from(HOLDERS))
    def release(self, key: str, value: bytes, sid: str) -> None:
        r = self.apply(cmd_put(key, value, release=sid))
        self.check_single(TxnOp("unlock", key, value, 0, 0, sid), r)

    @rule(key=st.sampled_from(KEYS))
    def delete(self, key: str) -> None:
        self.check_single(TxnOp("delete", key), self.apply(cmd_delete(key)))

    @rule(key=st.sampled_from(KEYS), data=st.data())
    def delete_cas(self, key: str, data: st.DataObject) -> None:
        cas = data.draw(st.sampled_from(self.index_choices()))
        self.check_single(TxnOp("delete-cas", key, index=cas), self.apply(cmd_delete(key, cas=cas)))

    @rule(prefix=st.sampled_from(PREFIXES))
    def delete_tree(self, prefix: str) -> None:
        r = self.apply(cmd_delete(prefix, recurse=True))
        self.check_single(TxnOp("delete-tree", prefix), r)

    @initialize(
        node=st.sampled_from(NODES),
        ttl=st.sampled_from(TTLS),
        behavior=st.sampled_from(["release", "delete"]),
        delay=st.sampled_from(DELAYS[1:]),
    )
    def first_session(self, node: str, ttl: float, behavior: str, delay: float) -> None:
        """Start with a session, so that locks are taken from the first steps on."""
        self.create_session("s1", node, ttl, behavior, delay)

    @rule(
        sid=st.sampled_from(SIDS[:2]),
        node=st.sampled_from(NODES),
        ttl=st.sampled_from(TTLS),
        behavior=st.sampled_from(["release", "delete"]),
        delay=st.sampled_from(DELAYS),
    )
    def create_session(self, sid: str, node: str, ttl: float, behavior: str, delay: float) -> None:
        command = cmd_session_create(sid, node, ttl_s=ttl, behavior=behavior, lock_delay_s=delay)
        r = self.apply(command)
        fresh = sid not in self.model.sessions
        assert r.ok == fresh
        if fresh:
            expires = self.now + 2 * ttl if ttl else None
            self.model.sessions[sid] = MSession(node, behavior, ttl, delay, expires)

    @rule(sid=st.sampled_from(SIDS))
    def destroy_session(self, sid: str) -> None:
        r = self.apply(cmd_session_destroy(sid))
        gone = self.model.invalidate(sid, self.index, self.now)
        assert r.invalidated == ((sid,) if gone else ())

    @rule(sid=st.sampled_from(SIDS))
    def renew_session(self, sid: str) -> None:
        r = self.apply(cmd_session_renew(sid))
        s = self.model.sessions.get(sid)
        assert r.ok == (s is not None)
        if s is not None and s.ttl_s:
            s.expires = self.now + 2 * s.ttl_s

    @rule(node=st.sampled_from(NODES))
    def node_failed(self, node: str) -> None:
        r = self.apply(cmd_node_failed(node))
        doomed = sorted(sid for sid, s in self.model.sessions.items() if s.node == node)
        for sid in doomed:
            self.model.invalidate(sid, self.index, self.now)
        assert r.invalidated == tuple(doomed)

    @rule(dt=st.sampled_from([0.5, 5.0, 15.0]))
    def tick(self, dt: float) -> None:
        self.now += dt

    @precondition(lambda self: self.model.delays)
    @rule(data=st.data())
    def jump_to_a_lock_delay_end(self, data: st.DataObject) -> None:
        """Land exactly on a boundary: a lock delay ends at its instant, not after."""
        self.now = max(self.now, data.draw(st.sampled_from(sorted(self.model.delays.values()))))

    @rule(dt=st.sampled_from([0.0, 5.0, 10.0, 25.0]))
    def tick_and_expire(self, dt: float) -> None:
        self.now += dt
        r = self.apply(cmd_expire_sessions())
        m = self.model
        due = sorted(
            sid for sid, s in m.sessions.items() if s.expires is not None and s.expires <= self.now
        )
        for sid in due:
            m.invalidate(sid, self.index, self.now)
        m.delays = {k: t for k, t in m.delays.items() if t > self.now}
        assert r.invalidated == tuple(due)

    @rule(data=st.data(), n=st.integers(1, 5))
    def txn(self, data: st.DataObject, n: int) -> None:
        ops = [self.draw_op(data) for _ in range(n)]
        r = self.apply(cmd_txn(ops))
        m = self.model
        saved = (dict(m.kv), dict(m.tombs), m.max_index)
        results: list[tuple[int, KVEntry]] = []
        failed: list[int] = []
        for i, o in enumerate(ops):
            status, entries = m.op(o, self.index, self.now)
            if status != OK:
                failed.append(i)
            results += [(i, e) for e in blank(entries, o.verb)]
        if failed:
            m.kv, m.tombs, m.max_index = saved
        assert [e.op_index for e in r.errors] == failed
        assert r.ok == (not failed)
        assert [(x.op_index, x.entry) for x in r.results] == ([] if failed else results)

    @rule(data=st.data(), n=st.integers(2, 6))
    def batch(self, data: st.DataObject, n: int) -> None:
        """Single writes sharing entries as the leader batches them: each answers as if
        it were alone (``check_single``), at the shared index, in order."""
        ops = [self.draw_single(data) for _ in range(n)]
        for group in batch_groups(ops):
            r = self.apply(cmd_writes([ops[i] for i in group]))
            if len(group) > 1:  # a batch entry is never refused as a whole
                assert r.ok and r.error is None and len(r.batch) == len(group)
            for slot, i in enumerate(group):  # what each writer is answered
                sub = r.of_write(slot)
                assert sub.index == self.index
                self.check_single(ops[i], sub)

    def draw_single(self, data: st.DataObject) -> TxnOp:
        verb = data.draw(st.sampled_from(["set", "cas", "lock", "unlock", "delete", "delete-cas"]))
        key = data.draw(st.sampled_from(KEYS))
        sid = data.draw(st.sampled_from(HOLDERS)) if verb in ("lock", "unlock") else None
        index = data.draw(st.sampled_from(self.index_choices())) if "cas" in verb else 0
        return TxnOp(verb, key, data.draw(st.sampled_from(VALUES)), 0, index, sid)

    def draw_op(self, data: st.DataObject) -> TxnOp:
        verb = data.draw(ops_verbs)
        tree = verb in ("delete-tree", "get-tree")
        key = data.draw(st.sampled_from(PREFIXES if tree else KEYS))
        sid = data.draw(st.sampled_from(SIDS if verb in ("lock", "unlock") else [*SIDS, None]))
        value = data.draw(st.sampled_from(VALUES))
        index = data.draw(st.sampled_from(self.index_choices()))
        return TxnOp(verb, key, value, data.draw(st.integers(0, 1)), index, sid)

    @rule()
    def snapshot_and_restore(self) -> None:
        snap = self.store.snapshot()
        self.store = KVStore.restore(snap)
        assert self.store.snapshot() == snap

    @invariant()
    def same_state(self) -> None:
        m, s = self.model, self.store
        assert s.list() == [m.kv[k] for k in sorted(m.kv)]
        got = {
            x.id: (x.node, x.behavior, x.ttl_s, x.lock_delay_s, x.expires_at_s)
            for x in s.sessions()
        }
        want = {
            k: (v.node, v.behavior, v.ttl_s, v.delay_s, v.expires) for k, v in m.sessions.items()
        }
        assert got == want
        for key in KEYS:
            assert s.lock_delay_until(key) == m.delays.get(key)
            entry = m.kv.get(key)
            assert s.key_index(key) == (entry.modify_index if entry else max(m.max_index, 1))
        for prefix in PREFIXES:
            assert s.prefix_index(prefix) == m.prefix_index(prefix)
            assert [e.key for e in s.list(prefix)] == sorted(
                k for k in m.kv if k.startswith(prefix)
            )
        assert s.last_index == self.index


TestKVModel = KVMachine.TestCase
TestKVModel.settings = settings(
    max_examples=1000 if long_run() else 150,
    stateful_step_count=60 if long_run() else 50,
    deadline=None,
)
