"""``/v1/agent/*``: this peer itself — its member record, its services, leaving.

Theory of operation
-------------------
Consul's agent endpoints (``agent/agent_endpoint.go``) act on the local agent only; so do
ours, on the running :class:`~meshlite.Mesh`.  ``PUT /v1/agent/service/register`` takes
Consul's body — ``Name``, ``ID``, ``Tags``, ``Address``, ``Port``, ``Meta``,
``Check``/``Checks`` — matched case-insensitively as Go's JSON decoder does (py-consul
sends ``name``, ``checks``), and hands it to the same parser the agent's config files use
(``_agent_services.parse_services``), so a definition means the same in a file, over
HTTP and in Python — with one exception: a script check (``Args``) is refused over HTTP,
as Consul refuses it unless ``enable_script_checks`` is on, because registering one means
running a program of the caller's choosing on this host (remote code execution for
anyone who can reach the port).  Script checks come from the agent's own config files.
Fields that change nothing here (``Weights``, ``EnableTagOverride``, ``TaggedAddresses``,
a check's ``Notes``) are accepted and dropped; anything meshlite cannot honour
(``Connect``, a non-empty ``Kind``, other check kinds) is a 400 that says so.

Check endpoints are in ``agent_checks.py`` and ``agent_check_register.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from meshlite import __version__
from meshlite._agent_parse import BadValueError
from meshlite._agent_services import ServiceDefinition, parse_services
from meshlite._health import CheckSpec, ScriptCheck
from meshlite._http import shapes
from meshlite._http.blocking import json_response
from meshlite._http.context import api_of
from meshlite._http.errors import HttpError, read_json_object, reject_unsupported, show
from meshlite.errors import ConfigError

__all__ = ["parse_registration", "refuse_script_checks", "routes", "squash"]

# Keys (lower case, without underscores) accepted and ignored: they change nothing here.
_IGNORED_SERVICE_KEYS = frozenset({"weights", "enabletagoverride", "taggedaddresses"})
_IGNORED_CHECK_KEYS = frozenset({"notes"})


def squash(key: str) -> str:
    """A body key as compared with known ones: lower case, without underscores."""
    return key.replace("_", "").lower()


def _without(table: dict[str, Any], ignored: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in table.items() if squash(k) not in ignored}


def _cleaned(body: dict[str, Any]) -> dict[str, Any]:
    """The body without the ignored keys (its checks' too); ``Kind`` must be empty."""
    out = _without(body, _IGNORED_SERVICE_KEYS)
    for key in [k for k in out if squash(k) == "kind"]:
        if out.pop(key) not in ("", None):
            raise HttpError(400, f"Invalid service: Kind {show(body[key])} is not supported "
                            "by meshlite (plain services only)")  # fmt: skip
    for key, value in list(out.items()):
        if squash(key) == "check" and isinstance(value, dict):
            out[key] = _without(value, _IGNORED_CHECK_KEYS)
        elif squash(key) == "checks" and isinstance(value, list):
            out[key] = [_without(c, _IGNORED_CHECK_KEYS) if isinstance(c, dict) else c
                        for c in value]  # fmt: skip
    return out


def parse_registration(body: dict[str, Any]) -> ServiceDefinition:
    """Consul's service registration body -> a definition; ``HttpError(400)`` if bad."""
    try:
        [definition] = parse_services("service", _cleaned(body), "request body")
    except BadValueError as exc:
        path = (exc.setting or "service").removeprefix("service").lstrip(".")
        raise HttpError(400, f"Invalid service: {path or 'the body'} {exc}") from None
    refuse_script_checks(definition.checks)
    return definition


def refuse_script_checks(checks: Iterable[CheckSpec]) -> None:
    """``HttpError(400)`` for a script check: never run a program a client names."""
    if any(isinstance(c, ScriptCheck) for c in checks):
        raise HttpError(
            400,
            "Invalid check: script checks (Args) cannot be registered over HTTP, which would "
            "let any client run programs on this host; define them in the agent's config "
            "files (Consul's enable_local_script_checks)",
        )


# ------------------------------------------------------------------------------ handlers


async def agent_self(request: Request) -> Response:
    api = api_of(request)
    mesh = api.mesh
    me = next(m for m in mesh.members() if m.name == mesh.name)
    stats = {"meshlite": {k: str(v) for k, v in sorted(mesh.stats.items())}}
    config = {
        "Datacenter": api.datacenter,
        "PrimaryDatacenter": api.datacenter,
        "NodeName": mesh.name,
        "NodeID": shapes.node_id(mesh.name),
        "Server": mesh.server,
        "Revision": "",
        "Version": __version__,
        "BuildDate": "",
    }
    body = {"Config": config, "Member": shapes.member(me), "Meta": dict(me.meta), "Stats": stats}
    return json_response(request, body)


async def members(request: Request) -> Response:
    api = api_of(request)
    reject_unsupported(request, api.datacenter)
    return json_response(request, [shapes.member(m) for m in api.mesh.members()])


async def services(request: Request) -> Response:
    api = api_of(request)
    reject_unsupported(request, api.datacenter)
    view = api.view()
    body = {r.id: shapes.agent_service(r, api.datacenter) for r in view.local_records()}
    return json_response(request, body)


async def service(request: Request) -> Response:
    api = api_of(request)
    service_id = request.path_params["service_id"]
    if service_id == "register":  # Consul's exact route wins: GET on it is a wrong method
        raise HttpError(405, f"method {request.method} not allowed", {"Allow": "PUT"})
    record = api.view().local_record(service_id)
    if record is None:
        raise HttpError(404, f"unknown service ID: {service_id}")
    body = shapes.agent_service(record, api.datacenter)
    body["ContentHash"] = shapes.content_hash(body)
    return json_response(request, body)


async def register(request: Request) -> Response:
    api = api_of(request)
    body = await read_json_object(request, what="a service definition")
    d = parse_registration(body)
    try:
        await api.mesh.register(d.name, d.port, **d.register_kwargs())
    except ConfigError as exc:  # what registration itself refuses (sizes, address)
        raise HttpError(400, f"Invalid service: {exc}") from None
    return Response(b"", 200)


async def deregister(request: Request) -> Response:
    api = api_of(request)
    service_id = request.path_params["service_id"]
    if api.view().local_record(service_id) is None:
        raise HttpError(
            404,
            f'Unknown service ID "{service_id}". Ensure that the service ID is passed, '
            "not the service name.",
        )
    await api.mesh.deregister(service_id)
    return Response(b"", 200)


async def leave(request: Request) -> Response:
    api = api_of(request)
    await api.mesh.leave()  # the agent command exits on it (Mesh.wait_left)
    return Response(b"", 200)


def routes() -> list[Route]:
    return [
        Route("/v1/agent/self", agent_self, methods=["GET"]),
        Route("/v1/agent/members", members, methods=["GET"]),
        Route("/v1/agent/services", services, methods=["GET"]),
        Route("/v1/agent/service/register", register, methods=["PUT"]),
        Route("/v1/agent/service/deregister/{service_id}", deregister, methods=["PUT"]),
        Route("/v1/agent/service/{service_id}", service, methods=["GET"]),
        Route("/v1/agent/leave", leave, methods=["PUT"]),
    ]
