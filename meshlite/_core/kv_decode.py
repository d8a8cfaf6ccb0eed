"""Decoding KV commands from the Raft log: exactly what the builders make, or DecodeError.

Theory of operation
-------------------
A Raft log is written by whichever server led at the time, and a snapshot or an entry
may arrive from a peer over the network: the state machine must survive anything in it
(DESIGN.md §3, "remote garbage never raises out of a core").  :func:`decode_command`
unpacks with hard size bounds (no string, byte string or array of a valid command is
longer than the limits below, so garbage cannot make a server allocate more) and then
asks the same rule functions as the ``cmd_*`` builders in ``kv_commands.py``, so a
command decodes if and only if a builder could have made it.
"""

from __future__ import annotations

from typing import Any

from meshlite._core.kv_commands import (
    MAX_SESSION_ID_BYTES,
    BatchCmd,
    Command,
    Kind,
    OpCmd,
    SessionCmd,
    SessionCreateCmd,
    TxnCmd,
    batch_problem,
    op_problem,
    session_problem,
    str_problem,
    txn_problem,
    uint_problem,
)
from meshlite._core.kv_types import MAX_KEY_BYTES, MAX_TXN_OPS, MAX_VALUE_BYTES, TxnOp
from meshlite._core.wire_checks import MAX_NAME_BYTES, DecodeError, unpack

__all__ = ["decode_command"]


def _op_from_wire(v: Any, *, single: bool) -> TxnOp:
    if type(v) is not list or len(v) != 6:
        raise DecodeError("an operation is a list of 6 fields")
    op = TxnOp(*v)
    problem = op_problem(op, single=single)
    if problem:
        raise DecodeError(problem)
    return op


def _from_wire(v: Any) -> Command:
    if type(v) is not list or not v or type(v[0]) is not int:
        raise DecodeError("a command is a list starting with its kind")
    kind, args = v[0], v[1:]
    if kind == Kind.OP:
        return OpCmd(_op_from_wire(args, single=True))
    if kind in (Kind.TXN, Kind.BATCH) and len(args) == 1 and type(args[0]) is list:
        txn = kind == Kind.TXN  # a transaction's ops may read; a batch holds single writes
        ops = tuple(_op_from_wire(o, single=not txn) for o in args[0])
        problem = txn_problem(ops) if txn else batch_problem(ops)
        if problem:
            raise DecodeError(problem)
        return TxnCmd(ops) if txn else BatchCmd(ops)
    if kind == Kind.SESSION_CREATE and len(args) == 6:
        c = SessionCreateCmd(*args)
        problem = session_problem(c)
        if problem:
            raise DecodeError(problem)
        return c
    return _simple_from_wire(kind, args)


def _simple_from_wire(kind: int, args: list[Any]) -> Command:
    if kind in (Kind.EXPIRE_SESSIONS, Kind.RESET_SESSION_TIMERS) and not args:
        return SessionCmd(Kind(kind))
    if len(args) != 1:
        raise DecodeError(f"malformed command of kind {kind}")
    arg = args[0]
    if kind in (Kind.SESSION_DESTROY, Kind.SESSION_RENEW):
        problem = str_problem("session id", arg, MAX_SESSION_ID_BYTES)
    elif kind == Kind.NODE_FAILED:
        problem = str_problem("node", arg, MAX_NAME_BYTES)
    elif kind == Kind.REAP_TOMBSTONES:
        problem = uint_problem("upto_index", arg)
    else:
        problem = f"unknown command kind {kind}"
    if problem:
        raise DecodeError(problem)
    return SessionCmd(Kind(kind), arg)


def decode_command(data: bytes) -> Command:
    """The command in ``data``, fully checked; :class:`DecodeError` for anything else."""
    v = unpack(
        data,
        "command",
        max_str_len=MAX_KEY_BYTES,
        max_bin_len=MAX_VALUE_BYTES,
        max_array_len=MAX_TXN_OPS,
        max_map_len=0,
    )
    return _from_wire(v)
