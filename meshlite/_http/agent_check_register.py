"""``PUT /v1/agent/check/register`` and ``PUT /v1/agent/check/deregister/:check_id``.

Theory of operation
-------------------
Consul's ``AgentRegisterCheck`` and ``AgentDeregisterCheck`` (``agent/agent_endpoint.go``)
add one check to the local agent and remove one.  The body is Consul's
``CheckDefinition``: ``Name`` (required: ``Missing check name`` otherwise), ``ID`` or
``CheckID`` (default: the name), ``ServiceID`` (a service registered on this peer, or a
400 ``ServiceID "..." does not exist``), ``Notes`` (accepted and dropped), and the check
itself — ``TTL``, ``HTTP`` (``Method``, ``Header``, ``Body``, ``TLSSkipVerify``), ``TCP``,
with ``Interval``, ``Timeout``, ``Status``, ``DeregisterCriticalServiceAfter`` and the
thresholds.  Keys match in any letter case (py-consul sends ``name``, ``serviceid``), and
the check is read by the parser that reads a service's checks and the agent's config
files (``_agent_services.parse_check_definition``), so it means the same everywhere.  A
script check (``Args``) is refused exactly as service registration refuses it.

Without a ``ServiceID`` the check is a *node check* (``_services.py``): its status counts
in every service of this peer, so a critical one takes them all out of every peer's
``?passing``, DNS and discovery.  Re-registering an id replaces that check.  Deregister
takes any check of this peer — a node check, one registered with a ``ServiceID``, or a
service's own (``service:web-1``, as Consul allows); an unknown id is a 404.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from meshlite._agent_parse import BadValueError
from meshlite._agent_services import CheckDefinition, parse_check_definition
from meshlite._http.agent import refuse_script_checks, squash
from meshlite._http.context import api_of
from meshlite._http.errors import HttpError, read_json_object, show
from meshlite.errors import ConfigError

__all__ = ["parse_check_registration", "routes"]

# Keys (lower case, without underscores) accepted and ignored: they change nothing here.
_IGNORED_KEYS = frozenset({"notes"})


def parse_check_registration(body: dict[str, Any]) -> CheckDefinition:
    """Consul's check definition body -> a definition; ``HttpError(400)`` if bad."""
    cleaned = {k: v for k, v in body.items() if squash(str(k)) not in _IGNORED_KEYS}
    if all(v == "" for k, v in cleaned.items() if squash(str(k)) == "name"):  # none, or ""
        raise HttpError(400, "Missing check name")
    try:
        definition = parse_check_definition(cleaned, "check")
    except BadValueError as exc:
        path = (exc.setting or "check").removeprefix("check").lstrip(".")
        raise HttpError(400, f"Invalid check: {path or 'the body'} {exc}") from None
    refuse_script_checks([definition.check])
    return definition


async def register(request: Request) -> Response:
    api = api_of(request)
    body = await read_json_object(request, what="a check definition")
    d = parse_check_registration(body)
    if d.service_id is not None and api.view().local_record(d.service_id) is None:
        raise HttpError(400, f"ServiceID {show(d.service_id)} does not exist")
    try:
        await api.mesh.register_check(d.check, **d.register_kwargs())
    except ConfigError as exc:  # what registration itself refuses
        raise HttpError(400, f"Invalid check: {exc}") from None
    return Response(b"", 200)


async def deregister(request: Request) -> Response:
    api = api_of(request)
    check_id = request.path_params["check_id"]
    if not api.services.has_check(check_id):
        raise HttpError(
            404,
            f'Unknown check ID "{check_id}". Ensure that the check ID is passed, '
            "not the check name.",
        )
    await api.mesh.deregister_check(check_id)
    return Response(b"", 200)


def routes() -> list[Route]:
    return [
        Route("/v1/agent/check/register", register, methods=["PUT"]),
        Route("/v1/agent/check/deregister/{check_id}", deregister, methods=["PUT"]),
    ]
