"""``PUT /v1/txn``: Consul's transactions of KV operations, all applied or none.

Theory of operation
-------------------
As Consul's ``agent/txn_endpoint.go``: the body is a JSON list of operations, each an
object with one key naming its kind — meshlite's store holds KV only, so ``KV`` (a
``Node``, ``Service`` or ``Check`` operation is a 400) — whose fields are ``Verb``,
``Key``, ``Value`` (base64), ``Flags``, ``Index`` and ``Session``, matched in any
letter case as Go's decoder does.  The limits are Consul's: 64 operations
(``maxTxnOps``; more is a ``413``), each value at most 512 KiB (``413``), and the values
together at most 512 KiB.  The verbs are Consul's ``api.KVOp`` names; one the store does
not know, or a field of the wrong type, is a ``400`` with the reason.

The answer is Consul's ``TxnResponse``: ``200`` with ``Results`` (one ``{"KV":
DirEntry}`` per entry returned: reads keep their value, writes answer the entry without
it) and ``Errors: null``; or, when any operation's condition failed (a stale index, a
lock held), ``409 Conflict`` with ``Results: null`` and ``Errors`` — ``OpIndex`` and
``What`` for each failed operation — and nothing applied.  A read-only transaction is
served by the leader without a Raft round (``TxnRO``).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from meshlite._core.kv_types import MAX_TXN_BYTES, MAX_TXN_OPS, MAX_VALUE_BYTES, TxnOp
from meshlite._http.blocking import json_response
from meshlite._http.context import api_of
from meshlite._http.errors import HttpError, read_body, reject_unsupported, show
from meshlite._http.kv_query import entry_json, store_errors

__all__ = ["MAX_TXN_BODY_BYTES", "parse_ops", "routes"]

# The body carries up to MAX_TXN_BYTES of values in base64 (4/3 larger) plus the JSON
# around them: 64 operations of keys and fields fit easily in the extra 64 KiB.
MAX_TXN_BODY_BYTES = MAX_TXN_BYTES * 4 // 3 + 64 * 1024
_UINT64_END = 2**64
_OTHER_KINDS = ("node", "service", "check")


def _fail(text: str) -> HttpError:
    return HttpError(400, f"Failed to parse body: {text}")


def _decode(body: bytes) -> list[Any]:
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    except RecursionError:
        raise _fail("JSON nested too deeply") from None
    if not isinstance(value, list):
        raise _fail(f"the body must be a JSON list of operations, got {show(value)}")
    if len(value) > MAX_TXN_OPS:
        text = f"Transaction contains too many operations ({len(value)} > {MAX_TXN_OPS})"
        raise HttpError(413, text)
    return value


def _kv_fields(i: int, item: Any) -> dict[str, Any]:
    if not isinstance(item, dict) or len(item) != 1:
        raise _fail(f"operation {i} must be an object with one key, KV, got {show(item)}")
    [(kind, fields)] = item.items()
    if str(kind).lower() in _OTHER_KINDS:
        raise HttpError(400, f"operation {i}: {kind} operations are not supported by "
                             "meshlite (its store holds KV only)")  # fmt: skip
    if str(kind).lower() != "kv" or not isinstance(fields, dict):
        raise _fail(f'operation {i} must be {{"KV": {{...}}}}, got {show(item)}')
    return {str(k).lower(): v for k, v in fields.items()}


def _field(i: int, fields: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    value = fields.get(name.lower())
    if value is None:
        return default
    if kind is int:
        if type(value) is not int or not 0 <= value < _UINT64_END:
            raise _fail(f"operation {i}: {name} must be a whole number 0-2^64, got {show(value)}")
    elif not isinstance(value, kind):
        raise _fail(f"operation {i}: {name} must be a string, got {show(value)}")
    return value


def _value(i: int, key: str, text: str) -> bytes:
    try:
        value = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _fail(f"operation {i}: Value must be base64, got {show(text)}") from None
    if len(value) > MAX_VALUE_BYTES:
        raise HttpError(413, f"Value for key {key!r} is too large "
                             f"({len(value)} > {MAX_VALUE_BYTES} bytes)")  # fmt: skip
    return value


def parse_ops(body: bytes) -> list[TxnOp]:
    """The operations of a txn body; ``HttpError`` (400 or 413) saying what is wrong."""
    ops = []
    for i, item in enumerate(_decode(body)):
        fields = _kv_fields(i, item)
        verb = _field(i, fields, "Verb", str, "")
        key = _field(i, fields, "Key", str, "")
        value = _value(i, key, _field(i, fields, "Value", str, ""))
        flags = _field(i, fields, "Flags", int, 0)
        index = _field(i, fields, "Index", int, 0)
        session = _field(i, fields, "Session", str, "") or None
        ops.append(TxnOp(verb, key, value, flags, index, session))
    if not ops:
        raise _fail("a transaction needs at least one operation")
    total = sum(len(op.value) for op in ops)
    if total > MAX_TXN_BYTES:
        raise HttpError(413, f"Transaction values total {total} bytes, over the "
                             f"{MAX_TXN_BYTES}-byte limit (txn_max_req_len)")  # fmt: skip
    return ops


async def txn(request: Request) -> Response:
    api = api_of(request)
    reject_unsupported(request, api.datacenter)
    ops = parse_ops(await read_body(request, MAX_TXN_BODY_BYTES))
    with store_errors():
        result = await api.mesh.kv.txn(ops)
    if result.error is not None:  # refused as a whole (the store's builders said why)
        raise HttpError(400, result.error)
    if result.errors:
        errors = [{"OpIndex": e.op_index, "What": e.what} for e in result.errors]
        return json_response(request, {"Results": None, "Errors": errors}, 409)
    results = [{"KV": entry_json(r.entry)} for r in result.results]
    return json_response(request, {"Results": results, "Errors": None})


def routes() -> list[Route]:
    return [Route("/v1/txn", txn, methods=["PUT"])]
