"""``/v1/session/*``: Consul's sessions over the replicated store (``mesh.kv``).

Theory of operation
-------------------
As Consul's ``agent/session_endpoint.go``:

* ``PUT /v1/session/create`` with an optional JSON body — ``Name``, ``Node`` (default:
  this agent's node), ``TTL`` (a Go duration, 0 or 10 s to 24 h), ``Behavior``
  (``release`` or ``delete``), ``LockDelay`` (a duration, or a number of nanoseconds,
  a number under 1000 counting seconds, as Consul's ``FixupLockDelay``; at most 60 s) —
  answers ``{"ID": ...}``.  Keys match in any letter case (py-consul sends ``ttl``,
  ``lockdelay``); unknown keys are ignored, as Go's decoder does.  A session is bound to
  its node's gossip health, Consul's ``serfHealth`` check, and to nothing else: a
  ``Checks``/``NodeChecks`` list naming another check, or any ``ServiceChecks``, is a 400.
* ``PUT /v1/session/destroy/:id`` invalidates it (its locks are released, or their keys
  deleted with ``Behavior: delete``); ``true`` even for an unknown id, as Consul.
* ``PUT /v1/session/renew/:id`` restarts its TTL: ``[Session]``, or ``404 Session id
  '...' not found`` once it is gone (the client must then create a new one).
* ``GET /v1/session/info/:id`` (``[Session]``, or ``[]``), ``/list`` and ``/node/:node``
  are blocking queries with the store's index, through ``kv_query.blocking_read``.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from meshlite._core.kv_types import BEHAVIORS, DEFAULT_LOCK_DELAY_S
from meshlite._duration import parse_duration_ns
from meshlite._http.blocking import Blocking, json_response
from meshlite._http.context import api_of
from meshlite._http.errors import HttpError, read_body, reject_unsupported, show
from meshlite._http.kv_query import (
    NS_PER_S,
    SERF_CHECKS,
    blocking_read,
    consistency_of,
    read_headers,
    session_json,
    store_errors,
)
from meshlite._raft_server_kv import KVRead
from meshlite.errors import ConfigError

__all__ = ["parse_create", "routes"]

# Consul's lockDelayMinThreshold: a LockDelay below 1000 (ns) is taken as seconds, since
# nobody means a lock delay of a few nanoseconds.
LOCK_DELAY_SECONDS_BELOW = 1000
_CHECK_KEYS = ("checks", "nodechecks")


def _decode(body: bytes) -> dict[str, Any]:
    """The create body as a lower-cased-key object; an empty body is ``{}``."""
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise HttpError(400, f"Request decode failed: {exc}") from None
    except RecursionError:
        raise HttpError(400, "Request decode failed: JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise HttpError(400, f"Request decode failed: the body must be a JSON object, "
                             f"got {show(value)}")  # fmt: skip
    return {str(k).lower(): v for k, v in value.items()}


def _string(fields: dict[str, Any], key: str, name: str, default: str) -> str:
    value = fields.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise HttpError(400, f"Request decode failed: {name} must be a string, got {show(value)}")
    return value


def _duration_s(text: str, name: str) -> float:
    try:
        return parse_duration_ns(text) / NS_PER_S
    except ConfigError as exc:
        raise HttpError(400, f"Request decode failed: {name}: {exc}") from None


def _lock_delay_s(value: Any) -> float:
    if value is None:
        return DEFAULT_LOCK_DELAY_S
    if isinstance(value, str):
        ns = parse_duration_ns(value) if value else 0
    elif isinstance(value, int | float) and not isinstance(value, bool):
        ns = int(value) if abs(value) < 2**63 else -1
    else:
        raise HttpError(400, f"Request decode failed: LockDelay must be a duration or a "
                             f"number, got {show(value)}")  # fmt: skip
    if 0 < ns < LOCK_DELAY_SECONDS_BELOW:
        ns *= NS_PER_S
    return ns / NS_PER_S


def _checks(fields: dict[str, Any]) -> None:
    for key in _CHECK_KEYS:
        value = fields.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or any(c not in SERF_CHECKS for c in value):
            raise HttpError(400, f"Invalid session checks {show(value)}: meshlite sessions "
                                 "are bound to their node's serfHealth check only")  # fmt: skip
    if fields.get("servicechecks"):
        raise HttpError(400, "ServiceChecks are not supported by meshlite: sessions are "
                             "bound to their node's serfHealth check only")  # fmt: skip


def parse_create(body: bytes, default_node: str) -> dict[str, Any]:
    """The keyword arguments of ``mesh.kv.session_create`` from Consul's create body."""
    fields = _decode(body)
    _checks(fields)
    ttl = _string(fields, "ttl", "TTL", "")
    behavior = _string(fields, "behavior", "Behavior", "") or "release"
    if behavior not in BEHAVIORS:
        raise HttpError(400, f"Invalid Behavior setting {show(behavior)}: use "
                             f"{' or '.join(BEHAVIORS)}")  # fmt: skip
    try:
        lock_delay_s = _lock_delay_s(fields.get("lockdelay"))
    except ConfigError as exc:
        raise HttpError(400, f"Request decode failed: LockDelay: {exc}") from None
    return {
        "node": _string(fields, "node", "Node", "") or default_node,
        "name": _string(fields, "name", "Name", ""),
        "ttl_s": _duration_s(ttl, "TTL") if ttl else 0.0,
        "behavior": behavior,
        "lock_delay_s": lock_delay_s,
    }


async def create(request: Request) -> Response:
    api = api_of(request)
    reject_unsupported(request, api.datacenter)
    kwargs = parse_create(await read_body(request), api.mesh.name)
    with store_errors():
        session = await api.mesh.kv.session_create(**kwargs)
    return json_response(request, {"ID": session.id})


async def destroy(request: Request) -> Response:
    api = api_of(request)
    reject_unsupported(request, api.datacenter)
    with store_errors():
        await api.mesh.kv.session_destroy(request.path_params["id"])
    return json_response(request, True)


async def renew(request: Request) -> Response:
    api = api_of(request)
    reject_unsupported(request, api.datacenter)
    session_id = request.path_params["id"]
    with store_errors():
        session = await api.mesh.kv.session_renew(session_id)
    if session is None:
        raise HttpError(404, f"Session id '{session_id}' not found")
    return json_response(request, [session_json(session)])


async def _read(request: Request, what: str, arg: str = "") -> Response:
    api = api_of(request)
    reject_unsupported(request, api.datacenter)
    blocking = Blocking.from_request(request)
    consistency = consistency_of(request)

    async def reader(index: int | None, wait_s: float | None) -> KVRead[Any]:
        return await api.mesh.kv.read(
            what, arg, consistency=consistency, index=index, wait_s=wait_s
        )

    read = await blocking_read(request, blocking, reader)
    found = read.value
    sessions = found if isinstance(found, list) else [] if found is None else [found]
    return json_response(request, [session_json(s) for s in sessions], headers=read_headers(read))


async def info(request: Request) -> Response:
    return await _read(request, "session_info", request.path_params["id"])


async def list_all(request: Request) -> Response:
    return await _read(request, "session_list")


async def node(request: Request) -> Response:
    return await _read(request, "session_node", request.path_params["node"])


def routes() -> list[Route]:
    return [
        Route("/v1/session/create", create, methods=["PUT"]),
        Route("/v1/session/destroy/{id}", destroy, methods=["PUT"]),
        Route("/v1/session/renew/{id}", renew, methods=["PUT"]),
        Route("/v1/session/info/{id}", info, methods=["GET"]),
        Route("/v1/session/list", list_all, methods=["GET"]),
        Route("/v1/session/node/{node}", node, methods=["GET"]),
    ]
