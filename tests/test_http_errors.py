"""Bad input, unknown ids and paths, wrong methods, tokens: Consul's statuses and texts.

Every malformed request gets a 400 (413 for a huge body) with a plain-text reason —
never a 500 — and the server stays up for the next one.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import anyio
import pytest
from http_served import client, py_consul, served

import meshlite
from meshlite import ConfigError, Mesh

pytestmark = pytest.mark.anyio

REGISTER = "/v1/agent/service/register"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


# (method, path, body or None, status, a fragment of the reason)
BAD_REQUESTS: list[tuple[str, str, bytes | None, int, str]] = [
    ("PUT", REGISTER, b"not json", 400, "Request decode failed"),
    ("PUT", REGISTER, b"", 400, "JSON object"),
    ("PUT", REGISTER, b"[1, 2]", 400, "JSON object"),
    ("PUT", REGISTER, b"\xff\xfe\xfa", 400, "Request decode failed"),
    ("PUT", REGISTER, b"[" * 100_000 + b"]" * 100_000, 400, "Request decode failed"),
    ("PUT", REGISTER, b'{"Name": "x", "Port": 1' + b"0" * 5000 + b"}", 400, "decode failed"),
    ("PUT", REGISTER, b" " * (600 * 1024), 413, "too large"),
    ("PUT", REGISTER, body({}), 400, 'needs "name"'),
    ("PUT", REGISTER, body({"Name": 5}), 400, "Name must be a non-empty string"),
    ("PUT", REGISTER, body({"Name": ""}), 400, "Name must be a non-empty string"),
    ("PUT", REGISTER, body({"Name": "x" * 300}), 400, "at most"),
    ("PUT", REGISTER, body({"Name": "x", "Port": "80"}), 400, "Port must be a whole number"),
    ("PUT", REGISTER, body({"Name": "x", "Port": 70000}), 400, "0-65535"),
    ("PUT", REGISTER, body({"Name": "x", "Port": True}), 400, "Port"),
    ("PUT", REGISTER, body({"Name": "x", "Tags": "a"}), 400, "Tags must be a list"),
    ("PUT", REGISTER, body({"Name": "x", "Meta": {"a": 1}}), 400, "Meta"),
    ("PUT", REGISTER, body({"Name": "x", "Meta": {"k": "v" * 600}}), 400, "512"),
    ("PUT", REGISTER, body({"Name": "x", "Address": "a:b"}), 400, "Address"),
    ("PUT", REGISTER, body({"Name": "x", "Kind": "connect-proxy"}), 400, "Kind"),
    ("PUT", REGISTER, body({"Name": "x", "Connect": {}}), 400, "not supported"),
    ("PUT", REGISTER, body({"Name": "x", "Check": {"TTL": "abc"}}), 400, "duration"),
    ("PUT", REGISTER, body({"Name": "x", "Check": {"TTL": "-1s"}}), 400, "positive"),
    ("PUT", REGISTER, body({"Name": "x", "Check": {"HTTP": "http://h", "TTL": "1s"}}), 400,
     "exactly one"),
    ("PUT", REGISTER, body({"Name": "x", "Check": {"HTTP": "http://h"}}), 400, "interval"),
    ("PUT", REGISTER, body({"Name": "x", "Check": {"HTTP": "ftp://h", "Interval": "1s"}}),
     400, "http://"),
    ("PUT", REGISTER, body({"Name": "x", "Check": {"TCP": "nohost", "Interval": "1s"}}), 400,
     "host:port"),
    ("PUT", REGISTER, body({"Name": "x", "Check": {"GRPC": "h:1", "Interval": "1s"}}), 400,
     "does not run"),
    ("PUT", REGISTER, body({"Name": "x", "Check": {"TTL": "1s", "CheckID": "c"}}), 400,
     "CheckID"),
    ("PUT", REGISTER, body({"Name": "x", "Check": "ttl"}), 400, "Check must be a table"),
    ("PUT", REGISTER, body({"Name": "x", "Checks": {"TTL": "1s"}}), 400, "Checks must be a list"),
    ("PUT", REGISTER, body({"Name": "x", "Checks": [{"TTL": "1s"}, 5]}), 400, "Checks[1]"),
    ("PUT", REGISTER, body({"Name": "x", "Check": {"Args": "echo", "Interval": "1s"}}), 400,
     "list of strings"),
    # Never run a program a client names: script checks come from config files only.
    ("PUT", REGISTER, body({"Name": "x", "Check": {"Args": ["touch", "/tmp/pwned"],
                                                   "Interval": "1s"}}), 400, "script checks"),
    ("PUT", REGISTER, body({"Name": "x", "Checks": [{"TTL": "1s"}, {"ScriptArgs": ["true"],
                                                                   "Interval": "1s"}]}), 400,
     "script checks"),
    ("PUT", "/v1/agent/check/update/service:x", body({"Status": "bogus"}), 400,
     "Invalid check status"),
    ("PUT", "/v1/agent/check/update/service:x", body({"Status": "passing", "Output": 5}), 400,
     "check output"),
    ("PUT", "/v1/agent/check/update/service:x", body([]), 400, "JSON object"),
    ("GET", "/v1/health/service/web?passing=maybe", None, 400, "?passing"),
    ("GET", "/v1/health/service/web?index=abc", None, 400, "Invalid index"),
    ("GET", "/v1/health/service/web?index=-1", None, 400, "Invalid index"),
    ("GET", "/v1/health/service/web?index=99999999999999999999999", None, 400, "Invalid index"),
    ("GET", "/v1/catalog/services?index=1&wait=10", None, 400, "Invalid wait time"),
    ("GET", "/v1/catalog/services?wait=-1s", None, 400, "Invalid wait time"),
    ("GET", "/v1/catalog/services?wait=9999999999h", None, 400, "Invalid wait time"),
    ("GET", "/v1/catalog/nodes?dc=elsewhere", None, 400, "No path to datacenter"),
    ("GET", "/v1/catalog/nodes?filter=Node%20==%20x", None, 400, "filter"),
    ("GET", "/v1/catalog/nodes?node-meta=nocolon", None, 400, "node-meta"),
    ("GET", "/v1/catalog/nodes?stale&consistent", None, 400, "stale"),
    ("GET", "/v1/health/state/bogus", None, 400, "Invalid check state"),
    ("GET", "/v1/agent/members?filter=x", None, 400, "filter"),
    ("GET", "/v1/operator/keyring?relay-factor=9", None, 400, "Relay factor"),
    ("POST", "/v1/operator/keyring", body({}), 400, "Key"),
    ("POST", "/v1/operator/keyring", body({"Key": 5}), 400, "Key"),
    ("POST", "/v1/operator/keyring", body({"Key": "not base64!"}), 400, "keyring install"),
    ("PUT", "/v1/operator/keyring", body({"Key": "c2hvcnQ="}), 400, "keyring use"),
    ("DELETE", "/v1/operator/keyring", b"{", 400, "Request decode failed"),
    ("PUT", "/v1/agent/check/pass/service:tcp", None, 400, "does not have associated TTL"),
]  # fmt: skip

NOT_FOUND: list[tuple[str, str]] = [
    ("GET", "/v1/nothing"),
    ("GET", "/v1/agent/service/nope"),
    ("PUT", "/v1/agent/service/deregister/nope"),
    ("PUT", "/v1/agent/check/pass/nope"),
    ("PUT", "/v1/agent/check/fail/service:nope"),
    ("PUT", "/v1/agent/check/deregister/nope"),
    ("GET", "/v1/agent/health/service/name/nope"),
    ("GET", "/v1/agent/health/service/id/nope"),
    ("GET", "/v1/agent/self/"),  # no redirect to the slash-less path, as in Consul
]

WRONG_METHOD: list[tuple[str, str]] = [
    ("GET", REGISTER),
    ("POST", REGISTER),
    ("POST", "/v1/agent/self"),
    ("DELETE", "/v1/catalog/services"),
    ("GET", "/v1/agent/leave"),
    ("PATCH", "/v1/operator/keyring"),
    ("GET", "/v1/agent/check/pass/service:tcp"),
    ("GET", "/v1/agent/check/register"),
    ("DELETE", "/v1/agent/check/deregister/x"),
    ("POST", "/v1/kv/k"),
    ("PATCH", "/v1/kv/k"),
    ("GET", "/v1/txn"),
    ("POST", "/v1/txn"),
    ("GET", "/v1/session/create"),
    ("PUT", "/v1/session/list"),
    ("DELETE", "/v1/session/destroy/x"),
    ("GET", "/v1/session/renew/x"),
    ("PUT", "/v1/session/info/x"),
]


def txn(*ops: dict[str, Any]) -> bytes:
    return body([{"KV": op} for op in ops])


SET = {"Verb": "set", "Key": "k"}
# The store's routes: (method, path, body or None, status, a fragment of the reason).
BAD_STORE_REQUESTS: list[tuple[str, str, bytes | None, int, str]] = [
    ("GET", "/v1/kv/", None, 400, "Missing key name"),
    ("GET", "/v1/kv/k?recurse=maybe", None, 400, "?recurse"),
    ("GET", "/v1/kv/k?keys=2", None, 400, "?keys"),
    ("GET", "/v1/kv/k?raw=yes", None, 400, "?raw"),
    ("GET", "/v1/kv/k?index=abc", None, 400, "Invalid index"),
    ("GET", "/v1/kv/k?index=-1", None, 400, "Invalid index"),
    ("GET", "/v1/kv/k?index=1&wait=10", None, 400, "Invalid wait time"),
    ("GET", "/v1/kv/k?index=1&wait=-1s", None, 400, "Invalid wait time"),
    ("GET", "/v1/kv/k?stale&consistent", None, 400, "stale"),
    ("GET", "/v1/kv/k?dc=elsewhere", None, 400, "No path to datacenter"),
    ("GET", "/v1/kv/k?filter=Key", None, 400, "filter"),
    ("PUT", "/v1/kv/", b"x", 400, "Missing key name"),
    ("PUT", "/v1/kv/k?flags=-1", b"x", 400, "Invalid flags"),
    ("PUT", "/v1/kv/k?flags=18446744073709551616", b"x", 400, "Invalid flags"),
    ("PUT", "/v1/kv/k?cas=x", b"x", 400, "Invalid cas"),
    ("PUT", "/v1/kv/k?cas=1&acquire=s", b"x", 400, "Conflicting flags"),
    ("PUT", "/v1/kv/k?acquire=a&release=b", b"x", 400, "Conflicting flags"),
    ("PUT", "/v1/kv/k?acquire=", b"x", 400, "needs a session id"),
    ("PUT", "/v1/kv/k?release=", b"x", 400, "needs a session id"),
    ("PUT", "/v1/kv/k?acquire=no-such-session", b"x", 400, "invalid session"),
    ("PUT", "/v1/kv/" + "k" * 5000, b"x", 400, "longer than 4096 bytes"),
    ("PUT", "/v1/kv/k", b"v" * (512 * 1024 + 1), 413,
     "Request body(524289 bytes) too large, max size: 524288 bytes"),
    ("DELETE", "/v1/kv/", None, 400, "Missing key name"),
    ("DELETE", "/v1/kv/k?recurse&cas=1", None, 400, "Conflicting flags"),
    ("DELETE", "/v1/kv/k?cas=-5", None, 400, "Invalid cas"),
    ("DELETE", "/v1/kv/k?recurse=perhaps", None, 400, "?recurse"),
    ("PUT", "/v1/txn", b"not json", 400, "Failed to parse body"),
    ("PUT", "/v1/txn", b"", 400, "Failed to parse body"),
    ("PUT", "/v1/txn", b"{}", 400, "JSON list"),
    ("PUT", "/v1/txn", b"[]", 400, "at least one"),
    ("PUT", "/v1/txn", b"[" * 100_000 + b"]" * 100_000, 400, "Failed to parse body"),
    ("PUT", "/v1/txn", body([1]), 400, "one key, KV"),
    ("PUT", "/v1/txn", body([{"KV": SET, "Node": {}}]), 400, "one key, KV"),
    ("PUT", "/v1/txn", body([{"KV": "set"}]), 400, "must be"),
    ("PUT", "/v1/txn", body([{"Node": {"Verb": "set"}}]), 400, "not supported"),
    ("PUT", "/v1/txn", txn({"Verb": "bogus", "Key": "k"}), 400, "unknown verb"),
    ("PUT", "/v1/txn", txn({"Key": "k"}), 400, "unknown verb"),
    ("PUT", "/v1/txn", txn({**SET, "Value": "!!"}), 400, "base64"),
    ("PUT", "/v1/txn", txn({**SET, "Value": 5}), 400, "Value must be a string"),
    ("PUT", "/v1/txn", txn({**SET, "Flags": -1}), 400, "Flags"),
    ("PUT", "/v1/txn", txn({**SET, "Index": 1.5}), 400, "Index"),
    ("PUT", "/v1/txn", txn({**SET, "Index": 2**64}), 400, "Index"),
    ("PUT", "/v1/txn", txn({"Verb": "set", "Key": 5}), 400, "Key must be a string"),
    ("PUT", "/v1/txn", txn({"Verb": "set", "Key": ""}), 400, "key must not be empty"),
    ("PUT", "/v1/txn", txn({"Verb": "lock", "Key": "k"}), 400, "needs a session"),
    ("PUT", "/v1/txn", txn(*[SET] * 65), 413, "too many operations (65 > 64)"),
    ("PUT", "/v1/txn", txn({**SET, "Value": base64.b64encode(b"v" * (512 * 1024 + 1)).decode()}),
     413, "is too large"),
    ("PUT", "/v1/txn", txn(*[{**SET, "Value": base64.b64encode(b"v" * 180_000).decode()}] * 3),
     413, "total 540000 bytes, over the 524288-byte limit"),
    ("PUT", "/v1/txn", b" " * (2 * 1024 * 1024), 413, "too large"),
    ("PUT", "/v1/session/create", b"[1]", 400, "JSON object"),
    ("PUT", "/v1/session/create", b"{", 400, "Request decode failed"),
    ("PUT", "/v1/session/create", body({"TTL": "5s"}), 400, "ttl_s must be 0 or between 10"),
    ("PUT", "/v1/session/create", body({"TTL": "abc"}), 400, "TTL"),
    ("PUT", "/v1/session/create", body({"TTL": 15}), 400, "TTL must be a string"),
    ("PUT", "/v1/session/create", body({"Behavior": "explode"}), 400, "Behavior"),
    ("PUT", "/v1/session/create", body({"LockDelay": "90s"}), 400, "lock_delay_s"),
    ("PUT", "/v1/session/create", body({"LockDelay": "-1s"}), 400, "lock_delay_s"),
    ("PUT", "/v1/session/create", body({"LockDelay": "soon"}), 400, "LockDelay"),
    ("PUT", "/v1/session/create", body({"LockDelay": [1]}), 400, "LockDelay"),
    ("PUT", "/v1/session/create", body({"LockDelay": 1e400}), 400, "lock_delay_s"),
    ("PUT", "/v1/session/create", body({"Node": "nobody"}), 400, "not an alive member"),
    ("PUT", "/v1/session/create", body({"Node": 7}), 400, "Node must be a string"),
    ("PUT", "/v1/session/create", body({"Name": 5}), 400, "Name must be a string"),
    ("PUT", "/v1/session/create", body({"Checks": ["service:web"]}), 400, "serfHealth"),
    ("PUT", "/v1/session/create", body({"NodeChecks": "serfHealth"}), 400, "serfHealth"),
    ("PUT", "/v1/session/create", body({"ServiceChecks": [{"ID": "x"}]}), 400, "ServiceChecks"),
    ("PUT", "/v1/session/create", b" " * (600 * 1024), 413, "too large"),
    ("GET", "/v1/session/list?index=x", None, 400, "Invalid index"),
    ("GET", "/v1/session/info/x?wait=forever", None, 400, "Invalid wait time"),
    ("GET", "/v1/session/node/n?stale&consistent", None, 400, "stale"),
    ("PUT", "/v1/session/destroy/x?dc=elsewhere", None, 400, "No path to datacenter"),
]  # fmt: skip


async def test_store_bad_input_is_a_400_with_a_reason_never_a_500(anyio_backend: str) -> None:
    async with served(server=True, bootstrap_expect=1) as (mesh, url), client(url) as http:
        assert await mesh.kv.put("kept", b"v")  # waits for the election
        for method, path, content, status, reason in BAD_STORE_REQUESTS:
            r = await http.request(method, path, content=content)
            where = f"{method} {path[:80]} {(content or b'')[:60]!r}"
            assert r.status_code == status, f"{where}: {r.status_code} {r.text[:200]}"
            assert r.headers["content-type"].startswith("text/plain"), where
            assert reason in r.text, f"{where}: {r.text[:300]}"
        assert await mesh.kv.keys() == ["kept"]  # nothing bad was written
        assert (await mesh.kv.session_list()).value == []
        missing = await http.get("/v1/kv/missing")
        assert (missing.status_code, missing.content) == (404, b"")
        assert int(missing.headers["x-consul-index"]) >= 1
        gone = await http.put("/v1/session/renew/no-such-session")
        assert (gone.status_code, gone.text) == (404, "Session id 'no-such-session' not found")
        raw = await http.get("/v1/kv/kept?raw")
        assert (raw.content, raw.headers["content-type"]) == (b"v", "application/octet-stream")
        assert raw.headers["x-content-type-options"] == "nosniff"


async def test_the_store_without_a_leader_is_a_500_no_cluster_leader(anyio_backend: str) -> None:
    """No server in the mesh: Consul's ``500 No cluster leader`` — not a 400: the request
    was fine, the cluster cannot answer it."""
    from meshlite._kv_client import KV

    async with served() as (mesh, url), client(url) as http:
        mesh._kv = KV(mesh, hold_s=0.2)  # the real client, holding 0.2 s instead of 7
        for method, path in (
            ("GET", "/v1/kv/k"),
            ("PUT", "/v1/kv/k"),
            ("DELETE", "/v1/kv/k"),
            ("GET", "/v1/session/list"),
            ("PUT", "/v1/session/create"),
        ):
            r = await http.request(method, path)
            assert (r.status_code, r.text) == (500, "No cluster leader"), (method, path)
        r = await http.put("/v1/txn", content=txn(SET))
        assert (r.status_code, r.text) == (500, "No cluster leader")
        assert (await http.get("/v1/status/leader")).json() == ""


async def test_bad_input_is_a_400_with_a_reason_never_a_500(anyio_backend: str) -> None:
    async with served(key=meshlite.generate_key()) as (mesh, url), client(url) as http:
        await mesh.register("tcp", 1, check=meshlite.TCPCheck("127.0.0.1:1", interval_s=60))
        for method, path, content, status, reason in BAD_REQUESTS:
            r = await http.request(method, path, content=content)
            where = f"{method} {path} {(content or b'')[:60]!r}"
            assert r.status_code == status, f"{where}: {r.status_code} {r.text[:200]}"
            assert r.headers["content-type"].startswith("text/plain"), where
            assert reason in r.text, f"{where}: {r.text[:300]}"
        ok = await http.get("/v1/agent/self")  # still serving
        assert ok.status_code == 200
        assert [i.id for i in mesh.services()] == ["tcp"]  # nothing bad got registered


async def test_unknown_ids_and_paths_are_404_and_wrong_methods_405(anyio_backend: str) -> None:
    async with served() as (mesh, url), client(url) as http:
        await mesh.register("tcp", 1, check=meshlite.TCPCheck("127.0.0.1:1", interval_s=60))
        for method, path in NOT_FOUND:
            r = await http.request(method, path)
            assert r.status_code == 404, f"{method} {path}: {r.status_code} {r.text}"
        for method, path in WRONG_METHOD:
            r = await http.request(method, path)
            assert r.status_code == 405, f"{method} {path}: {r.status_code} {r.text}"
            assert r.text == f"method {method} not allowed"
        r = await http.get("/v1/agent/service/register")
        assert r.headers["allow"] == "PUT"


async def test_keyring_without_encryption_is_a_400(anyio_backend: str) -> None:
    async with served() as (_mesh, url), client(url) as http:
        r = await http.get("/v1/operator/keyring")
        assert r.status_code == 400 and "without encryption" in r.text


async def test_the_token_guards_writes_and_optionally_reads(anyio_backend: str) -> None:
    token = "s3cret-token"
    registration = body({"Name": "web", "Port": 80})
    async with served(http_token=token) as (_mesh, url), client(url) as http:
        for headers in ({}, {"X-Consul-Token": "wrong"}, {"Authorization": "Bearer wrong"}):
            r = await http.put(REGISTER, content=registration, headers=headers)
            assert (r.status_code, r.text) == (403, "Permission denied")
        assert (await http.get("/v1/agent/services")).json() == {}  # reads stay open
        for headers in ({"X-Consul-Token": token}, {"Authorization": f"Bearer {token}"}):
            r = await http.put(REGISTER, content=registration, headers=headers)
            assert r.status_code == 200, r.text
        r = await http.put(f"{REGISTER}?token={token}", content=registration)
        assert r.status_code == 200
    async with served(http_token=token, http_token_reads=True) as (_mesh, url):
        async with client(url) as http:
            assert (await http.get("/v1/agent/self")).status_code == 403
            assert (await http.get("/v1/catalog/services")).status_code == 403
            ok = await http.get("/v1/agent/self", headers={"X-Consul-Token": token})
            assert ok.status_code == 200
            for public in ("/v1/openapi.json", "/v1/status/leader", "/v1/status/peers"):
                assert (await http.get(public)).status_code == 200


async def test_the_token_guards_store_writes(anyio_backend: str) -> None:
    token = "s3cret-token"
    writes = [
        ("PUT", "/v1/kv/k", b"v"),
        ("DELETE", "/v1/kv/k?recurse", None),
        ("PUT", "/v1/txn", txn(SET)),
        ("PUT", "/v1/session/create", None),
        ("PUT", "/v1/session/destroy/x", None),
        ("PUT", "/v1/session/renew/x", None),
    ]
    async with (
        served(server=True, bootstrap_expect=1, http_token=token) as (mesh, url),
        client(url) as http,
    ):
        for method, path, content in writes:
            for headers in ({}, {"X-Consul-Token": "wrong"}):
                r = await http.request(method, path, content=content, headers=headers)
                assert (r.status_code, r.text) == (403, "Permission denied"), (method, path)
        assert await mesh.kv.keys() == []
        assert (await http.get("/v1/kv/k")).status_code == 404  # reads stay open
        assert (await http.get("/v1/session/list")).json() == []
        r = await http.put("/v1/kv/k", content=b"v", headers={"X-Consul-Token": token})
        assert (r.status_code, r.json()) == (200, True)


async def test_py_consul_with_a_token(anyio_backend: str) -> None:
    import anyio
    import consul

    async with served(http_token="t0k") as (mesh, _url):
        assert mesh.http_address is not None
        address = mesh.http_address

        def scenario() -> None:
            with pytest.raises(consul.ACLPermissionDenied):
                py_consul(address).agent.service.register("web", port=80)
            assert py_consul(address, token="t0k").agent.service.register("web", port=80)

        await anyio.to_thread.run_sync(scenario)


async def test_agent_health_answers_in_the_status_code(anyio_backend: str) -> None:
    async with served() as (mesh, url), client(url) as http:
        await mesh.register("web", 80, id="web-1", check=meshlite.TTLCheck(ttl_s=60))
        r = await http.get("/v1/agent/health/service/name/web")
        assert r.status_code == 503 and r.json()[0]["AggregatedStatus"] == "critical"
        r = await http.put("/v1/agent/check/update/service:web-1",
                           content=body({"Status": "warning", "Output": "slow"}))  # fmt: skip
        assert r.status_code == 200
        r = await http.get("/v1/agent/health/service/id/web-1")
        assert r.status_code == 429 and r.json()["Checks"][0]["Output"] == "slow"
        await http.put("/v1/agent/check/pass/service:web-1")
        r = await http.get("/v1/agent/health/service/name/web?format=text")
        assert (r.status_code, r.text) == (200, "passing")


async def test_constructor_and_bind_errors(anyio_backend: str) -> None:
    for kwargs in ({"http": "nonsense:port"}, {"http": "example.com:8500"},
                   {"http_token": "t"}, {"http": "127.0.0.1:0", "http_token": ""},
                   {"http": "127.0.0.1:0", "http_on_leader": True},  # not a server
                   {"server": True, "bootstrap_expect": 1, "http_on_leader": True}):  # fmt: skip
        with pytest.raises(ConfigError):
            Mesh("x", "127.0.0.1:0", **kwargs)  # type: ignore[arg-type]
    async with served() as (first, _url):
        assert first.http_address is not None
        with pytest.raises(OSError, match="HTTP API"):
            async with Mesh("y", "127.0.0.1:0", http=first.http_address):
                pass


async def test_pretty_json_and_content_types(anyio_backend: str) -> None:
    async with served() as (_mesh, url), client(url) as http:
        plain = await http.get("/v1/catalog/nodes")
        pretty = await http.get("/v1/catalog/nodes?pretty")
        assert plain.headers["content-type"] == "application/json"
        assert plain.json() == pretty.json() and "\n    " in pretty.text
        assert int(plain.headers["x-consul-index"]) >= 1


async def test_a_leader_bound_api_is_served_once_the_server_leads(anyio_backend: str) -> None:
    async with Mesh(
        "solo", "127.0.0.1:0", server=True, bootstrap_expect=1, profile="local",
        http="127.0.0.1:0", http_on_leader=True,
    ) as mesh:  # fmt: skip
        with anyio.fail_after(20):
            while mesh.http_address is None:
                await anyio.sleep(0.05)
        leader = mesh.leader()
        assert leader is not None and leader.name == "solo"
        async with client(f"http://{mesh.http_address}") as http:
            r = await http.get("/v1/agent/self")
            assert r.json()["Config"]["NodeName"] == "solo"
