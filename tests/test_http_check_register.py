"""``PUT /v1/agent/check/register`` and ``/v1/agent/check/deregister/:id`` over real sockets.

Checks registered by themselves keep their id everywhere (the agent and health routes, the
TTL routes, ``mesh.ttl_*``); a check without a ``ServiceID`` is a node check, whose status
counts in every service of its peer — here and, through the gossiped aggregate, in a
second peer's discovery.  Bad bodies are 400s with a reason, unknown ids 404s, and writes
need the token.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest
from http_served import client, served
from meshes import eventually

import meshlite
from meshlite import Mesh, Status

pytestmark = pytest.mark.anyio

REGISTER = "/v1/agent/check/register"
DEREGISTER = "/v1/agent/check/deregister"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def agent_checks(http: httpx.AsyncClient) -> dict[str, tuple[str, str, str]]:
    """``/v1/agent/checks`` as ``{id: (status, service id, output)}``."""
    found = (await http.get("/v1/agent/checks")).json()
    return {k: (c["Status"], c["ServiceID"], c["Output"]) for k, c in found.items()}


async def entry_checks(http: httpx.AsyncClient, name: str) -> list[tuple[str, str, str]]:
    """The checks of the one ``/v1/health/service/:name`` entry: (id, status, service id)."""
    [entry] = (await http.get(f"/v1/health/service/{name}")).json()
    return [(c["CheckID"], c["Status"], c["ServiceID"]) for c in entry["Checks"]]


async def passing(http: httpx.AsyncClient, name: str) -> list[str]:
    entries = (await http.get(f"/v1/health/service/{name}?passing")).json()
    return [e["Service"]["ID"] for e in entries]


async def put(http: httpx.AsyncClient, path: str, body: Any = None) -> httpx.Response:
    r = await http.put(path, content=None if body is None else json.dumps(body).encode())
    assert r.status_code == 200, f"PUT {path}: {r.status_code} {r.text}"
    return r


# ------------------------------------------------------------------------------ service checks


async def test_a_ttl_check_on_a_service_keeps_its_id_everywhere(anyio_backend: str) -> None:
    async with served() as (mesh, url), client(url) as http:
        await put(http, "/v1/agent/service/register", {"Name": "web", "ID": "web-1", "Port": 80})
        await put(http, REGISTER, {"Name": "db reachable", "ID": "web-db", "ServiceID": "web-1",
                                   "TTL": "30s", "Notes": "ignored"})  # fmt: skip
        found = (await http.get("/v1/agent/checks")).json()["web-db"]
        assert (found["Name"], found["ServiceID"], found["ServiceName"], found["Type"]) == (
            "db reachable", "web-1", "web", "ttl"
        )  # fmt: skip
        assert found["Status"] == "critical"  # Consul's initial status
        assert await passing(http, "web") == []

        await put(http, "/v1/agent/check/pass/web-db?note=reachable")
        assert await entry_checks(http, "web") == [
            ("serfHealth", "passing", ""), ("web-db", "passing", "web-1")
        ]  # fmt: skip
        assert await passing(http, "web") == ["web-1"]
        assert [i.status for i in mesh.discover("web")] == [Status.PASSING]
        node = (await http.get("/v1/health/node/api-1")).json()
        assert [c["CheckID"] for c in node] == ["serfHealth", "web-db"]
        assert [c["CheckID"] for c in (await http.get("/v1/health/checks/web")).json()] == [
            "web-db"
        ]
        by_id = await http.get("/v1/agent/health/service/id/web-1")
        assert by_id.status_code == 200 and by_id.json()["Checks"][0]["Output"] == "reachable"

        mesh.ttl_fail("web-db", "refused")  # the Python side knows it by the same id
        assert await agent_checks(http) == {"web-db": ("critical", "web-1", "refused")}
        assert mesh.discover("web") == []
        await put(http, "/v1/agent/check/update/web-db", {"Status": "warning", "Output": "slow"})
        assert await agent_checks(http) == {"web-db": ("warning", "web-1", "slow")}

        # Re-registering the id replaces the check: one check, the new definition.
        await put(http, REGISTER, {"Name": "db again", "ID": "web-db", "ServiceID": "web-1",
                                   "TTL": "1m", "Status": "passing"})  # fmt: skip
        found = (await http.get("/v1/agent/checks")).json()
        assert list(found) == ["web-db"]
        assert (found["web-db"]["Name"], found["web-db"]["Status"]) == ("db again", "passing")

        await put(http, f"{DEREGISTER}/web-db")
        assert await agent_checks(http) == {}
        assert await passing(http, "web") == ["web-1"]  # no checks: passing
        gone = await http.put(f"{DEREGISTER}/web-db")
        assert gone.status_code == 404 and "Unknown check ID" in gone.text


async def test_service_checks_go_with_their_service_and_may_go_alone(anyio_backend: str) -> None:
    async with served() as (mesh, url), client(url) as http:
        await put(http, "/v1/agent/service/register",
                  {"Name": "web", "ID": "web-1", "Check": {"TTL": "30s"}})  # fmt: skip
        await put(http, REGISTER, {"Name": "extra", "ServiceID": "web-1", "TTL": "30s"})
        assert set(await agent_checks(http)) == {"service:web-1", "extra"}
        # A service's own check may be deregistered (Consul allows it); the service stays.
        await put(http, f"{DEREGISTER}/service:web-1")
        assert set(await agent_checks(http)) == {"extra"}
        mesh.ttl_pass("extra")
        assert [i.id for i in mesh.discover("web")] == ["web-1"]
        # Deregistering the service takes its checks; registering it again does not
        # bring them back (Consul: a definition replaces the service's checks).
        await put(http, "/v1/agent/service/deregister/web-1")
        assert await agent_checks(http) == {}
        await put(http, "/v1/agent/service/register", {"Name": "web", "ID": "web-1"})
        assert await agent_checks(http) == {}
        # A registered id is taken: the service's default check id moves past it.
        await put(http, REGISTER, {"Name": "service:api", "TTL": "30s", "Status": "passing"})
        await mesh.register("api", 81, check=meshlite.TTLCheck(ttl_s=30))
        assert set(await agent_checks(http)) == {"service:api", "service:api:1"}
        assert (await agent_checks(http))["service:api:1"][1] == "api"


# ------------------------------------------------------------------------------ node checks


async def test_a_failing_node_check_takes_the_node_out_here_and_on_another_peer(
    anyio_backend: str,
) -> None:
    async with (
        served("a") as (a, url),
        client(url) as http,
        Mesh("b", "127.0.0.1:0", join=[a.address], profile="local") as b,
    ):
        await put(http, "/v1/agent/service/register", {"Name": "web", "ID": "web-1", "Port": 80})
        await put(http, REGISTER, {"Name": "maintenance", "TTL": "1h", "Status": "passing"})
        await eventually(lambda: [i.id for i in b.discover("web")] == ["web-1"])
        assert await entry_checks(http, "web") == [
            ("serfHealth", "passing", ""), ("maintenance", "passing", "")
        ]  # fmt: skip

        await put(http, "/v1/agent/check/fail/maintenance?note=draining")
        assert await passing(http, "web") == []
        assert a.discover("web") == []
        await eventually(lambda: b.discover("web") == [])  # the gossiped aggregate says so
        [seen] = b.discover("web", passing_only=False)
        assert seen.status == Status.CRITICAL

        # Present and future services alike.
        await a.register("db", 5432, id="db-1")
        assert [i.status for i in a.discover("db", passing_only=False)] == [Status.CRITICAL]
        await eventually(lambda: len(b.discover("db", passing_only=False)) == 1)
        assert b.discover("db") == []

        # Where this peer shows node checks: next to serfHealth, with no service.
        assert (await agent_checks(http))["maintenance"] == ("critical", "", "draining")
        node = [c["CheckID"] for c in (await http.get("/v1/health/node/a")).json()]
        assert node == ["serfHealth", "maintenance"]
        critical = [c["CheckID"] for c in (await http.get("/v1/health/state/critical")).json()]
        assert critical == ["maintenance"]
        assert (await http.get("/v1/health/checks/web")).json() == []  # service checks only
        by_name = await http.get("/v1/agent/health/service/name/web")
        assert by_name.status_code == 503

        await put(http, "/v1/agent/check/pass/maintenance")
        await eventually(lambda: {i.id for i in b.discover("web") + b.discover("db")}
                         == {"web-1", "db-1"})  # fmt: skip
        a.ttl_fail("maintenance")  # the Python side knows the node check too
        await eventually(lambda: b.discover("web") == [])
        await put(http, f"{DEREGISTER}/maintenance")
        assert [i.id for i in a.discover("web")] == ["web-1"]
        await eventually(lambda: [i.id for i in b.discover("web")] == ["web-1"])
        assert set(await agent_checks(http)) == set()


async def test_blocking_queries_wake_when_checks_come_change_and_go(anyio_backend: str) -> None:
    async with served() as (mesh, url), client(url) as http:
        path = "/v1/health/node/api-1"

        async def after(index: str, change: Any) -> str:
            """Hold a blocking query at ``index``, make ``change``, return the new index."""
            answer: dict[str, httpx.Response] = {}

            async def hold() -> None:
                answer["r"] = await http.get(f"{path}?index={index}&wait=20s")

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(hold)
                    await anyio.sleep(0.2)
                    assert not answer, "returned before anything changed"
                    await change()
            new = answer["r"].headers["x-consul-index"]
            assert int(new) > int(index)
            return new

        index = (await http.get(path)).headers["x-consul-index"]
        index = await after(index, lambda: put(http, REGISTER, {"Name": "n", "TTL": "1m"}))
        index = await after(index, lambda: put(http, "/v1/agent/check/pass/n"))
        # The same status with a new note: only this peer's view changes.
        index = await after(index, lambda: put(http, "/v1/agent/check/pass/n?note=again"))
        await after(index, lambda: put(http, f"{DEREGISTER}/n"))
        assert mesh.services() == []


# ------------------------------------------------------------------------------ bad input


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


TTL = {"Name": "c", "TTL": "10s"}
# (body, status, a fragment of the reason)
BAD_REGISTRATIONS: list[tuple[bytes, int, str]] = [
    (b"not json", 400, "Request decode failed"),
    (b"", 400, "a check definition"),
    (b"[1]", 400, "JSON object"),
    (b'"TTL"', 400, "JSON object"),
    (b"null", 400, "JSON object"),
    (b" " * (600 * 1024), 413, "too large"),
    (body({}), 400, "Missing check name"),
    (body({"TTL": "10s"}), 400, "Missing check name"),
    (body({"Name": "", "TTL": "1s"}), 400, "Missing check name"),
    (body({"Name": 5, "TTL": "1s"}), 400, "Name must be a non-empty string"),
    (body({"Name": "c"}), 400, "needs exactly one of http, tcp, args or ttl"),
    (body({**TTL, "ServiceID": "nope"}), 400, 'ServiceID "nope" does not exist'),
    (body({**TTL, "ServiceID": 7}), 400, "ServiceID must be a non-empty string"),
    (body({**TTL, "ID": "a/b"}), 400, "must not contain '/'"),
    (body({**TTL, "ID": "x" * 300}), 400, "at most 256 bytes"),
    (body({**TTL, "ID": "a", "CheckID": "b"}), 400, "says the same thing"),
    (body({"Name": "c", "Args": ["touch", "/tmp/pwned"], "Interval": "1s"}), 400,
     "script checks"),
    (body({"Name": "c", "ScriptArgs": ["true"], "Interval": "1s"}), 400, "script checks"),
    (body({"Name": "c", "TTL": "abc"}), 400, "TTL must be a duration"),
    (body({"Name": "c", "TTL": "-1s"}), 400, "positive"),
    (body({"Name": "c", "TTL": "0s"}), 400, "positive"),
    (body({"Name": "c", "TTL": 10}), 400, "TTL must be a duration"),
    (body({"Name": "c", "HTTP": "http://h", "Interval": "soon"}), 400, "Interval"),
    (body({"Name": "c", "HTTP": "http://h"}), 400, "interval"),
    (body({"Name": "c", "HTTP": "ftp://h", "Interval": "1s"}), 400, "http://"),
    (body({"Name": "c", "HTTP": "http://h", "Interval": "1s", "Timeout": "9999999999h"}), 400,
     "Timeout"),
    (body({"Name": "c", "HTTP": "http://h", "Interval": "1s", "Header": {"A": "b"}}), 400,
     "Header.A"),
    (body({"Name": "c", "HTTP": "http://h", "Interval": "1s", "TLSSkipVerify": 1}), 400,
     "TLSSkipVerify must be true or false"),
    (body({"Name": "c", "TCP": "nohost", "Interval": "1s"}), 400, "host:port"),
    (body({"Name": "c", "TTL": "1s", "DeregisterCriticalServiceAfter": "later"}), 400,
     "DeregisterCriticalServiceAfter"),
    (body({"Name": "c", "TTL": "1s", "Status": "fine"}), 400, "Status must be"),
    (body({"Name": "c", "TTL": "1s", "Interval": "1s"}), 400, "does not apply to a ttl check"),
    (body({"Name": "c", "GRPC": "h:1", "Interval": "1s"}), 400, "does not run"),
    (body({"Name": "c", "TTL": "1s", "Bogus": 1}), 400, "not supported"),
]  # fmt: skip


async def test_bad_registrations_are_400s_with_a_reason(anyio_backend: str) -> None:
    async with served() as (mesh, url), client(url) as http:
        await mesh.register("web", 80, id="web-1")
        for content, status, reason in BAD_REGISTRATIONS:
            r = await http.put(REGISTER, content=content)
            where = f"{content[:80]!r}"
            assert r.status_code == status, f"{where}: {r.status_code} {r.text[:200]}"
            assert r.headers["content-type"].startswith("text/plain"), where
            assert reason in r.text, f"{where}: {r.text[:300]}"
        assert await agent_checks(http) == {}  # nothing bad got registered
        for method, path in (("GET", REGISTER), ("POST", REGISTER), ("GET", f"{DEREGISTER}/x")):
            assert (await http.request(method, path)).status_code == 405, (method, path)
        assert (await http.put(f"{DEREGISTER}/nope")).status_code == 404
        assert [i.status for i in mesh.discover("web")] == [Status.PASSING]


async def test_check_writes_need_the_token(anyio_backend: str) -> None:
    token = "s3cret-token"
    async with served(http_token=token) as (_mesh, url), client(url) as http:
        for headers in ({}, {"X-Consul-Token": "wrong"}):
            r = await http.put(REGISTER, content=body(TTL), headers=headers)
            assert (r.status_code, r.text) == (403, "Permission denied")
        assert await agent_checks(http) == {}  # reads stay open
        ok = {"X-Consul-Token": token}
        assert (await http.put(REGISTER, content=body(TTL), headers=ok)).status_code == 200
        r = await http.put(f"{DEREGISTER}/c", headers={"Authorization": "Bearer wrong"})
        assert (r.status_code, r.text) == (403, "Permission denied")
        assert set(await agent_checks(http)) == {"c"}
        assert (await http.put(f"{DEREGISTER}/c?token={token}")).status_code == 200
        assert await agent_checks(http) == {}


# ------------------------------------------------------------------------------ Python


async def test_the_python_side_registers_node_and_service_checks(anyio_backend: str) -> None:
    async with Mesh("p", "127.0.0.1:0", profile="local") as mesh:
        await mesh.register("web", 80, id="web-1")
        ready = {"ok": True}
        check = meshlite.CallableCheck(lambda: ready["ok"], interval_s=0.05, name="disk")
        assert await mesh.register_check(check) == "disk"  # the id defaults to the name
        await eventually(lambda: bool(mesh.discover("web")))
        ready["ok"] = False
        await eventually(lambda: mesh.discover("web") == [])
        ttl = meshlite.TTLCheck(ttl_s=30, initial_status="passing")
        assert await mesh.register_check(ttl, id="web-ttl", service_id="web-1") == "web-ttl"
        await mesh.deregister_check("disk")
        assert [i.id for i in mesh.discover("web")] == ["web-1"]
        mesh.ttl_warn("web-ttl")
        assert mesh.services()[0].status == Status.WARNING
        for bad in (
            lambda: mesh.register_check(meshlite.TTLCheck(ttl_s=1)),  # no name, no id
            lambda: mesh.register_check(ttl, id="a/b"),
            lambda: mesh.register_check(ttl, id="x", service_id="nope"),
            lambda: mesh.register_check("not a check", id="x"),  # type: ignore[arg-type]
            lambda: mesh.deregister_check("nope"),
        ):
            with pytest.raises(meshlite.ConfigError):
                await bad()
        assert [i.status for i in mesh.services()] == [Status.WARNING]
