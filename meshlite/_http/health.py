"""``/v1/health/*``: services with their checks, checks by service, node and state.

Theory of operation
-------------------
Consul's health endpoints (``agent/health_endpoint.go``) join the catalog with health
checks; a service entry is ``{Node, Service, Checks}``, and ``Checks`` always starts with
the node's gossip check ``serfHealth`` — passing while the member is alive (or merely
suspected), critical once it has failed — followed by the node's other checks (this
peer's node checks) and the service's own.  ``?passing`` keeps only entries whose every
check passes, so a failed node's services drop out of it exactly when failure detection
says so.  Which checks a service shows is :mod:`meshlite._http.view`'s business (real
ones on this peer, the aggregate for another peer's).

All four endpoints are blocking queries (``blocking.py``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from meshlite._health import Status
from meshlite._http import shapes
from meshlite._http.blocking import blocking_json
from meshlite._http.catalog import meta_matches, tags_match
from meshlite._http.context import api_of
from meshlite._http.errors import HttpError, query_bool, query_node_meta, reject_unsupported, show
from meshlite._http.view import CheckInfo, View

__all__ = ["routes"]

_STATES = ("any", *(str(s) for s in Status))


async def service(request: Request) -> Response:
    api = api_of(request)
    reject_unsupported(request, api.datacenter)
    name = request.path_params["name"]
    passing = query_bool(request, "passing")
    tags = request.query_params.getlist("tag")
    node_meta = query_node_meta(request)

    def render(view: View) -> list[dict[str, Any]]:
        nodes = view.nodes()
        out = []
        for r in view.records(name):
            n = nodes[r.node]
            if not tags_match(r, tags) or not meta_matches(n, node_meta):
                continue
            checks = view.entry_checks(n, r)
            if passing and any(c.status != Status.PASSING for c in checks):
                continue
            out.append(shapes.health_entry(n, r, checks, api.datacenter))
        return out

    return await blocking_json(request, render)


async def service_checks(request: Request) -> Response:
    api = api_of(request)
    reject_unsupported(request, api.datacenter)
    name = request.path_params["service"]
    node_meta = query_node_meta(request)

    def render(view: View) -> list[dict[str, Any]]:
        nodes = view.nodes()
        return [
            shapes.check(c)
            for r in view.records(name)
            if meta_matches(nodes[r.node], node_meta)
            for c in view.service_checks(r)
        ]

    return await blocking_json(request, render)


async def node(request: Request) -> Response:
    api = api_of(request)
    reject_unsupported(request, api.datacenter)
    name = request.path_params["node"]

    def render(view: View) -> list[dict[str, Any]]:
        found = view.nodes().get(name)
        return [] if found is None else [shapes.check(c) for c in view.checks_of_node(found)]

    return await blocking_json(request, render)


def _all_checks(view: View) -> list[CheckInfo]:
    nodes = view.nodes()
    out = [c for n in nodes.values() for c in (view.serf_check(n), *view.node_checks(n.name))]
    for r in view.records():
        out.extend(view.service_checks(r))
    return sorted(out, key=lambda c: (c.node, c.check_id))


async def state(request: Request) -> Response:
    api = api_of(request)
    reject_unsupported(request, api.datacenter)
    wanted = request.path_params["state"]
    if wanted not in _STATES:
        raise HttpError(400, f"Invalid check state {show(wanted)}: use {', '.join(_STATES)}")
    node_meta = query_node_meta(request)

    def render(view: View) -> list[dict[str, Any]]:
        nodes = view.nodes()
        return [
            shapes.check(c)
            for c in _all_checks(view)
            if wanted in ("any", c.status) and meta_matches(nodes[c.node], node_meta)
        ]

    return await blocking_json(request, render)


def routes() -> list[Route]:
    return [
        Route("/v1/health/service/{name}", service, methods=["GET"]),
        Route("/v1/health/checks/{service}", service_checks, methods=["GET"]),
        Route("/v1/health/node/{node}", node, methods=["GET"]),
        Route("/v1/health/state/{state}", state, methods=["GET"]),
    ]
