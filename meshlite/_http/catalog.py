"""``/v1/catalog/*``: every node and service of the mesh, from this peer's copy.

Theory of operation
-------------------
Consul's catalog endpoints (``agent/catalog_endpoint.go``) list what the servers have
registered, health aside: a failed node and its services stay listed until reaped.
Ours read the replicated catalog through :class:`~meshlite._http.view.View`, which keeps
the same rule (a failed member stays, one that left does not).  Every endpoint is a
blocking query (``blocking.py``) with ``X-Consul-Index``; filters are Consul's:
``?tag=`` (repeatable: all must match) and ``?node-meta=key:value``.  ``?filter=``
expressions are refused with a 400 rather than silently ignored.

``GET /v1/catalog/node/:node`` for an unknown node answers ``null`` with 200, as Consul
does (py-consul turns it into ``None``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from meshlite._core.catalog import Record
from meshlite._http import shapes
from meshlite._http.blocking import blocking_json
from meshlite._http.context import api_of
from meshlite._http.errors import query_node_meta, reject_unsupported
from meshlite._http.view import NodeInfo, View

__all__ = ["meta_matches", "routes", "tags_match"]


def meta_matches(node: NodeInfo, wanted: Mapping[str, str]) -> bool:
    return all(node.meta.get(k) == v for k, v in wanted.items())


def tags_match(record: Record, tags: list[str]) -> bool:
    return all(t in record.tags for t in tags)


async def services(request: Request) -> Response:
    api = api_of(request)
    reject_unsupported(request, api.datacenter)
    node_meta = query_node_meta(request)

    def render(view: View) -> dict[str, list[str]]:
        nodes = view.nodes()
        out: dict[str, set[str]] = {}
        for r in view.records():
            if meta_matches(nodes[r.node], node_meta):
                out.setdefault(r.name, set()).update(r.tags)
        return {name: sorted(tags) for name, tags in sorted(out.items())}

    return await blocking_json(request, render)


async def service(request: Request) -> Response:
    api = api_of(request)
    reject_unsupported(request, api.datacenter)
    name = request.path_params["name"]
    tags = request.query_params.getlist("tag")
    node_meta = query_node_meta(request)

    def render(view: View) -> list[dict[str, Any]]:
        nodes = view.nodes()
        return [
            shapes.catalog_service(nodes[r.node], r, api.datacenter)
            for r in view.records(name)
            if tags_match(r, tags) and meta_matches(nodes[r.node], node_meta)
        ]

    return await blocking_json(request, render)


async def nodes(request: Request) -> Response:
    api = api_of(request)
    reject_unsupported(request, api.datacenter)
    node_meta = query_node_meta(request)

    def render(view: View) -> list[dict[str, Any]]:
        return [
            shapes.node(n, api.datacenter)
            for n in view.nodes().values()
            if meta_matches(n, node_meta)
        ]

    return await blocking_json(request, render)


async def node(request: Request) -> Response:
    api = api_of(request)
    reject_unsupported(request, api.datacenter)
    name = request.path_params["node"]

    def render(view: View) -> dict[str, Any] | None:
        found = view.nodes().get(name)
        if found is None:
            return None
        listed = (r for r in view.records() if r.node == name)
        return {
            "Node": shapes.node(found, api.datacenter),
            "Services": {r.id: shapes.agent_service(r, api.datacenter) for r in listed},
        }

    return await blocking_json(request, render)


def routes() -> list[Route]:
    return [
        Route("/v1/catalog/services", services, methods=["GET"]),
        Route("/v1/catalog/service/{name}", service, methods=["GET"]),
        Route("/v1/catalog/nodes", nodes, methods=["GET"]),
        Route("/v1/catalog/node/{node}", node, methods=["GET"]),
    ]
