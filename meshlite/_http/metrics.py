"""``GET /v1/agent/metrics``: this peer's metrics, as Consul serves them.

Theory of operation
-------------------
Consul answers ``/v1/agent/metrics`` with its telemetry in JSON (``Gauges``,
``Counters``, ...) and, with ``?format=prometheus``, in Prometheus's text exposition
format.  Ours does the same from ``meshlite._metrics`` (which reads the counters the mesh
keeps anyway); a scrape is a read, so it needs the token only with ``http_token_reads``.
Added to the app with ``extra_routes``/``extra_openapi``, as the KV routes are.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from meshlite._http import openapi_schemas as s
from meshlite._http.blocking import json_response
from meshlite._http.context import api_of
from meshlite._http.errors import HttpError, show
from meshlite._http.openapi import _TEXT, _json, _op, _query, _response
from meshlite._metrics import collect, to_consul_json, to_prometheus

__all__ = ["PATHS", "PROMETHEUS_CONTENT_TYPE", "routes"]

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_FORMATS = ("", "prometheus")


async def metrics(request: Request) -> Response:
    fmt = request.query_params.get("format", "")
    if fmt not in _FORMATS:
        raise HttpError(400, f"Invalid format {show(fmt)}: use format=prometheus, or none for JSON")
    samples = await collect(api_of(request).mesh)
    if fmt == "prometheus":
        return Response(to_prometheus(samples), media_type=PROMETHEUS_CONTENT_TYPE)
    return json_response(request, to_consul_json(samples))


def routes() -> list[Route]:
    return [Route("/v1/agent/metrics", metrics, methods=["GET"])]


_DOC = {
    "type": "object",
    "properties": {
        "Timestamp": s.STRING,
        "Gauges": s.array({"type": "object"}),
        "Points": s.array({"type": "object"}),
        "Counters": s.array({"type": "object"}),
        "Samples": s.array({"type": "object"}),
    },
    "required": ["Timestamp", "Gauges", "Counters"],
}

_FORMAT = _query(
    "format",
    {"type": "string", "enum": list(_FORMATS)},
    "prometheus: the text exposition format; none: JSON",
)

PATHS: dict[str, Any] = {
    "/v1/agent/metrics": {
        "get": _op(
            "this peer's metrics: gossip, members, services, Raft, KV (docs/operations.md)",
            _response(
                "Consul's JSON telemetry, or the Prometheus text format",
                {**_json(_DOC), "text/plain": _TEXT["text/plain"]},
            ),
            params=(_FORMAT,),
        )
    }
}
