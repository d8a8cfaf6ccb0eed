"""The OpenAPI description of the KV, session and txn routes (``extra_openapi``).

Theory of operation
-------------------
The same hand-written style as ``openapi.py`` (whose builders it reuses), for the
routes ``kv.py``, ``session.py`` and ``txn.py`` serve, with what they can answer: 400
with a reason, 403 without the token, 413 for a value over 512 KiB or more than 64
operations, 409 for a failed transaction, 404 for a missing key (an empty body with
``X-Consul-Index``) or a session gone, and 500 ``No cluster leader`` — the one 5xx, for
a cluster that cannot answer (no server, or an election that outlasts Consul's 7 s hold),
never for any input.  Schemas are inlined (``document()`` serves the base components);
they list the fields the handlers always set and allow more.

Generated inputs stay in what answers promptly: keys of one path segment that no URL
normaliser rewrites, and ``?wait`` of at most 9 s (a KV blocking query with an index
at or past the current one waits, as Consul's does; the handlers accept up to 10 min).
"""

from __future__ import annotations

from typing import Any

from meshlite._core.kv_types import MAX_TXN_OPS
from meshlite._http import openapi_schemas as s
from meshlite._http.openapi import (
    _BLOCKING_HEADERS,
    _DC,
    _TEXT,
    _json,
    _op,
    _path,
    _query,
    _response,
)

__all__ = ["PATHS"]

_UINT = {"type": "integer", "minimum": 0, "maximum": 2**64 - 1}
_FLAG = {"type": "string", "enum": ["", "true", "false", "1", "0"]}
_ENTRY = {
    "type": "object",
    "properties": {
        "LockIndex": _UINT,
        "Key": s.STRING,
        "Flags": _UINT,
        "Value": {"type": "string", "nullable": True, "format": "byte"},
        "Session": s.STRING,
        "CreateIndex": _UINT,
        "ModifyIndex": _UINT,
    },
    "required": ["LockIndex", "Key", "Flags", "Value", "CreateIndex", "ModifyIndex"],
}
_SESSION = {
    "type": "object",
    "properties": {
        "ID": s.STRING,
        "Name": s.STRING,
        "Node": s.STRING,
        "LockDelay": {"type": "integer", "minimum": 0},
        "Behavior": {"type": "string", "enum": ["release", "delete"]},
        "TTL": s.STRING,
        "NodeChecks": s.array(s.STRING),
        "CreateIndex": _UINT,
        "ModifyIndex": _UINT,
    },
    "required": ["ID", "Name", "Node", "LockDelay", "Behavior", "TTL", "CreateIndex"],
}
_DURATION = {"type": "string", "pattern": r"^(0|[1-9][0-9]{0,3}(ms|s|m|h))$"}
_SESSION_REQUEST = {
    "type": "object",
    "properties": {
        "Name": {"type": "string", "maxLength": 64},
        "Node": {"type": "string", "minLength": 1, "maxLength": 64},
        "TTL": _DURATION,
        "Behavior": {"type": "string", "enum": ["release", "delete"]},
        "LockDelay": {"oneOf": [_DURATION, {"type": "integer", "minimum": 0}]},
        "Checks": {"type": "array", "items": {"type": "string", "enum": ["serfHealth"]}},
        "NodeChecks": {"type": "array", "items": {"type": "string", "enum": ["serfHealth"]}},
    },
}
_VERBS = ["set", "cas", "lock", "unlock", "get", "get-tree", "check-index", "check-session",
          "check-not-exists", "delete", "delete-tree", "delete-cas"]  # fmt: skip
_TXN_OP = {
    "type": "object",
    "properties": {
        "KV": {
            "type": "object",
            "properties": {
                "Verb": {"type": "string", "enum": _VERBS},
                "Key": {"type": "string", "maxLength": 256},
                "Value": {"type": "string", "format": "byte", "maxLength": 4096},
                "Flags": _UINT,
                "Index": _UINT,
                "Session": s.STRING,
            },
            "required": ["Verb", "Key"],
        }
    },
    "required": ["KV"],
    "additionalProperties": False,
}
_TXN_RESPONSE = {
    "type": "object",
    "properties": {
        "Results": {
            "type": "array",
            "nullable": True,
            "items": {"type": "object", "properties": {"KV": _ENTRY}},
        },
        "Errors": {
            "type": "array",
            "nullable": True,
            "items": {
                "type": "object",
                "properties": {"OpIndex": {"type": "integer"}, "What": s.STRING},
                "required": ["OpIndex", "What"],
            },
        },
    },
    "required": ["Results", "Errors"],
}

_KEY = {
    "name": "key",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$"},
    "description": "the key (any string; slashes make a hierarchy, e.g. config/web/port)",
}
_INDEX = _query("index", _UINT, "block while the read's index is at most this")
_WAIT = _query(
    "wait",
    {"type": "string", "pattern": r"^(0|[0-9]{1,3}ms|[1-9]s)$"},
    "longest block (Go duration; default 5m, at most 10m, plus up to 1/16 jitter)",
)
_CONSISTENCY = (
    _query("stale", _FLAG, "any server may answer, however far behind"),
    _query("consistent", _FLAG, "the leader confirms its leadership first (ReadIndex)"),
)
_BLOCKING = (_DC, *_CONSISTENCY, _INDEX, _WAIT)
_NO_LEADER = {"500": _response("No cluster leader (no server, or an election running)", _TEXT)}
_BOOL = _json({"type": "boolean"})


def _kv() -> dict[str, Any]:
    flag = {n: _query(n, _FLAG, d) for n, d in (
        ("recurse", "every key under the prefix (DELETE: delete them all)"),
        ("keys", "only the key names"),
        ("raw", "the value itself, application/octet-stream"),
    )}  # fmt: skip
    separator = _query("separator", {"type": "string", "maxLength": 8}, "cut keys after this")
    entries = _json({"anyOf": [s.array(_ENTRY), s.array(s.STRING)]})  # ?keys: names
    ok = _response("the entries (or key names)", entries, _BLOCKING_HEADERS)
    ok["content"]["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
    missing = _response("no such key (empty body, with X-Consul-Index)", None, _BLOCKING_HEADERS)
    get_params = (_KEY, flag["recurse"], flag["keys"], separator, flag["raw"], *_BLOCKING)
    write = {"cas": _query("cas", _UINT, "only if the key's ModifyIndex is this (0: absent)")}
    session = {"type": "string", "minLength": 1}
    body = {
        "required": False,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
    put_params = (
        _KEY,
        _DC,
        _query("flags", _UINT, "an opaque number stored with the value"),
        write["cas"],
        _query("acquire", session, "take the key's lock for this session"),
        _query("release", session, "give the key's lock up (held by this session)"),
    )
    delete_params = (_KEY, _DC, flag["recurse"], write["cas"])
    answer = _response("true, or false when the condition did not hold", _BOOL)
    return {
        "get": _op("read a key, a prefix or key names", ok, params=get_params,
                   extra={"404": missing, **_NO_LEADER}),
        "put": _op("write a key", answer, params=put_params, body=body, extra=_NO_LEADER),
        "delete": _op("delete a key or a prefix", answer, params=delete_params,
                      extra=_NO_LEADER),
    }  # fmt: skip


def _session_read(summary: str, *params: dict[str, Any]) -> dict[str, Any]:
    ok = _response("the sessions", _json(s.array(_SESSION)), _BLOCKING_HEADERS)
    return {"get": _op(summary, ok, params=(*params, *_BLOCKING), extra=_NO_LEADER)}


def _session_write(summary: str, ok: dict[str, Any], *, gone: bool = False) -> dict[str, Any]:
    extra = dict(_NO_LEADER)
    if gone:
        extra["404"] = _response("the session is gone (create a new one)", _TEXT)
    params = (_path("id", "the session id"), _DC)
    return {"put": _op(summary, ok, params=params, extra=extra)}


def _create() -> dict[str, Any]:
    body = {"required": False, "content": _json(_SESSION_REQUEST)}
    id_schema = {"type": "object", "properties": {"ID": s.STRING}, "required": ["ID"]}
    ok = _response("the new session's id", _json(id_schema))
    return {"put": _op("create a session", ok, params=(_DC,), body=body, extra=_NO_LEADER)}


def _txn() -> dict[str, Any]:
    body = {
        "required": True,
        "content": _json({"type": "array", "items": _TXN_OP, "minItems": 1,
                          "maxItems": MAX_TXN_OPS}),
    }  # fmt: skip
    extra = {
        "409": _response("an operation's condition failed; nothing applied", _json(_TXN_RESPONSE)),
        **_NO_LEADER,
    }
    ok = _response("every operation applied", _json(_TXN_RESPONSE))
    op = _op("apply KV operations atomically", ok, params=(_DC,), body=body, extra=extra)
    op["responses"]["413"] = _response("over 64 operations, or a value over 512 KiB", _TEXT)
    return {"put": op}


PATHS: dict[str, Any] = {
    "/v1/kv/{key}": _kv(),
    "/v1/txn": _txn(),
    "/v1/session/create": _create(),
    "/v1/session/destroy/{id}": _session_write("destroy a session", _response("true", _BOOL)),
    "/v1/session/renew/{id}": _session_write(
        "renew a session's TTL", _response("the session", _json(s.array(_SESSION))), gone=True
    ),
    "/v1/session/info/{id}": _session_read(
        "one session ([] when unknown)", _path("id", "the session id")
    ),
    "/v1/session/list": _session_read("every session"),
    "/v1/session/node/{node}": _session_read("the sessions of a node", _path("node", "node name")),
}
