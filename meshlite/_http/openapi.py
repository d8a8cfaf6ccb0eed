"""``/v1/openapi.json``: an OpenAPI 3.0 description of the routes meshlite serves.

Theory of operation
-------------------
Hand-written data, kept next to the handlers' behaviour rather than generated, so it
can say what generation cannot: which statuses each route really returns (400 with a
plain-text reason for bad input, 404 for unknown ids, 403 without the token, 413 for a
body over the limit), and Consul's field names.  Schemas allow additional properties in
responses (Consul adds fields over time; so may we) and describe request bodies by their
canonical CamelCase keys (the server also accepts other letter cases, as Consul does).
Schemathesis runs against this document: every status and shape listed here is a
promise the tests check.
"""

from __future__ import annotations

import copy
from typing import Any

from meshlite import __version__
from meshlite._http import openapi_schemas as s

__all__ = ["PATHS", "document"]

_TEXT = {"text/plain": {"schema": {"type": "string"}}}
_BLOCKING_HEADERS = {
    "X-Consul-Index": {"schema": {"type": "string", "pattern": "^[0-9]+$"}},
    "X-Consul-KnownLeader": {"schema": {"type": "string", "enum": ["true", "false"]}},
    "X-Consul-LastContact": {"schema": {"type": "string"}},
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


def _path(name: str, description: str, enum: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}
    if enum:
        schema = {"type": "string", "enum": list(enum)}
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": description,
    }


_STATES = ("any", "passing", "warning", "critical")
_FLAG = {"type": "string", "enum": ["", "true", "false", "1", "0"]}
_DC = _query("dc", {"type": "string"}, "must be this mesh's datacenter (its cluster label)")
_PRETTY = _query("pretty", {"type": "string"}, "indent the JSON (any value, even none)")
_INDEX = _query(
    "index",
    {"type": "integer", "minimum": 0, "maximum": 2**64 - 1},
    "block while this is the index",
)
_WAIT = _query(
    "wait",
    {"type": "string", "pattern": r"^(0|[0-9]{1,6}(ms|s|m))$"},
    "longest block (Go duration; default 5m, at most 10m, plus up to 1/16 jitter)",
)
_NODE_META = _query(
    "node-meta", {"type": "string", "pattern": "^[^:]+:.*$"}, "key:value the node's meta must hold"
)
_TAG = _query("tag", {"type": "string"}, "the service must carry this tag (repeatable)")
_PASSING = _query("passing", _FLAG, "only entries whose every check passes")
_KEY_BODY = {"required": True, "content": {"application/json": {"schema": s.ref("KeyringRequest")}}}


def _response(
    description: str, content: dict[str, Any] | None = None, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if content is not None:
        out["content"] = content
    if headers:
        out["headers"] = headers
    return out


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _op(
    summary: str,
    ok: dict[str, Any],
    *,
    params: tuple[dict[str, Any], ...] = (),
    body: dict[str, Any] | None = None,
    extra: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One operation: ``ok`` is the 200 response; 400/403/404/503 always, 413 with a body."""
    responses = {
        "200": ok,
        "400": _response("bad parameters or body; the reason as text", _TEXT),
        "403": _response("a token is configured and this request lacks it", _TEXT),
        # A path parameter such as ".." can make the URL another path, unknown: 404.
        "404": _response("no such path", _TEXT),
        "503": _response("the agent is shutting down", _TEXT),
        **(extra or {}),
    }
    if body is not None:
        responses["413"] = _response("the body is over 512 KiB", _TEXT)
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": [_PRETTY, *params],
        "responses": responses,
    }
    if body is not None:
        op["requestBody"] = body
    return op


def _read(
    summary: str,
    schema: dict[str, Any],
    *params: dict[str, Any],
    blocking: bool = False,
    dc: bool = False,
    not_found: str | None = None,
) -> dict[str, Any]:
    headers = _BLOCKING_HEADERS if blocking else None
    extra = {"404": _response(not_found, _TEXT)} if not_found else {}
    # Blocking reads, and the agent's lists, check ?dc= (and refuse ?filter=).
    both = (*((_DC,) if blocking or dc else ()), *params, *((_INDEX, _WAIT) if blocking else ()))
    return {"get": _op(summary, _response("OK", _json(schema), headers), params=both, extra=extra)}


def _write(
    summary: str,
    *,
    body: dict[str, Any] | None = None,
    not_found: str | None = None,
    params: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    extra = {"404": _response(not_found, _TEXT)} if not_found else {}
    return {
        "put": _op(summary, _response("done (empty body)"), params=params, body=body, extra=extra)
    }


def _agent_health(path_name: str, one: bool) -> dict[str, Any]:
    item = s.ref("AgentServiceHealth")
    schema = item if one else s.array(item)
    fmt = _query("format", {"type": "string"}, '"text": the status as text (else JSON)')
    answers = {
        "429": _response("warning (the same body)", {**_json(schema), **_TEXT}),
        "503": _response("critical (the same body)", {**_json(schema), **_TEXT}),
        "404": _response("no such service on this agent", _TEXT),
    }
    ok = _response("passing", {**_json(schema), **_TEXT})
    summary = "this agent's view of a service's health; the status code tells it too"
    return {"get": _op(summary, ok, params=(_path(path_name, "service"), fmt), extra=answers)}


def _ttl(verb: str) -> dict[str, Any]:
    note = _query("note", {"type": "string"}, "kept as the check's output")
    return _write(
        f"report a TTL check {verb}",
        not_found="unknown check id",
        params=(_path("check_id", "check id"), note),
    )


def _keyring() -> dict[str, Any]:
    relay = _query(
        "relay-factor",
        {"type": "integer", "minimum": 0, "maximum": 5},
        "accepted for Consul's clients; meshlite does not relay",
    )
    fail = {"500": _response("some member did not apply it; they are listed", _TEXT)}
    schema = s.array(s.ref("KeyringResponse"))
    out = {
        "get": _op(
            "list the gossip keys and how many members hold each",
            _response("OK", _json(schema)),
            params=(relay,),
        )
    }
    for method, what in (
        ("post", "install a key"),
        ("put", "make a key primary"),
        ("delete", "remove a key"),
    ):
        out[method] = _op(
            what, _response("done (empty body)"), params=(relay,), body=_KEY_BODY, extra=fail
        )
    return out


_REGISTRATION = {
    "required": True,
    "content": {"application/json": {"schema": s.ref("ServiceRegistration")}},
}
_CHECK_REGISTRATION = {
    "required": True,
    "content": {"application/json": {"schema": s.ref("CheckRegistration")}},
}
_CHECK_UPDATE = {
    "required": True,
    "content": {"application/json": {"schema": s.ref("CheckUpdate")}},
}
_SERVICE_ID = _path("service_id", "service id")

PATHS: dict[str, Any] = {
    "/v1/agent/self": _read("this agent's configuration and member record", s.ref("AgentSelf")),
    "/v1/agent/members": _read(
        "the gossip members this agent sees", s.array(s.ref("Member")), dc=True
    ),
    "/v1/agent/services": _read(
        "services registered on this agent", s.mapping(s.ref("AgentService")), dc=True
    ),
    "/v1/agent/service/{service_id}": _read(
        "one service registered on this agent",
        s.ref("AgentServiceDetail"),
        _SERVICE_ID,
        not_found="unknown service id",
    ),
    "/v1/agent/service/register": _write("register (or replace) a service", body=_REGISTRATION),
    "/v1/agent/service/deregister/{service_id}": _write(
        "deregister a service of this agent", not_found="unknown service id", params=(_SERVICE_ID,)
    ),
    "/v1/agent/checks": _read(
        "checks of this agent: its node checks and its services'",
        s.mapping(s.ref("HealthCheck")),
        dc=True,
    ),
    "/v1/agent/check/register": _write(
        "register (or replace) a check: of a service of this agent with ServiceID, else of "
        "the node",
        body=_CHECK_REGISTRATION,
    ),
    "/v1/agent/check/deregister/{check_id}": _write(
        "deregister a check of this agent (a node check, or any check of a service)",
        not_found="unknown check id",
        params=(_path("check_id", "check id"),),
    ),
    "/v1/agent/check/pass/{check_id}": _ttl("passing"),
    "/v1/agent/check/warn/{check_id}": _ttl("warning"),
    "/v1/agent/check/fail/{check_id}": _ttl("critical"),
    "/v1/agent/check/update/{check_id}": _write(
        "set a TTL check's status and output",
        body=_CHECK_UPDATE,
        not_found="unknown check id",
        params=(_path("check_id", "check id"),),
    ),
    "/v1/agent/health/service/name/{name}": _agent_health("name", one=False),
    "/v1/agent/health/service/id/{service_id}": _agent_health("service_id", one=True),
    "/v1/agent/leave": _write("leave the mesh gracefully (the agent command then exits)"),
    "/v1/catalog/services": _read(
        "service names and their tags", s.mapping(s.array(s.STRING)), _NODE_META, blocking=True
    ),
    "/v1/catalog/service/{name}": _read(
        "instances of a service",
        s.array(s.ref("CatalogService")),
        _path("name", "service name"),
        _TAG,
        _NODE_META,
        blocking=True,
    ),
    "/v1/catalog/nodes": _read("nodes", s.array(s.ref("Node")), _NODE_META, blocking=True),
    "/v1/catalog/node/{node}": _read(
        "a node and its services (null when unknown)",
        s.ref("CatalogNode", nullable=True),
        _path("node", "node name"),
        blocking=True,
    ),
    "/v1/health/service/{name}": _read(
        "instances of a service with their node and checks",
        s.array(s.ref("ServiceEntry")),
        _path("name", "service name"),
        _PASSING,
        _TAG,
        _NODE_META,
        blocking=True,
    ),
    "/v1/health/checks/{service}": _read(
        "checks of a service's instances",
        s.array(s.ref("HealthCheck")),
        _path("service", "service name"),
        _NODE_META,
        blocking=True,
    ),
    "/v1/health/node/{node}": _read(
        "checks of a node, serfHealth first",
        s.array(s.ref("HealthCheck")),
        _path("node", "node name"),
        blocking=True,
    ),
    "/v1/health/state/{state}": _read(
        "checks in a state (any, passing, warning, critical)",
        s.array(s.ref("HealthCheck")),
        _path("state", "any, passing, warning or critical", enum=_STATES),
        _NODE_META,
        blocking=True,
    ),
    "/v1/status/leader": _read('the Raft leader\'s address; "" without one', s.STRING),
    "/v1/status/peers": _read("the Raft peers' addresses", s.array(s.STRING)),
    "/v1/operator/keyring": _keyring(),
    "/v1/openapi.json": _read("this document", {"type": "object"}),
}


def _with_datacenter(paths: dict[str, Any], datacenter: str) -> dict[str, Any]:
    """``paths`` with ``?dc=`` limited to the one datacenter this mesh answers for."""
    out = copy.deepcopy(paths)
    for ops in out.values():
        for op in ops.values():
            for param in op.get("parameters", ()):
                if param["name"] == "dc" and param["in"] == "query":
                    param["schema"] = {"type": "string", "enum": ["", datacenter]}
    return out


def document(paths: dict[str, Any], datacenter: str) -> dict[str, Any]:
    """The whole OpenAPI document for ``paths`` (these and any later modules')."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "meshlite HTTP API (Consul-compatible)",
            "version": __version__,
            "description": "Consul's paths, JSON field names and status codes; see "
            "docs/http-api.md for what differs.",
        },
        "paths": _with_datacenter(paths, datacenter),
        "components": {"schemas": s.SCHEMAS, "securitySchemes": s.SECURITY_SCHEMES},
        "security": [{}, {"ConsulToken": []}, {"BearerToken": []}],
    }
