"""The HTTP API's ACL token: no write without it, and its value never in a log line.

A real ``meshlite agent`` with ``--http-token`` and trace logging takes every write route
without a token, with a wrong one, and with the right one in each of Consul's three
places (``X-Consul-Token``, ``Authorization: Bearer``, ``?token=``); then its whole log
(text and JSON runs; it holds the agent's start-up line with its settings) and its
``/v1/agent/self`` are searched for the token and for the wrong token a client sent — a
token a user mistyped may be their real one elsewhere.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import httpx
import pytest
from netns import LineProcess
from test_services_processes import spawn

from meshlite.testing import free_ports

TOKEN = "s3cr3t-T0KEN-value-4242"
WRONG = "wr0ng-T0KEN-value-1717"
DEADLINE_S = 30.0

WRITES = [
    ("PUT", "/v1/kv/acl/k", b"v"),
    ("DELETE", "/v1/kv/acl/k", None),
    ("PUT", "/v1/txn", b'[{"KV": {"Verb": "set", "Key": "acl/t", "Value": "dg=="}}]'),
    ("PUT", "/v1/session/create", b"{}"),
    ("PUT", "/v1/agent/service/register", b'{"Name": "web", "Port": 80}'),
    ("PUT", "/v1/agent/service/deregister/web", None),
    ("POST", "/v1/operator/keyring", b'{"Key": "AAAAAAAAAAAAAAAAAAAAAA=="}'),
]


@pytest.fixture(params=["text", "json"])
def agent(request: pytest.FixtureRequest) -> Iterator[tuple[LineProcess, str]]:
    (port,) = free_ports(1)
    (http,) = free_ports(1)
    args = [sys.executable, "-m", "meshlite.cli", "agent", "--dev", "--name", "acl"]
    args += ["--bind", f"127.0.0.1:{port}", "--http", f"127.0.0.1:{http}", "--dns", "127.0.0.1:0"]
    args += ["--http-token", TOKEN, "--log-level", "trace"]
    if request.param == "json":
        args.append("--log-json")
    proc = spawn(args)
    try:
        assert proc.wait_for(lambda s: "HTTP API listening" in s, DEADLINE_S), proc.output()
        yield proc, f"http://127.0.0.1:{http}"
    finally:
        proc.kill()


def test_writes_need_the_token_and_no_token_is_ever_logged(
    agent: tuple[LineProcess, str],
) -> None:
    proc, url = agent
    with httpx.Client(base_url=url, timeout=10.0) as http:
        for method, path, body in WRITES:
            for headers in ({}, {"X-Consul-Token": WRONG}, {"Authorization": f"Bearer {WRONG}"}):
                r = http.request(method, path, content=body, headers=headers)
                assert r.status_code == 403, (method, path, headers, r.text)
                assert TOKEN not in r.text and WRONG not in r.text
            r = http.request(method, path, content=body, params={"token": WRONG})
            assert r.status_code == 403, (method, path, r.text)
        assert http.get("/v1/kv/acl/k").status_code == 404, "a refused write changed nothing"
        # The right token, in each of the three places, is let through.
        ok = [
            http.put("/v1/kv/acl/a", content=b"1", headers={"X-Consul-Token": TOKEN}),
            http.put("/v1/kv/acl/b", content=b"2", headers={"Authorization": f"Bearer {TOKEN}"}),
            http.put("/v1/kv/acl/c", content=b"3", params={"token": TOKEN}),
        ]
        assert [r.status_code for r in ok] == [200, 200, 200], [r.text for r in ok]
        keys = http.get("/v1/kv/acl/", params={"keys": ""}).json()
        assert keys == ["acl/a", "acl/b", "acl/c"]
        self_doc = http.get("/v1/agent/self").text
        assert TOKEN not in self_doc
    log = proc.output()
    assert TOKEN not in log, "the token appeared in a log line"
    assert WRONG not in log, "a client's wrong token appeared in a log line"
