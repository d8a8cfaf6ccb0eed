"""``/v1/agent/checks``, TTL updates and the agent's own view of a service's health.

Theory of operation
-------------------
This peer's checks are its services' — with Consul's ids, ``service:<id>`` for a lone
check and ``service:<id>:<n>`` for the n-th of several, or the id chosen at
``/v1/agent/check/register`` (``agent_check_register.py``) — and its node checks
(registered without a ``ServiceID``).  ``/v1/agent/checks`` lists them all, node checks
first, with an empty ``ServiceID``.  A TTL check is moved by
``PUT /v1/agent/check/pass|warn|fail/:id?note=`` or ``PUT /v1/agent/check/update/:id``
with ``{"Status", "Output"}`` (``agent/agent_endpoint.go`` ``AgentCheckUpdate``); the
note or output is kept as the check's output, cut at Consul's 4 KiB.

``/v1/agent/health/service/name/:name`` and ``.../id/:id`` answer with the aggregate
status of the service's checks and the node's (Consul's ``ChecksForService(id, true)``)
in the HTTP code too — 200 passing, 429 warning, 503 critical — so a load
balancer can probe them directly (Consul 1.2.3+); ``?format=text`` gives just the word.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from meshlite._core.catalog import Record
from meshlite._health import Status, TTLCheck, worst
from meshlite._http import agent_check_register, shapes
from meshlite._http.blocking import json_response
from meshlite._http.context import Api, api_of
from meshlite._http.errors import HttpError, read_json_object, reject_unsupported, show

__all__ = ["routes"]

# Consul's check_output_max_size default: longer notes and outputs are cut.
MAX_OUTPUT_CHARS = 4096
_STATUS_CODES = {Status.PASSING: 200, Status.WARNING: 429, Status.CRITICAL: 503}


def _ttl_check(api: Api, check_id: str) -> None:
    """404 for an unknown check, 400 for one that is not a TTL check."""
    spec = api.services.check_spec(check_id)
    if spec is None:
        raise HttpError(
            404,
            f'Unknown check ID "{check_id}". Ensure that the check ID is passed, '
            "not the check name.",
        )
    if not isinstance(spec, TTLCheck):
        raise HttpError(400, f'CheckID "{check_id}" does not have associated TTL')


def _update(api: Api, check_id: str, status: Status, output: str) -> None:
    _ttl_check(api, check_id)
    note = output[:MAX_OUTPUT_CHARS]
    {
        Status.PASSING: api.mesh.ttl_pass,
        Status.WARNING: api.mesh.ttl_warn,
        Status.CRITICAL: api.mesh.ttl_fail,
    }[status](check_id, note)


def _ttl_route(status: Status) -> Any:
    async def endpoint(request: Request) -> Response:
        note = request.query_params.get("note", "")
        _update(api_of(request), request.path_params["check_id"], status, note)
        return Response(b"", 200)

    endpoint.__name__ = f"check_{status}"
    return endpoint


def _field(body: dict[str, Any], name: str) -> Any:
    """A body field matched case-insensitively (Go's JSON decoder); None when absent."""
    return next((v for k, v in body.items() if k.lower() == name.lower()), None)


async def check_update(request: Request) -> Response:
    body = await read_json_object(request, what='{"Status": ..., "Output": ...}')
    status, output = _field(body, "Status"), _field(body, "Output")
    if status not in tuple(Status):
        raise HttpError(400, f"Invalid check status: {show(status)}")
    if output is None:
        output = ""
    if not isinstance(output, str):
        raise HttpError(400, f"Invalid check output: must be a string, got {show(output)}")
    _update(api_of(request), request.path_params["check_id"], Status(status), output)
    return Response(b"", 200)


async def checks(request: Request) -> Response:
    api = api_of(request)
    reject_unsupported(request, api.datacenter)
    view = api.view()
    out = {c.check_id: shapes.check(c) for c in view.node_checks(view.local_node)}
    for record in view.local_records():
        for c in view.service_checks(record):
            out[c.check_id] = shapes.check(c)
    return json_response(request, out)


# ------------------------------------------------------------------------------ health


def _health(api: Api, record: Record) -> tuple[Status, dict[str, Any]]:
    view = api.view()
    found = [*view.node_checks(view.local_node), *view.service_checks(record)]
    status = worst(Status(c.status) for c in found)
    body = {
        "AggregatedStatus": str(status),
        "Service": shapes.agent_service(record, api.datacenter),
        "Checks": [shapes.check(c) for c in found],
    }
    return status, body


def _answer(request: Request, status: Status, body: Any) -> Response:
    if request.query_params.get("format") == "text":
        return PlainTextResponse(str(status), _STATUS_CODES[status])
    return json_response(request, body, _STATUS_CODES[status])


async def health_by_name(request: Request) -> Response:
    api = api_of(request)
    name = request.path_params["name"]
    records = [r for r in api.view().local_records() if r.name == name]
    if not records:
        raise HttpError(404, f"ServiceName {name} Not Found")
    results = [_health(api, r) for r in records]
    status = worst(s for s, _b in results)
    return _answer(request, status, [b for _s, b in results])


async def health_by_id(request: Request) -> Response:
    api = api_of(request)
    service_id = request.path_params["service_id"]
    record = api.view().local_record(service_id)
    if record is None:
        raise HttpError(404, f"ServiceId {service_id} Not Found")
    status, body = _health(api, record)
    return _answer(request, status, body)


def routes() -> list[Route]:
    ttl = [
        Route(f"/v1/agent/check/{verb}/{{check_id}}", _ttl_route(status), methods=["PUT"])
        for verb, status in (
            ("pass", Status.PASSING),
            ("warn", Status.WARNING),
            ("fail", Status.CRITICAL),
        )
    ]
    return [
        Route("/v1/agent/checks", checks, methods=["GET"]),
        *agent_check_register.routes(),
        *ttl,
        Route("/v1/agent/check/update/{check_id}", check_update, methods=["PUT"]),
        Route("/v1/agent/health/service/name/{name}", health_by_name, methods=["GET"]),
        Route("/v1/agent/health/service/id/{service_id}", health_by_id, methods=["GET"]),
    ]
