"""Forwarded KV calls on the wire (meshlite._kv_wire): round trips and remote garbage."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import msgpack_values

from meshlite._core.kv import KVEntry, KVResult, Session, TxnOp
from meshlite._core.kv_types import TxnError, TxnResult
from meshlite._core.wire_checks import DecodeError
from meshlite._kv_wire import (
    MAX_BATCH_CALLS,
    RpcError,
    decode_call,
    decode_reply,
    encode_call,
    encode_error,
    encode_result,
)
from meshlite._raft_server_kv import KVRead

ENTRY = KVEntry("k", b"\x00v", 3, 4, 5, 1, "sess")
SESSION = Session("id", "node", "n", "release", 10.0, 15.0, 2, 3, 99.5)


def round_trip(method: str, args: tuple[object, ...], value: object) -> object:
    call = decode_call(encode_call(method, *args))
    assert call.method == method
    return decode_reply(method, call.args, encode_result(method, call.args, value))


def test_calls_and_results_round_trip() -> None:
    assert round_trip("put", ("k", b"v", 0, None, "s", None), True) is True
    assert round_trip("delete", ("k", True, 7), False) is False
    ops = [TxnOp("set", "a", b"1"), TxnOp("check-index", "a", index=3, session=None)]
    result = KVResult(9, ok=False, results=(TxnResult(0, ENTRY),), errors=(TxnError(1, "stale"),))
    assert round_trip("txn", (ops,), result) == result
    assert decode_call(encode_call("txn", ops)).args == (ops,)
    assert round_trip("session_create", ("n", "", 10.0, "release", 15.0), SESSION) == SESSION
    assert round_trip("session_renew", ("id",), None) is None
    for what, value in [
        ("get", ENTRY),
        ("get", None),
        ("list", [ENTRY]),
        ("keys", ["a/", "b"]),
        ("session_info", SESSION),
        ("session_list", [SESSION]),
        ("session_node", []),
    ]:
        read = KVRead(value, 12, 0, "s1")
        got = round_trip("read", (what, "k", None, "default", 3, 1.5), read)
        assert got == read


def test_a_batch_carries_calls_and_their_answers_in_order() -> None:
    calls = [encode_call("put", "k", b"v", 0, None, None, None), encode_call("delete", "j", 0, 3)]
    answers = [encode_result("put", (), True), encode_error("config", "bad", None)]
    assert round_trip("batch", (calls,), answers) == answers
    with pytest.raises(DecodeError, match="one answer per call"):
        decode_reply("batch", (calls,), encode_result("batch", (calls,), answers[:1]))
    for bad in ([], [b"x"] * (MAX_BATCH_CALLS + 1), ["not bytes"]):
        with pytest.raises(DecodeError):
            decode_call(msgpack.packb([12, "batch", [bad]], use_bin_type=True))


def test_errors_round_trip() -> None:
    reply = encode_error("not_leader", "not the leader", "s2")
    assert decode_reply("put", (), reply) == RpcError("not_leader", "not the leader", "s2")


@given(st.binary(max_size=200))
def test_garbage_calls_only_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_call(data)


@given(
    st.sampled_from(["put", "delete", "txn", "session_create", "read", "state", "batch", "nope"]),
    msgpack_values,
)
def test_well_formed_msgpack_with_wrong_shapes_only_raises_decode_error(
    method: str, args: object
) -> None:
    data = msgpack.packb([12, method, args], use_bin_type=True)
    with contextlib.suppress(DecodeError):
        decode_call(data)
    for m, a in [
        ("read", ("get", "k", None, "default", None, None)),
        ("txn", ([],)),
        ("put", ()),
        ("batch", ([b"", b""],)),
    ]:
        with contextlib.suppress(DecodeError):
            decode_reply(m, a, msgpack.packb([0, args], use_bin_type=True))


def test_a_read_of_an_unknown_kind_is_refused_at_decode() -> None:
    data = msgpack.packb([12, "read", ["bogus", "k", None, "default", None, None]])
    with pytest.raises(DecodeError, match="unknown read"):
        decode_call(data)
