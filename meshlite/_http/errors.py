"""Errors and request parsing for the HTTP API, with Consul's status codes and texts.

Theory of operation
-------------------
Consul answers a malformed request with ``400`` and a plain-text reason (``Invalid wait
time``, ``Request decode failed: ...``), an unknown id with ``404``, a missing token with
``403 Permission denied`` (``agent/http.go``, ``agent/structs/errors.go``).  Handlers
here raise :class:`HttpError` with that status and text; the app turns it into a
``text/plain`` response.  Anything else that escapes a handler is a bug: the app logs it
and answers ``500`` (``app.py``) — so every path from request bytes to a handler's
arguments goes through the helpers below, which raise ``HttpError(400)`` and nothing else.

The helpers follow Consul's readers: booleans as Go's ``strconv.ParseBool`` (a bare
``?passing`` is true), durations as Go's ``time.ParseDuration``, indexes as ``uint64``;
bodies are JSON objects read with a size cap (``413`` past it, as Consul's KV limit).
Reusable by later route modules (KV, sessions, transactions).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import ClientDisconnect, Request

from meshlite._duration import parse_duration_ns
from meshlite.errors import ConfigError

__all__ = [
    "MAX_BODY_BYTES",
    "HttpError",
    "query_bool",
    "query_duration_s",
    "query_node_meta",
    "query_uint",
    "read_body",
    "read_json_object",
    "reject_unsupported",
]

# Consul's kv_max_value_size default (512 KiB) doubles as its practical request-body
# limit; no service definition or keyring call comes near it.
MAX_BODY_BYTES = 512 * 1024
# An oversized body is read and dropped up to this much before answering 413 (see
# read_body); past it the connection is closed instead.
DRAIN_MAX_BYTES = 8 * MAX_BODY_BYTES
# Go's strconv.ParseBool, which Consul uses for flags like ?passing=... .
_TRUE = frozenset({"", "1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_UINT64_MAX = 2**64 - 1
_SHOW_MAX_CHARS = 60  # an echoed bad value is cut here, so a reason stays one short line


class HttpError(Exception):
    """An answer other than 2xx, with Consul's status code and plain-text reason."""

    def __init__(self, status: int, text: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = dict(headers or {})


def show(value: Any) -> str:
    """A bad value, JSON-quoted and cut to one short line, for a reason text."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= _SHOW_MAX_CHARS else text[: _SHOW_MAX_CHARS - 3] + "..."


# ------------------------------------------------------------------------------ query


def query_bool(request: Request, name: str) -> bool:
    """``?name`` (true), ``?name=false`` ... as Go's ParseBool; absent is false."""
    value = request.query_params.get(name)
    if value is None:
        return False
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise HttpError(400, f"Invalid value for ?{name}: {show(value)} (use true or false)")


def query_uint(request: Request, name: str, *, maximum: int = _UINT64_MAX) -> int | None:
    """A non-negative integer parameter (``?index=``), ``None`` when absent."""
    value = request.query_params.get(name)
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or int(value) > maximum:
        raise HttpError(400, f"Invalid {name}: {show(value)} (a whole number 0-{maximum})")
    return int(value)


def query_duration_s(request: Request, name: str) -> float | None:
    """A Go duration parameter (``?wait=10s``) in seconds, ``None`` when absent."""
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        ns = parse_duration_ns(value)
    except ConfigError as exc:
        raise HttpError(400, f"Invalid {name} time: {exc}") from None
    if ns < 0:
        raise HttpError(400, f"Invalid {name} time: must not be negative, got {show(value)}")
    return ns / 1e9


def query_node_meta(request: Request) -> dict[str, str]:
    """Consul's ``?node-meta=key:value`` filters (repeatable; all must match)."""
    out: dict[str, str] = {}
    for item in request.query_params.getlist("node-meta"):
        key, found, value = item.partition(":")
        if not found or not key:
            raise HttpError(400, f"Invalid node-meta filter: {show(item)} (use key:value)")
        out[key] = value
    return out


def reject_unsupported(request: Request, datacenter: str) -> None:
    """Parameters meshlite cannot honour: say so instead of ignoring them.  ``?dc=`` must
    name this mesh's datacenter (there is no other to forward to)."""
    dc = request.query_params.get("dc")
    if dc is not None and dc not in ("", datacenter):
        raise HttpError(400, f"No path to datacenter {show(dc)}: this mesh is {show(datacenter)}")
    if "filter" in request.query_params:
        raise HttpError(400, "filter expressions (?filter=) are not supported by meshlite")
    if "peer" in request.query_params:
        raise HttpError(400, "cluster peering (?peer=) is not supported by meshlite")


# ------------------------------------------------------------------------------ body


def _too_large(limit: int) -> HttpError:
    # The rest of the body may be unread: the connection cannot carry another request.
    text = f"Request body too large: the limit is {limit} bytes"
    return HttpError(413, text, {"Connection": "close"})


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole request body; ``413`` once it passes ``limit`` bytes.

    An oversized body is still read (and dropped) up to ``DRAIN_MAX_BYTES``, so a client
    that sends it all before reading the answer gets the 413 rather than a reset."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > DRAIN_MAX_BYTES:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > DRAIN_MAX_BYTES:
                break
            if size <= limit:
                chunks.append(chunk)
    except ClientDisconnect:  # nobody to answer; not a bug to log
        raise HttpError(400, "the client disconnected while sending the body") from None
    if size > limit:
        raise _too_large(limit)
    return b"".join(chunks)


async def read_json_object(request: Request, *, what: str) -> dict[str, Any]:
    """The body as a JSON object (``what`` names it in errors)."""
    body = await read_body(request)
    if not body.strip():
        raise HttpError(400, f"Request decode failed: the body must be {what} (a JSON object)")
    try:
        value = json.loads(body)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int digit limits
        raise HttpError(400, f"Request decode failed: {exc}") from None
    except RecursionError:
        raise HttpError(400, "Request decode failed: JSON nested too deeply") from None
    if not isinstance(value, dict):
        shape = f"the body must be {what} (a JSON object), got {show(value)}"
        raise HttpError(400, f"Request decode failed: {shape}")
    return value
