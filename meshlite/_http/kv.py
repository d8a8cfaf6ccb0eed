"""``/v1/kv/:key``: Consul's KV endpoints over the replicated store (``mesh.kv``).

Theory of operation
-------------------
The handlers follow Consul's ``agent/kvs_endpoint.go``:

* ``GET`` reads one key (``[DirEntry]``), every key under a prefix (``?recurse``) or
  the key names (``?keys``, cut after ``?separator``; Consul's historic misspelling
  ``?seperator`` too).  A missing key, or a prefix with nothing under it, is a ``404``
  with an empty body *and* ``X-Consul-Index``, so a client can block on a key that does
  not exist yet; ``?keys`` at the root answers ``[]`` instead.  ``?raw`` answers one
  key's value itself as ``application/octet-stream`` with ``X-Content-Type-Options:
  nosniff`` (a browser must not sniff stored bytes into HTML).
* ``PUT`` stores the body as the value: ``?flags`` (uint64), and at most one of ``?cas``
  (the ``ModifyIndex`` to match; 0: only if absent), ``?acquire`` / ``?release`` (a
  session id).  It answers ``true``, or ``false`` when the condition did not hold.  A
  value over Consul's ``kv_max_value_size`` (512 KiB) is a ``413`` with Consul's text.
* ``DELETE`` removes one key, a prefix (``?recurse``), or one key if ``?cas`` matches;
  ``true``/``false`` as for ``PUT``.

Parameters are parsed strictly (``errors.py``): a malformed one is a ``400`` with the
reason, never ignored.  Booleans take Go's ``ParseBool`` values, a bare ``?recurse``
being true (Consul only checks presence, so ``?recurse=false`` means true there: here it
means false).  Reads block and pick a consistency mode through ``kv_query.py``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from meshlite._core.kv_types import MAX_VALUE_BYTES
from meshlite._http import session, txn
from meshlite._http.blocking import Blocking, json_response
from meshlite._http.context import api_of
from meshlite._http.errors import (
    HttpError,
    query_bool,
    query_uint,
    read_body,
    reject_unsupported,
)
from meshlite._http.kv_query import (
    blocking_read,
    consistency_of,
    entry_json,
    read_headers,
    store_errors,
)
from meshlite._raft_server_kv import KVRead

__all__ = ["routes", "store_routes"]

MISSING_KEY = "Missing key name"  # Consul's text for a PUT or DELETE of "/v1/kv/"
# Consul's 413 text; the link names the setting (fixed at 512 KiB in meshlite).
TOO_LARGE = (
    "Request body({size} bytes) too large, max size: {limit} bytes. See "
    "https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size."
)
_LOCKS = ("cas", "acquire", "release")


def _key(request: Request) -> str:
    key: str = request.path_params["key"]
    return key


def _separator(request: Request) -> str | None:
    params = request.query_params
    separator = params.get("separator", params.get("seperator"))
    return separator or None


def _session_param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is not None and not value:
        raise HttpError(400, f"?{name} needs a session id (from /v1/session/create)")
    return value


async def kv_get(request: Request) -> Response:
    api = api_of(request)
    reject_unsupported(request, api.datacenter)
    key = _key(request)
    keys, recurse, raw = (query_bool(request, n) for n in ("keys", "recurse", "raw"))
    separator = _separator(request)
    blocking = Blocking.from_request(request)
    consistency = consistency_of(request)
    what = "keys" if keys else "list" if recurse else "get"
    if what == "get" and not key:
        raise HttpError(400, MISSING_KEY)

    async def reader(index: int | None, wait_s: float | None) -> KVRead[Any]:
        return await api.mesh.kv.read(
            what, key, separator, consistency=consistency, index=index, wait_s=wait_s
        )

    read = await blocking_read(request, blocking, reader)
    headers = read_headers(read)
    if what == "keys":
        if not read.value and key:
            return Response(b"", 404, headers=headers)
        return json_response(request, list(read.value), headers=headers)
    entries = read.value if what == "list" else [] if read.value is None else [read.value]
    if not entries:
        return Response(b"", 404, headers=headers)
    if raw and what == "get":
        headers["X-Content-Type-Options"] = "nosniff"
        return Response(entries[0].value, media_type="application/octet-stream", headers=headers)
    return json_response(request, [entry_json(e) for e in entries], headers=headers)


async def _value(request: Request) -> bytes:
    try:
        return await read_body(request, MAX_VALUE_BYTES)
    except HttpError as exc:
        if exc.status != 413:
            raise
        declared = request.headers.get("content-length", "")
        size = declared if declared.isdigit() else f"over {MAX_VALUE_BYTES}"
        text = TOO_LARGE.format(size=size, limit=MAX_VALUE_BYTES)
        raise HttpError(413, text, exc.headers) from None


def _one_of(request: Request, names: tuple[str, ...]) -> None:
    given = [n for n in names if n in request.query_params]
    if len(given) > 1:
        raise HttpError(400, f"Conflicting flags: {', '.join('?' + n for n in given)} "
                             "(use at most one)")  # fmt: skip


async def kv_put(request: Request) -> Response:
    api = api_of(request)
    reject_unsupported(request, api.datacenter)
    key = _key(request)
    if not key:
        raise HttpError(400, MISSING_KEY)
    _one_of(request, _LOCKS)
    flags = query_uint(request, "flags") or 0
    cas = query_uint(request, "cas")
    acquire = _session_param(request, "acquire")
    release = _session_param(request, "release")
    value = await _value(request)
    with store_errors():
        done = await api.mesh.kv.put(
            key, value, flags=flags, cas=cas, acquire=acquire, release=release
        )
    return json_response(request, done)


async def kv_delete(request: Request) -> Response:
    api = api_of(request)
    reject_unsupported(request, api.datacenter)
    key = _key(request)
    _one_of(request, ("recurse", "cas"))
    recurse = query_bool(request, "recurse")
    cas = query_uint(request, "cas")
    if not key and not recurse:
        raise HttpError(400, MISSING_KEY)
    with store_errors():
        done = await api.mesh.kv.delete(key, recurse=recurse, cas=cas)
    return json_response(request, done)


async def kv(request: Request) -> Response:
    if request.method in ("GET", "HEAD"):
        return await kv_get(request)
    if request.method == "PUT":
        return await kv_put(request)
    return await kv_delete(request)


def routes() -> list[Route]:
    return [Route("/v1/kv/{key:path}", kv, methods=["GET", "PUT", "DELETE"])]


def store_routes() -> list[Route]:
    """Every route of the replicated store: ``/v1/kv``, ``/v1/txn``, ``/v1/session``."""
    return [*routes(), *txn.routes(), *session.routes()]
