"""The replicated service catalog: convergence under any delivery order, owner authority."""

from __future__ import annotations

import contextlib
import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlite._core.catalog import (
    MAX_RECORD_BYTES,
    Applied,
    Catalog,
    Record,
    decode_record,
    decode_state,
    encode_record,
)
from meshlite._core.directory import MAX_RELAYED_PER_STATE, Directory
from meshlite._core.wire import DecodeError

NODES = ["a", "b", "c"]
IDS = ["web-1", "web-2", "db-1"]


def live(node: str, sid: str, version: int, **kw: object) -> Record:
    fields: dict[str, object] = {"name": sid.split("-")[0], "address": "10.0.0.1", "port": 80}
    fields.update(kw)
    return Record(node, sid, version, **fields)  # type: ignore[arg-type]


records = st.builds(
    lambda node, sid, version, stone, port, status, tags: (
        Record(node, sid, version)
        if stone
        else live(node, sid, version, port=port, status=status, tags=tuple(tags))
    ),
    st.sampled_from(NODES),
    st.sampled_from(IDS),
    st.integers(1, 6),
    st.booleans(),
    st.integers(1, 3),
    st.sampled_from(["passing", "warning", "critical"]),
    st.lists(st.sampled_from(["v1", "v2"]), max_size=2),
)


def snapshot(c: Catalog) -> dict[tuple[str, str], Record]:
    return {r.key: r for r in c}


@settings(max_examples=300)
@given(st.lists(records, max_size=25), st.randoms(use_true_random=False), st.data())
def test_any_order_and_duplication_gives_the_same_catalog(
    recs: list[Record], rnd: random.Random, data: st.DataObject
) -> None:
    """Merge is a max per key: commutative, associative, idempotent."""
    one, two = Catalog("observer-1", 1), Catalog("observer-2", 1)
    for r in recs:
        one.apply(r, 0.0)
    shuffled = recs + data.draw(st.lists(st.sampled_from(recs), max_size=10)) if recs else []
    rnd.shuffle(shuffled)
    for r in shuffled:
        two.apply(r, 0.0)
    assert snapshot(one) == snapshot(two)
    # push/pull of the whole state converges a third peer to the same map
    three = Catalog("observer-3", 1)
    three.merge_state(decode_state(two.encode_state()), 0.0)
    assert snapshot(three) == snapshot(one)


@given(st.lists(records, max_size=25))
def test_by_name_index_matches_the_records(recs: list[Record]) -> None:
    c = Catalog("observer", 1)
    for r in recs:
        c.apply(r, 0.0)
    for name in {"web", "db"}:
        expected = {r.key for r in c if not r.tombstone and r.name == name}
        assert {r.key for r in c.by_name(name)} == expected
    for node in NODES:
        assert c.names_of(node) == {r.name for r in c if r.node == node and not r.tombstone}


@given(records)
def test_records_round_trip(r: Record) -> None:
    assert decode_record(encode_record(r)) == r


@given(st.binary(max_size=200))
def test_garbage_only_ever_raises_decode_error(data: bytes) -> None:
    for decode in (decode_record, decode_state):
        with contextlib.suppress(DecodeError):
            decode(data)


@pytest.mark.parametrize(
    "wire",
    [
        [1, "a", "x", 1, "web", "h", 70000, [], {}, 0],  # port out of range
        [1, "a", "x", 1, "web", "h", 80, [], {}, 7],  # unknown status
        [1, "a", "x", -1, "web", "h", 80, [], {}, 0],  # negative version
        [1, "a", "x", 1, "web", "h", 80, "tags", {}, 0],  # tags not a list
        [2, "a", "x"],  # short tombstone
        [9, "a", "x", 1],  # unknown kind
    ],
)
def test_malformed_records_are_rejected(wire: list[object]) -> None:
    with pytest.raises(DecodeError):
        decode_record(msgpack.packb(wire))


def test_owner_versions_increase_and_withdraw_leaves_a_tombstone() -> None:
    c = Catalog("a", first_version=1000)
    r1 = c.publish(live("a", "web-1", 0), 0.0)
    r2 = c.publish(live("a", "web-1", 0, status="critical"), 0.0)
    assert r2.version > r1.version >= 1000
    stone = c.withdraw("web-1", 1.0)
    assert stone is not None and stone.tombstone and stone.version > r2.version
    assert c.withdraw("web-1", 1.0) is None
    assert list(c.by_name("web")) == []


def test_owner_refutes_a_newer_stray_of_its_own_service() -> None:
    """A previous life (clock stepped back) published a higher version: the owner
    republishes its current record above it."""
    c = Catalog("a", first_version=10)
    mine = c.publish(live("a", "web-1", 0, port=8080), 0.0)
    got = c.apply(live("a", "web-1", 500, port=9999), 0.0)
    fix = got.correction
    assert got.names == set() and fix is not None and not got.news
    assert fix.version > 500 and fix.port == 8080 and fix.version > mine.version


def test_owner_tombstones_a_service_from_a_previous_life() -> None:
    c = Catalog("a", first_version=10)
    fix = c.apply(live("a", "old-1", 99), 0.0).correction
    assert fix is not None and fix.tombstone and fix.version > 99
    assert c.apply(live("a", "old-1", 99), 0.0) == Applied(frozenset(), None, news=False)


def test_echo_of_our_own_record_is_not_refuted() -> None:
    c = Catalog("a", first_version=10)
    mine = c.publish(live("a", "web-1", 0), 0.0)
    assert c.apply(mine, 0.0) == Applied(frozenset(), None, news=False)


def test_only_newer_records_of_other_peers_are_news() -> None:
    """News is what the directory relays: a stale or duplicate copy dies here."""
    c = Catalog("me", 1)
    assert c.apply(live("b", "web-1", 5), 0.0) == Applied(frozenset({"web"}), None, news=True)
    assert not c.apply(live("b", "web-1", 5), 0.0).news  # the same copy again
    assert not c.apply(live("b", "web-1", 4), 0.0).news  # older
    assert c.apply(Record("b", "web-1", 6), 0.0).news  # a newer tombstone
    c.forget_node("b")
    assert c.apply(live("b", "web-1", 5), 0.0).news  # forgotten, so news again
    _names, _fixes, news = c.merge_state([live("b", "web-1", 5), live("b", "web-2", 1)], 0.0)
    assert [r.id for r in news] == ["web-2"]


def test_tombstones_expire_and_forget_node_drops_everything() -> None:
    c = Catalog("me", 1, tombstone_ttl_s=10.0)
    c.apply(live("b", "web-1", 1), 0.0)
    c.apply(Record("b", "web-2", 1), 0.0)
    assert c.expire_tombstones(5.0) == 0
    assert c.expire_tombstones(11.0) == 1
    assert c.forget_node("b") == {"web"}
    assert len(c) == 0 and c.nodes() == set()


def test_a_record_larger_than_a_datagram_is_refused() -> None:
    c = Catalog("a", 1)
    with pytest.raises(ValueError, match="larger than"):
        c.publish(live("a", "web-1", 0, tags=tuple(f"t{i:04}" for i in range(300))), 0.0)
    assert MAX_RECORD_BYTES < 1400


def test_the_directory_relays_news_only_bounded_and_never_on_a_join() -> None:
    """``Directory``: a gossiped record that is news is relayed as the very bytes received;
    a push/pull relays at most ``MAX_RELAYED_PER_STATE`` news records, and none on a join
    (the whole catalog is news to a joiner and to nobody else)."""
    d = Directory("me", first_version=1)
    payload = encode_record(live("b", "web-1", 5))
    _names, fixes, relays = d.on_broadcast(payload, 0.0)
    assert fixes == [] and [r.payload for r in relays] == [payload]
    assert relays[0].key == "svc/b/web-1"
    assert d.on_broadcast(payload, 1.0)[2] == []  # the same copy again: not news

    many = Catalog("x", 1)
    for i in range(MAX_RELAYED_PER_STATE + 36):
        many.apply(live(f"n{i}", "web-1", 1), 0.0)
    state = many.encode_state()
    assert Directory("j", 1).on_state(state, 0.0, relay=False)[2] == []
    relays = Directory("p", 1).on_state(state, 0.0, relay=True)[2]
    assert len(relays) == MAX_RELAYED_PER_STATE
    assert len({r.key for r in relays}) == MAX_RELAYED_PER_STATE
