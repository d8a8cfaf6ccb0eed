"""``/v1/openapi.json`` tells the truth: every route is described, every described route
exists, and live answers match the documented status codes and JSON schemas."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
import pytest
from http_served import client, served

import meshlite
from meshlite import Mesh

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _json_schema(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable`` as JSON Schema's ``null`` type."""
    if isinstance(node, list):
        return [_json_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _json_schema(v) for k, v in node.items() if k != "nullable"}
    return {"anyOf": [{"type": "null"}, out]} if node.get("nullable") else out


class Checker:
    """Validates live responses against the document the server itself serves."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.doc = document
        self.components = _json_schema(document["components"])
        self.seen: set[tuple[str, str]] = set()

    def check(self, template: str, r: httpx.Response) -> None:
        method = r.request.method.lower()
        op = self.doc["paths"][template][method]
        status = str(r.status_code)
        where = f"{method.upper()} {r.request.url}: {status} {r.text[:200]}"
        assert status in op["responses"], f"undocumented status: {where}"
        self.seen.add((template, method))
        content = op["responses"][status].get("content")
        if content is None:
            assert r.content == b"", where
            return
        kind = r.headers["content-type"].split(";")[0]
        assert kind in content, f"undocumented content type {kind}: {where}"
        if kind == "application/json":
            jsonschema.validate(r.json(), self._schema(content[kind]["schema"]))

    def body_is_valid(self, template: str, method: str, body: Any) -> bool:
        op = self.doc["paths"][template][method]
        schema = self._schema(op["requestBody"]["content"]["application/json"]["schema"])
        return jsonschema.Draft202012Validator(schema).is_valid(body)

    def _schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {**_json_schema(schema), "components": self.components}


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    from starlette.routing import Route

    from meshlite._http import openapi
    from meshlite._http.app import build_app

    class _Api:  # build_app reads only these
        token, token_reads, datacenter = None, False, "dc1"

    app = build_app(_Api())  # type: ignore[arg-type]
    served_ops = {
        (r.path, m.lower())
        for r in app.routes
        if isinstance(r, Route)
        for m in (r.methods or ())
        if m != "HEAD"
    }
    documented = {(p, m) for p, ops in openapi.PATHS.items() for m in ops}
    assert served_ops == documented


def test_every_store_route_is_documented_and_every_documented_one_exists() -> None:
    from meshlite._http.kv import store_routes
    from meshlite._http.kv_openapi import PATHS

    served_ops = {
        (r.path.replace("{key:path}", "{key}"), m.lower())
        for r in store_routes()
        for m in (r.methods or ())
        if m != "HEAD"
    }
    assert served_ops == {(p, m) for p, ops in PATHS.items() for m in ops}


async def test_live_answers_match_the_document(anyio_backend: str) -> None:
    key = meshlite.generate_key()
    server = {"server": True, "bootstrap_expect": 1}
    async with served("a", key=key, **server) as (mesh, url), client(url) as http:
        async with Mesh("b", "127.0.0.1:0", join=[mesh.address], key=key, profile="local") as b:
            await b.register("cache", 6379, id="cache-1", tags=["x"])
            doc = (await http.get("/v1/openapi.json")).json()
            assert doc["openapi"].startswith("3.0")
            c = Checker(doc)
            await exercise_store(http, c)
            await exercise(http, c, key)
            missing = {(p, m) for p, ops in doc["paths"].items() for m in ops} - c.seen
            assert not missing, f"not exercised: {sorted(missing)}"


async def exercise(http: httpx.AsyncClient, c: Checker, key: str) -> None:
    async def call(template: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        r = await http.request(method, path, **kwargs)
        c.check(template, r)
        return r

    registration = {
        "Name": "web",
        "ID": "web-1",
        "Port": 80,
        "Tags": ["v1"],
        "Check": {"TTL": "30s", "Notes": "ignored"},
        "Weights": {"Passing": 2},
    }
    register = "/v1/agent/service/register"
    assert c.body_is_valid(register, "put", registration)
    for bad in ({"Name": 1}, {"Name": "x", "Check": {"Args": ["true"], "Interval": "1s"}},
                {"Name": "x", "Check": {"TTL": "1s", "Interval": "1s"}}):  # fmt: skip
        assert not c.body_is_valid(register, "put", bad), bad
    assert (await call(register, "PUT", register, json=registration)).status_code == 200
    assert (await call(register, "PUT", register, json={"Name": 1})).status_code == 400
    for verb in ("warn", "fail", "pass"):
        template = f"/v1/agent/check/{verb}/{{check_id}}"
        await call(template, "PUT", f"/v1/agent/check/{verb}/service:web-1?note=n")
        await call(template, "PUT", f"/v1/agent/check/{verb}/nope")
    update = {"Status": "passing", "Output": "ok"}
    await call("/v1/agent/check/update/{check_id}", "PUT",
               "/v1/agent/check/update/service:web-1", json=update)  # fmt: skip
    check_register = "/v1/agent/check/register"
    node_check = {"Name": "disk", "TTL": "1m", "Status": "passing", "Notes": "n"}
    service_check = {"Name": "api", "ID": "web-api", "ServiceID": "web-1", "HTTP": "http://x/",
                     "Interval": "1m", "Body": "{}", "TLSSkipVerify": True}  # fmt: skip
    for good in (node_check, service_check):
        assert c.body_is_valid(check_register, "put", good), good
        assert (await call(check_register, "PUT", check_register, json=good)).status_code == 200
    for bad in ({"TTL": "1s"}, {"Name": "x", "Args": ["true"], "Interval": "1s"},
                {"Name": "x", "TTL": "1s", "Interval": "1s"}):  # fmt: skip
        assert not c.body_is_valid(check_register, "put", bad), bad
        assert (await call(check_register, "PUT", check_register, json=bad)).status_code == 400
    check_deregister = "/v1/agent/check/deregister/{check_id}"
    await call(check_deregister, "PUT", "/v1/agent/check/deregister/web-api")
    gone = await call(check_deregister, "PUT", "/v1/agent/check/deregister/web-api")
    assert gone.status_code == 404
    for template, paths in READS.items():
        for path in paths:
            await call(template, "GET", path)
    keyring = "/v1/operator/keyring"
    await call(keyring, "POST", keyring, json={"Key": key})
    await call(keyring, "PUT", keyring, json={"Key": key})
    removal = await call(keyring, "DELETE", keyring, json={"Key": key})
    assert removal.status_code == 400  # the primary key cannot be removed
    deregister = "/v1/agent/service/deregister/{service_id}"
    assert (await call(deregister, "PUT", deregister.format(service_id="web-1"))).is_success
    gone = await call(deregister, "PUT", deregister.format(service_id="web-1"))
    assert gone.status_code == 404
    await call("/v1/agent/leave", "PUT", "/v1/agent/leave")


async def exercise_store(http: httpx.AsyncClient, c: Checker) -> None:
    """Every KV, txn and session route, with their 200, 404, 409 and 400 answers."""

    async def call(template: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        r = await http.request(method, path, **kwargs)
        c.check(template, r)
        return r

    kv = "/v1/kv/{key}"
    assert (await call(kv, "PUT", "/v1/kv/cfg?flags=3", content=b"v")).json() is True
    assert (await call(kv, "PUT", "/v1/kv/cfg?cas=1", content=b"w")).json() is False
    assert (await call(kv, "PUT", "/v1/kv/cfg?flags=x")).status_code == 400
    reads = ["/v1/kv/cfg", "/v1/kv/cfg?raw", "/v1/kv/?recurse", "/v1/kv/?keys", "/v1/kv/nope",
             "/v1/kv/cfg?index=1&wait=50ms&stale", "/v1/kv/cfg?raw=x"]  # fmt: skip
    for path in reads:
        await call(kv, "GET", path)
    assert (await call(kv, "GET", "/v1/kv/nope")).status_code == 404
    create = {"Name": "s", "TTL": "30s", "LockDelay": "1s"}
    made = await call("/v1/session/create", "PUT", "/v1/session/create", json=create)
    session = made.json()["ID"]
    await call("/v1/session/create", "PUT", "/v1/session/create", json={"TTL": "1s"})
    await call(kv, "PUT", f"/v1/kv/lock?acquire={session}")
    ops = [{"KV": {"Verb": "get", "Key": "cfg"}}, {"KV": {"Verb": "set", "Key": "t", "Value": ""}}]
    assert (await call("/v1/txn", "PUT", "/v1/txn", json=ops)).status_code == 200
    failing = [{"KV": {"Verb": "check-index", "Key": "cfg", "Index": 1}}]
    assert (await call("/v1/txn", "PUT", "/v1/txn", json=failing)).status_code == 409
    assert (await call("/v1/txn", "PUT", "/v1/txn", json=[{"KV": {}}] * 65)).status_code == 413
    for template, path in (
        ("/v1/session/info/{id}", f"/v1/session/info/{session}"),
        ("/v1/session/info/{id}", "/v1/session/info/nope"),
        ("/v1/session/list", "/v1/session/list"),
        ("/v1/session/node/{node}", "/v1/session/node/a?consistent"),
    ):
        await call(template, "GET", path)
    await call("/v1/session/renew/{id}", "PUT", f"/v1/session/renew/{session}")
    assert (await call(kv, "DELETE", "/v1/kv/?recurse")).json() is True
    await call("/v1/session/destroy/{id}", "PUT", f"/v1/session/destroy/{session}")
    gone = await call("/v1/session/renew/{id}", "PUT", f"/v1/session/renew/{session}")
    assert gone.status_code == 404


READS: dict[str, list[str]] = {
    "/v1/agent/self": ["/v1/agent/self"],
    "/v1/agent/members": ["/v1/agent/members", "/v1/agent/members?filter=x"],
    "/v1/agent/services": ["/v1/agent/services"],
    "/v1/agent/service/{service_id}": ["/v1/agent/service/web-1", "/v1/agent/service/nope"],
    "/v1/agent/checks": ["/v1/agent/checks"],
    "/v1/agent/metrics": [
        "/v1/agent/metrics",
        "/v1/agent/metrics?format=prometheus",
        "/v1/agent/metrics?format=xml",
    ],
    "/v1/agent/health/service/name/{name}": [
        "/v1/agent/health/service/name/web",
        "/v1/agent/health/service/name/web?format=text",
        "/v1/agent/health/service/name/nope",
    ],
    "/v1/agent/health/service/id/{service_id}": ["/v1/agent/health/service/id/web-1"],
    "/v1/catalog/services": ["/v1/catalog/services", "/v1/catalog/services?node-meta=a:b"],
    "/v1/catalog/service/{name}": ["/v1/catalog/service/cache?tag=x", "/v1/catalog/service/web"],
    "/v1/catalog/nodes": ["/v1/catalog/nodes", "/v1/catalog/nodes?index=x"],
    "/v1/catalog/node/{node}": ["/v1/catalog/node/a", "/v1/catalog/node/nope"],
    "/v1/health/service/{name}": ["/v1/health/service/cache", "/v1/health/service/web?passing"],
    "/v1/health/checks/{service}": ["/v1/health/checks/cache", "/v1/health/checks/web"],
    "/v1/health/node/{node}": ["/v1/health/node/a", "/v1/health/node/b"],
    "/v1/health/state/{state}": ["/v1/health/state/any", "/v1/health/state/nope"],
    "/v1/status/leader": ["/v1/status/leader"],
    "/v1/status/peers": ["/v1/status/peers"],
    "/v1/operator/keyring": ["/v1/operator/keyring"],
    "/v1/openapi.json": ["/v1/openapi.json"],
}
