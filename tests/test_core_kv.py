"""The KV state machine: Consul's rules one by one, commands, snapshots and garbage."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import msgpack_values

from meshlite._core.kv import KVStore
from meshlite._core.kv_commands import (
    Kind,
    batch_groups,
    cmd_batch,
    cmd_delete,
    cmd_expire_sessions,
    cmd_node_failed,
    cmd_put,
    cmd_reap_tombstones,
    cmd_reset_session_timers,
    cmd_session_create,
    cmd_session_destroy,
    cmd_session_renew,
    cmd_txn,
    delete_op,
    put_op,
    stamp,
    unstamp,
)
from meshlite._core.kv_decode import decode_command
from meshlite._core.kv_types import (
    MAX_TXN_BYTES,
    MAX_TXN_OPS,
    MAX_VALUE_BYTES,
    KVResult,
    TxnOp,
)
from meshlite._core.wire import DecodeError
from meshlite.errors import ConfigError


class Store:
    """A KVStore with its own Raft index counter and leader clock, for short tests."""

    def __init__(self) -> None:
        self.kv = KVStore()
        self.index = 0
        self.now_s = 1000.0

    def __call__(self, command: bytes) -> KVResult:
        self.index += 1
        return self.kv.apply(self.index, command, self.now_s)


@pytest.fixture
def s() -> Store:
    return Store()


# ----------------------------------------------------------------------------- put / cas


def test_put_sets_indexes_and_keeps_create_index(s: Store) -> None:
    r1 = s(cmd_put("k", b"1", flags=7))
    r2 = s(cmd_put("k", b"2"))
    assert r1.ok and r2.ok
    assert r1.entry is not None and r2.entry is not None
    assert (r1.entry.create_index, r1.entry.modify_index, r1.entry.flags) == (1, 1, 7)
    assert (r2.entry.create_index, r2.entry.modify_index, r2.entry.flags) == (1, 2, 0)
    assert r2.touched == ("k",)


def test_identical_put_keeps_modify_index(s: Store) -> None:
    """Consul's kvsSetTxn skips a write that changes nothing: no index bump, no wake."""
    s(cmd_put("k", b"v"))
    r = s(cmd_put("k", b"v"))
    assert r.ok and r.entry is not None and r.entry.modify_index == 1
    assert r.touched == ()
    assert s.kv.key_index("k") == 1


def test_cas_zero_creates_only(s: Store) -> None:
    assert s(cmd_put("k", b"1", cas=0)).ok
    r = s(cmd_put("k", b"2", cas=0))
    assert not r.ok and r.error is None
    assert r.entry is not None and r.entry.value == b"1"


def test_cas_needs_the_current_modify_index(s: Store) -> None:
    s(cmd_put("k", b"1"))
    s(cmd_put("k", b"2"))
    assert not s(cmd_put("k", b"x", cas=1)).ok
    assert not s(cmd_put("missing", b"x", cas=2)).ok
    r = s(cmd_put("k", b"3", cas=2))
    assert r.ok and r.entry is not None and r.entry.modify_index == 5


def test_put_argument_rules() -> None:
    with pytest.raises(ConfigError, match="kv_max_value_size"):
        cmd_put("k", b"x" * (MAX_VALUE_BYTES + 1))
    cmd_put("k", b"x" * MAX_VALUE_BYTES)
    with pytest.raises(ConfigError, match="at most one"):
        cmd_put("k", b"", cas=0, acquire="s")
    with pytest.raises(ConfigError, match="must be bytes"):
        cmd_put("k", "text")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="empty"):
        cmd_put("", b"")
    with pytest.raises(ConfigError, match="flags"):
        cmd_put("k", b"", flags=-1)
    with pytest.raises(ConfigError, match="surrogates"):
        cmd_put("\udc80", b"")
    with pytest.raises(ConfigError, match="recurse or cas"):
        cmd_delete("k", recurse=True, cas=3)
    assert decode_command(cmd_put("k", bytearray(b"v"))) == decode_command(cmd_put("k", b"v"))


# ----------------------------------------------------------------------------- delete


def test_delete_cas_rules(s: Store) -> None:
    s(cmd_put("k", b"1"))
    assert not s(cmd_delete("k", cas=9)).ok
    assert s(cmd_delete("k", cas=1)).ok
    assert s.kv.get("k") is None
    # Consul's kvsDeleteCASTxn: a missing key counts as deleted.
    assert s(cmd_delete("never", cas=5)).ok


def test_recursive_delete_and_tombstone_indexes(s: Store) -> None:
    for key in ("a/1", "a/2", "ab", "b"):
        s(cmd_put(key, b"v"))
    r = s(cmd_delete("a/", recurse=True))
    assert r.ok and set(r.touched) == {"a/1", "a/2"}
    assert [e.key for e in s.kv.list()] == ["ab", "b"]
    # The tombstone keeps the prefix's index from sliding back (kvsListTxn).
    assert s.kv.prefix_index("a/") == 5
    s(cmd_put("b", b"w"))
    assert s.kv.prefix_index("a/") == 5
    assert s.kv.prefix_index("a") == 5  # "ab" (index 3) and the "a/" tombstone (5)
    s(cmd_reap_tombstones(5))
    assert s.kv.prefix_index("a/") == 6  # no entry, no tombstone: the table index
    assert s(cmd_delete("", recurse=True)).ok
    assert s.kv.list() == []


def test_delete_of_a_missing_key_changes_nothing(s: Store) -> None:
    s(cmd_put("k", b"1"))
    r = s(cmd_delete("other"))
    assert r.ok and r.touched == ()
    assert s.kv.key_index("other") == 1


def test_blocking_indexes_follow_consul(s: Store) -> None:
    assert s.kv.key_index("x") == 1  # "Index 1 is impossible anyways"
    assert s.kv.prefix_index("") == 1
    s(cmd_put("a", b"1"))
    s(cmd_put("b", b"1"))
    assert s.kv.key_index("a") == 1
    assert s.kv.key_index("missing") == 2  # the table index
    s(cmd_delete("a"))
    assert s.kv.key_index("a") == 3
    assert s.kv.prefix_index("a") == 3
    assert s.kv.prefix_index("") == 3


def test_keys_with_separator(s: Store) -> None:
    for key in ("cfg/a", "cfg/b/c", "cfg/b/d", "cfg/e/", "other", "cfgx"):
        s(cmd_put(key, b""))
    assert s.kv.keys("cfg/", "/") == ["cfg/a", "cfg/b/", "cfg/e/"]
    assert s.kv.keys("", "/") == ["cfg/", "cfgx", "other"]
    assert s.kv.keys("cfg") == ["cfg/a", "cfg/b/c", "cfg/b/d", "cfg/e/", "cfgx"]
    assert s.kv.keys("nothing", "/") == []


# ----------------------------------------------------------------------------- locks


def test_acquire_and_release_follow_consul(s: Store) -> None:
    s(cmd_session_create("s1", "n1"))
    s(cmd_session_create("s2", "n2"))
    r = s(cmd_put("lock", b"me", acquire="s1"))
    assert r.ok and r.entry is not None
    assert (r.entry.lock_index, r.entry.session, r.entry.value) == (1, "s1", b"me")
    again = s(cmd_put("lock", b"me again", acquire="s1"))  # held by the same: fine
    assert again.ok and again.entry is not None and again.entry.lock_index == 1
    other = s(cmd_put("lock", b"you", acquire="s2"))
    assert not other.ok and other.error is None
    assert not s(cmd_put("lock", b"", release="s2")).ok
    rel = s(cmd_put("lock", b"free", release="s1"))
    assert rel.ok and rel.entry is not None
    assert (rel.entry.session, rel.entry.lock_index, rel.entry.value) == (None, 1, b"free")
    assert not s(cmd_put("lock", b"", release="s1")).ok  # not held any more
    take = s(cmd_put("lock", b"you", acquire="s2"))
    assert take.ok and take.entry is not None and take.entry.lock_index == 2


def test_acquire_with_an_unknown_session_is_an_error(s: Store) -> None:
    r = s(cmd_put("k", b"", acquire="nobody"))
    assert not r.ok and r.error is not None and "invalid session" in r.error
    assert s.kv.get("k") is None


def test_plain_put_keeps_the_lock(s: Store) -> None:
    """Locks are advisory (Consul #1623): a plain put overwrites, the holder stays."""
    s(cmd_session_create("s1", "n1"))
    s(cmd_put("k", b"a", acquire="s1"))
    r = s(cmd_put("k", b"b"))
    assert r.entry is not None and (r.entry.session, r.entry.lock_index) == ("s1", 1)


def test_lock_delay_after_invalidation(s: Store) -> None:
    s(cmd_session_create("s1", "n1", lock_delay_s=15.0))
    s(cmd_session_create("s2", "n2"))
    s(cmd_put("k", b"", acquire="s1"))
    inv = s(cmd_session_destroy("s1"))
    assert inv.invalidated == ("s1",) and inv.touched == ("k",)
    entry = s.kv.get("k")
    assert entry is not None and entry.session is None
    assert s.kv.lock_delay_until("k") == 1015.0
    s.now_s = 1014.9
    assert not s(cmd_put("k", b"", acquire="s2")).ok
    txn = s(cmd_txn([TxnOp("lock", "k", session="s2")]))
    assert txn.errors[0].what.endswith("due to lock delay")
    s.now_s = 1015.0
    assert s(cmd_put("k", b"", acquire="s2")).ok


def test_explicit_release_sets_no_lock_delay(s: Store) -> None:
    s(cmd_session_create("s1", "n1"))
    s(cmd_put("k", b"", acquire="s1"))
    s(cmd_put("k", b"", release="s1"))
    assert s.kv.lock_delay_until("k") is None


def test_delete_behavior_deletes_held_keys(s: Store) -> None:
    s(cmd_session_create("s1", "n1", behavior="delete", lock_delay_s=0.0))
    s(cmd_put("a", b"", acquire="s1"))
    s(cmd_put("b", b"", acquire="s1"))
    s(cmd_put("c", b""))
    r = s(cmd_node_failed("n1"))
    assert r.invalidated == ("s1",)
    assert [e.key for e in s.kv.list()] == ["c"]
    assert s.kv.lock_delay_until("a") is None
    assert s.kv.key_index("a") == 5


# ----------------------------------------------------------------------------- sessions


def test_session_argument_rules() -> None:
    with pytest.raises(ConfigError, match="ttl_s"):
        cmd_session_create("s", "n", ttl_s=5)
    with pytest.raises(ConfigError, match="lock_delay_s"):
        cmd_session_create("s", "n", lock_delay_s=61)
    with pytest.raises(ConfigError, match="behavior"):
        cmd_session_create("s", "n", behavior="explode")
    with pytest.raises(ConfigError, match="node"):
        cmd_session_create("s", "")
    cmd_session_create("s", "n", ttl_s=10, lock_delay_s=0)


def test_session_ids_are_unique(s: Store) -> None:
    assert s(cmd_session_create("s1", "n1")).ok
    r = s(cmd_session_create("s1", "n2"))
    assert not r.ok and r.error is not None and "already exists" in r.error
    assert [x.node for x in s.kv.sessions()] == ["n1"]


def test_ttl_expires_at_twice_the_ttl_and_renew_extends(s: Store) -> None:
    created = s(cmd_session_create("s1", "n1", ttl_s=10)).session
    assert created is not None and created.expires_at_s == 1020.0
    assert s.kv.next_session_expiry_s() == 1020.0
    s.now_s = 1015.0
    renewed = s(cmd_session_renew("s1"))
    assert renewed.ok and renewed.session is not None and renewed.session.expires_at_s == 1035.0
    s.now_s = 1034.0
    assert s(cmd_expire_sessions()).invalidated == ()
    s.now_s = 1035.0
    assert s(cmd_expire_sessions()).invalidated == ("s1",)
    assert not s(cmd_session_renew("s1")).ok
    assert s.kv.next_session_expiry_s() is None


def test_reset_timers_restarts_every_ttl(s: Store) -> None:
    s(cmd_session_create("s1", "n1", ttl_s=10))
    s(cmd_session_create("s2", "n1"))  # no TTL: untouched
    s.now_s = 5000.0
    s(cmd_reset_session_timers())
    ttl, plain = s.kv.sessions()
    assert (ttl.expires_at_s, plain.expires_at_s) == (5020.0, None)


def test_node_failed_invalidates_only_that_nodes_sessions(s: Store) -> None:
    s(cmd_session_create("a", "n1"))
    s(cmd_session_create("b", "n2"))
    s(cmd_session_create("c", "n1"))
    assert s(cmd_node_failed("n1")).invalidated == ("a", "c")
    assert [x.id for x in s.kv.sessions()] == ["b"]
    assert s.kv.node_sessions("n2")[0].id == "b"
    assert s.kv.sessions_index == 4


def test_lock_delays_are_dropped_once_past(s: Store) -> None:
    s(cmd_session_create("s1", "n1"))
    s(cmd_put("k", b"", acquire="s1"))
    s(cmd_session_destroy("s1"))
    s.now_s += 15
    s(cmd_expire_sessions())
    assert s.kv.lock_delay_until("k") is None


# ----------------------------------------------------------------------------- txn


def test_txn_is_all_or_nothing_and_reports_every_error(s: Store) -> None:
    s(cmd_put("a", b"1"))
    ops = [
        TxnOp("set", "b", b"2"),
        TxnOp("cas", "a", b"x", index=99),
        TxnOp("delete", "a"),
        TxnOp("check-not-exists", "b"),
    ]
    r = s(cmd_txn(ops))
    assert not r.ok
    assert [e.op_index for e in r.errors] == [1, 3]
    assert [e.key for e in s.kv.list()] == ["a"]
    assert s.kv.key_index("missing") == 1 and r.touched == ()


def test_txn_results_blank_values_except_reads(s: Store) -> None:
    s(cmd_put("t/a", b"A"))
    s(cmd_session_create("s1", "n1"))
    ops = [
        TxnOp("set", "t/b", b"B", flags=3),
        TxnOp("get", "t/a"),
        TxnOp("lock", "t/c", b"C", session="s1"),
        TxnOp("check-session", "t/c", session="s1"),
        TxnOp("get-tree", "t/"),
        TxnOp("delete", "t/a"),
        TxnOp("check-index", "t/b", index=3),
    ]
    r = s(cmd_txn(ops))
    assert r.ok, r.errors
    got = [(x.op_index, x.entry.key, x.entry.value) for x in r.results]
    assert got == [
        (0, "t/b", b""),
        (1, "t/a", b"A"),
        (2, "t/c", b""),
        (3, "t/c", b""),
        (4, "t/a", b"A"),
        (4, "t/b", b"B"),
        (4, "t/c", b"C"),
        (6, "t/b", b""),
    ]
    assert [e.key for e in s.kv.list()] == ["t/b", "t/c"]


def test_txn_limits() -> None:
    with pytest.raises(ConfigError, match="at most 64"):
        cmd_txn([TxnOp("get", "k")] * (MAX_TXN_OPS + 1))
    with pytest.raises(ConfigError, match="total"):
        cmd_txn([TxnOp("set", f"k{i}", b"x" * 300_000) for i in range(2)])
    with pytest.raises(ConfigError, match="unknown verb"):
        cmd_txn([TxnOp("explode", "k")])
    with pytest.raises(ConfigError, match="needs a session"):
        cmd_txn([TxnOp("lock", "k")])


def test_read_txn_is_local_and_refuses_writes(s: Store) -> None:
    s(cmd_put("a", b"1"))
    r = s.kv.read_txn([TxnOp("get", "a"), TxnOp("check-index", "a", index=1)])
    assert r.ok and [x.entry.value for x in r.results] == [b"1", b""]
    assert not s.kv.read_txn([TxnOp("get", "b")]).ok
    with pytest.raises(ConfigError, match="writes"):
        s.kv.read_txn([TxnOp("set", "a", b"2")])
    assert s.kv.last_index == 1


# ----------------------------------------------------------------------------- the log


def test_old_or_repeated_indexes_are_refused(s: Store) -> None:
    s(cmd_put("k", b"1"))
    r = s.kv.apply(1, cmd_put("k", b"2"), 0.0)
    assert not r.ok and r.error is not None
    assert s.kv.last_index == 1
    entry = s.kv.get("k")
    assert entry is not None and entry.value == b"1"


# ----------------------------------------------------------------------------- batches


def test_batch_writes_answer_as_if_alone_at_one_index(s: Store) -> None:
    s(cmd_put("old", b"0"))  # index 1
    r = s(
        cmd_batch(
            [
                put_op("new", b"1", cas=0),
                put_op("old", b"2", cas=99),  # stale cas: False, the rest still applies
                delete_op("missing"),
                put_op("lock", b"", acquire="nobody"),  # unknown session: this one errs
            ]
        )
    )
    assert r.ok and r.error is None and r.index == 2
    new, stale, gone, refused = r.batch
    assert new.ok and new.entry is not None and new.entry.modify_index == 2
    assert not stale.ok and stale.error is None and stale.entry == s.kv.get("old")
    assert gone.ok and gone.entry is None
    assert not refused.ok and refused.error is not None and "session" in refused.error
    assert set(r.touched) == {"new"}
    old = s.kv.get("old")
    assert old is not None and old.value == b"0"


def test_batch_rules() -> None:
    two = [put_op("a", b""), put_op("b", b"")]
    assert decode_command(cmd_batch(two)) is not None
    with pytest.raises(ConfigError, match="2 to"):
        cmd_batch(two[:1])
    with pytest.raises(ConfigError, match="2 to"):
        cmd_batch([put_op(f"k{i}", b"") for i in range(MAX_TXN_OPS + 1)])
    with pytest.raises(ConfigError, match="twice"):
        cmd_batch([put_op("a", b"1"), delete_op("a")])
    with pytest.raises(ConfigError, match="delete-tree"):
        cmd_batch([put_op("a", b""), delete_op("p/", recurse=True)])
    with pytest.raises(ConfigError, match="unknown verb"):
        cmd_batch([put_op("a", b""), TxnOp("get", "b")])
    big = b"x" * (MAX_TXN_BYTES // 2 + 1)
    with pytest.raises(ConfigError, match="total"):
        cmd_batch([put_op("a", big), put_op("b", big)])
    # The log's door refuses what the builder would not make (hand-packed here).
    for ops in (
        [["set", "a", b"", 0, 0, None]],
        [["set", "a", b"", 0, 0, None], ["delete", "a", b"", 0, 0, None]],
        [["set", "a", b"", 0, 0, None], ["delete-tree", "", b"", 0, 0, None]],
    ):
        with pytest.raises(DecodeError):
            decode_command(msgpack.packb([Kind.BATCH, ops]))


def test_batch_groups_keep_order_and_split_where_the_rules_say() -> None:
    put = [put_op(k, b"") for k in "abcab"]
    assert batch_groups(put) == [[0, 1, 2], [3, 4]]  # "a" again starts a new run
    tree = [put_op("a", b""), delete_op("p", recurse=True), put_op("b", b"")]
    assert batch_groups(tree) == [[0], [1], [2]]
    many = [put_op(f"k{i}", b"") for i in range(MAX_TXN_OPS + 3)]
    assert [len(g) for g in batch_groups(many)] == [MAX_TXN_OPS, 3]
    big = b"x" * (MAX_TXN_BYTES // 2 + 1)
    assert batch_groups([put_op("a", big), put_op("b", big)]) == [[0], [1]]
    assert batch_groups([]) == []


def test_stamped_entries(s: Store) -> None:
    data = stamp(cmd_session_create("s", "n", ttl_s=10), 50.0)
    assert unstamp(data)[0] == 50.0
    r = s.kv.apply_entry(7, data)
    assert r.session is not None and r.session.expires_at_s == 70.0
    bad = s.kv.apply_entry(8, b"\x01")
    assert not bad.ok and s.kv.last_index == 8
    assert not s.kv.apply(9, cmd_put("k", b""), float("nan")).ok
    with pytest.raises(ConfigError):
        stamp(b"", float("inf"))


def _all_commands() -> list[bytes]:
    return [
        cmd_put("k", b"v", flags=3),
        cmd_put("k", b"v", cas=0),
        cmd_put("k", b"v", acquire="s"),
        cmd_put("k", b"v", release="s"),
        cmd_delete("k"),
        cmd_delete("k", recurse=True),
        cmd_delete("k", cas=4),
        cmd_txn([TxnOp("get", "k"), TxnOp("set", "j", b"w"), TxnOp("check-session", "k")]),
        cmd_session_create("s", "n", name="x", ttl_s=30, behavior="delete"),
        cmd_session_destroy("s"),
        cmd_session_renew("s"),
        cmd_expire_sessions(),
        cmd_node_failed("n"),
        cmd_reset_session_timers(),
        cmd_reap_tombstones(3),
        cmd_batch([put_op("k", b"v"), delete_op("j", cas=2), put_op("i", b"", acquire="s")]),
    ]


def test_every_builder_decodes() -> None:
    for command in _all_commands():
        decode_command(command)


@settings(max_examples=400)
@given(st.one_of(st.binary(max_size=64), msgpack_values.map(msgpack.packb)))
def test_garbage_commands_never_raise(data: bytes) -> None:
    s = Store()
    s(cmd_put("k", b"v"))
    s(cmd_session_create("s", "n"))
    before = (s.kv.list(), s.kv.sessions(), s.kv.key_index("x"))
    r = s(data)
    assert isinstance(r, KVResult)
    if r.error is not None:
        assert not r.ok
        assert (s.kv.list(), s.kv.sessions(), s.kv.key_index("x")) == before
    assert s.kv.last_index == 3


@settings(max_examples=400)
@given(st.sampled_from(_all_commands()), st.data())
def test_mutated_commands_never_raise(command: bytes, data: st.DataObject) -> None:
    raw = bytearray(command)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    s = Store()
    s(cmd_session_create("s", "n"))
    assert isinstance(s(bytes(raw)), KVResult)
    with contextlib.suppress(DecodeError):
        decode_command(bytes(raw))


@settings(max_examples=300)
@given(st.binary(max_size=200), st.data())
def test_garbage_snapshots_raise_decode_error_only(junk: bytes, data: st.DataObject) -> None:
    s = Store()
    for command in _all_commands():
        s(command)
    snap = bytearray(s.kv.snapshot())
    i = data.draw(st.integers(0, len(snap) - 1))
    snap[i] ^= data.draw(st.integers(1, 255))
    for blob in (junk, bytes(snap)):
        with contextlib.suppress(DecodeError):
            KVStore.restore(blob)


_keys = st.sampled_from(["a", "a/b", "b", "c/d"])
_sids = st.sampled_from(["s1", "s2"])
_commands = st.one_of(
    st.builds(
        lambda k, v, f: cmd_put(k, v, flags=f), _keys, st.binary(max_size=3), st.integers(0, 3)
    ),
    st.builds(lambda k, c: cmd_put(k, b"c", cas=c), _keys, st.integers(0, 12)),
    st.builds(lambda k, sid: cmd_put(k, b"l", acquire=sid), _keys, _sids),
    st.builds(lambda k, sid: cmd_put(k, b"r", release=sid), _keys, _sids),
    st.builds(lambda k: cmd_delete(k), _keys),
    st.builds(lambda p: cmd_delete(p, recurse=True), st.sampled_from(["", "a", "c/"])),
    st.builds(
        lambda sid, n, ttl, b: cmd_session_create(sid, n, ttl_s=ttl, behavior=b),
        _sids,
        st.sampled_from(["n1", "n2"]),
        st.sampled_from([0.0, 10.0]),
        st.sampled_from(["release", "delete"]),
    ),
    st.builds(cmd_session_destroy, _sids),
    st.builds(cmd_session_renew, _sids),
    st.builds(cmd_node_failed, st.sampled_from(["n1", "n2"])),
    st.just(cmd_expire_sessions()),
    st.just(cmd_reset_session_timers()),
    st.builds(cmd_reap_tombstones, st.integers(0, 12)),
    st.builds(lambda k: cmd_txn([TxnOp("get", k), TxnOp("set", k, b"t")]), _keys),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_commands, max_size=25), st.lists(_commands, max_size=10), st.data())
def test_snapshot_restore_round_trips(
    before: list[bytes], after: list[bytes], data: st.DataObject
) -> None:
    """restore(snapshot) is the same state: same bytes, and the same answers afterwards."""
    one = Store()
    for command in before:
        one.now_s += data.draw(st.sampled_from([0.0, 5.0, 30.0]))
        one(command)
    snap = one.kv.snapshot()
    two = Store()
    two.kv, two.index, two.now_s = KVStore.restore(snap), one.index, one.now_s
    assert two.kv.snapshot() == snap
    for command in after:
        assert one(command) == two(command)
    assert one.kv.snapshot() == two.kv.snapshot()
