"""The client commands (``meshlite members``, ``discover``, ``watch``, ``kv``, ...) as a user
runs them: subprocesses against a running ``meshlite agent --http`` subprocess (``--dev`` for
``kv``), every error path included (an unreachable agent, a malformed address, a wrong
token, an unknown service, a missing key, a failed check-and-set, a value too large)."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from test_http_consul import COMMAND, DEADLINE_S, AgentProcess

import meshlite

TOKEN = "s3cret-token"
KEY_1 = meshlite.generate_key()
WEB = {"service": {"name": "web", "id": "web-1", "port": 8080, "tags": ["v1", "[edge]"],
                   "meta": {"version": "1.4.2"}}}  # fmt: skip
# A TTL check starts critical: db is registered but not passing until someone passes it.
DB_TOML = '[service]\nname = "db"\nid = "db-1"\nport = 5432\n[service.check]\nttl = "10m"\n'


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One agent for the read-only and keyring tests: ``cli-1``, services web and db."""
    config = tmp_path_factory.mktemp("config")
    (config / "web.json").write_text(json.dumps(WEB))
    (config / "db.toml").write_text(DB_TOML)
    process = AgentProcess("--name", "cli-1", "--profile", "local", "--key", KEY_1,
                           "--http", "127.0.0.1:0", "--config-dir", str(config))  # fmt: skip
    try:
        yield process.http_address()
    finally:
        process.kill()


def meshlite_cli(
    *argv: str, addr: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MESHLITE_HTTP")}
    environ.update(env)
    if addr is not None:
        environ["MESHLITE_HTTP_ADDR"] = addr
    return subprocess.run([*COMMAND, *argv], capture_output=True, text=True, env=environ,
                          timeout=DEADLINE_S, check=False)  # fmt: skip


def ok(*argv: str, addr: str | None = None, **env: str) -> str:
    proc = meshlite_cli(*argv, addr=addr, **env)
    assert (proc.returncode, proc.stderr) == (0, ""), proc
    assert "\x1b[" not in proc.stdout  # no colours when not a terminal
    return proc.stdout


def error(*argv: str, addr: str | None = None, **env: str) -> str:
    """The one error line of a failing command (exit 1, nothing on stdout)."""
    proc = meshlite_cli(*argv, addr=addr, **env)
    assert (proc.returncode, proc.stdout) == (1, ""), proc
    [line] = proc.stderr.splitlines()
    assert line.startswith("meshlite: error: ")
    return line.removeprefix("meshlite: error: ")


def table(text: str) -> list[list[str]]:
    """Rows of a rich table (header first), cells split on runs of 3+ spaces."""
    rows = [line.strip() for line in text.splitlines() if line.strip() and "──" not in line]
    return [[cell.strip() for cell in row.split("   ") if cell.strip()] for row in rows]


# ------------------------------------------------------------------------------ reads


def test_members_and_catalog_nodes(agent: str) -> None:
    [header, row] = table(ok("members", addr=agent))
    assert header == ["Node", "Address", "Status", "Meta"]
    assert (row[0], row[2]) == ("cli-1", "alive")
    [member] = json.loads(ok("members", "--json", addr=agent))
    assert (member["Name"], member["Status"], f"{member['Addr']}:{member['Port']}") == (
        "cli-1", 1, row[1]
    )  # fmt: skip

    [header, row] = table(ok("catalog", "nodes", addr=f"http://{agent}/"))
    assert header == ["Node", "ID", "Address", "Meta"]
    assert (row[0], row[2]) == ("cli-1", "127.0.0.1")
    [node] = json.loads(ok("catalog", "nodes", "--json", "--http-addr", agent))
    assert (node["Node"], node["ID"]) == ("cli-1", row[1])


def test_services(agent: str) -> None:
    assert table(ok("services", addr=agent)) == [
        ["Service", "Tags"], ["db"], ["web", "[edge], v1"]
    ]  # fmt: skip
    assert json.loads(ok("services", "--json", addr=agent)) == {
        "db": [], "web": ["[edge]", "v1"]  # the catalog sorts tags
    }  # fmt: skip


def test_discover_passing_all_and_tag(agent: str) -> None:
    [header, web] = table(ok("discover", "web", addr=agent))
    assert header == ["ID", "Node", "Address", "Status", "Tags"]
    assert web == ["web-1", "cli-1", "127.0.0.1:8080", "passing", "v1, [edge]"]
    [entry] = json.loads(ok("discover", "web", "--json", addr=agent))
    assert (entry["Service"]["ID"], entry["Node"]["Node"]) == ("web-1", "cli-1")
    assert [c["CheckID"] for c in entry["Checks"]] == ["serfHealth"]

    assert ok("discover", "db", addr=agent) == "no passing instances of 'db'\n"
    assert json.loads(ok("discover", "db", "--json", addr=agent)) == []
    [_, db] = table(ok("discover", "db", "--all", addr=agent))
    assert db == ["db-1", "cli-1", "127.0.0.1:5432", "critical"]
    [entry] = json.loads(ok("discover", "db", "--all", "--json", addr=agent))
    assert entry["Checks"][1]["Status"] == "critical"

    assert table(ok("discover", "web", "--tag", "[edge]", addr=agent))[1][0] == "web-1"
    assert ok("discover", "web", "--tag", "v2", addr=agent) == (
        "no passing instances of 'web' with tag 'v2'\n"
    )


# ------------------------------------------------------------------------------ keyring


def test_keyring_install_use_remove_round_trip(agent: str) -> None:
    key_2 = meshlite.generate_key()
    assert table(ok("keyring", "list", addr=agent))[1:] == [[KEY_1, "yes", "1/1"]]
    assert ok("keyring", "install", key_2, addr=agent) == "key installed on every member\n"
    [ring] = json.loads(ok("keyring", "list", "--json", addr=agent))
    assert (ring["Keys"], ring["PrimaryKeys"]) == ({KEY_1: 1, key_2: 1}, {KEY_1: 1})

    reason = error("keyring", "remove", KEY_1, addr=agent)  # a 400 with the API's reason
    assert reason.startswith("the agent refused DELETE /v1/operator/keyring: 400 keyring remove:")
    assert "primary" in reason

    assert ok("keyring", "use", key_2, addr=agent) == "primary key changed on every member\n"
    assert ok("keyring", "remove", KEY_1, addr=agent) == "key removed on every member\n"
    assert table(ok("keyring", "list", addr=agent))[1:] == [[key_2, "yes", "1/1"]]
    reason = error("keyring", "install", "not-base64!", addr=agent)
    assert reason.startswith("the agent refused POST /v1/operator/keyring: 400 keyring install:")


# ------------------------------------------------------------------------------ watch


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _read_until(lines: queue.Queue[str], needle: str) -> str:
    seen = ""
    deadline = time.monotonic() + DEADLINE_S
    while needle not in seen:
        seen += lines.get(timeout=max(0.0, deadline - time.monotonic()))
    return seen


def test_watch_prints_the_list_and_each_change_until_interrupted(agent: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHLITE_HTTP")}
    env["MESHLITE_HTTP_ADDR"] = agent
    argv = ([*COMMAND, "watch", "web"], [*COMMAND, "watch", "web", "--json"])
    procs = [subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for a in argv]  # fmt: skip
    try:
        text, jsonl = (_lines(p) for p in procs)
        assert "web-1" in _read_until(text, "web-1")
        [first] = json.loads(_read_until(jsonl, "\n"))
        assert first["Service"]["ID"] == "web-1"
        with httpx.Client(base_url=f"http://{agent}") as http:
            body = {"Name": "web", "ID": "web-2", "Port": 8081, "Tags": ["v2"]}
            http.put("/v1/agent/service/register", json=body).raise_for_status()
            try:
                change = _read_until(text, "web-2")
                assert "web: 2 instance(s)" in change
                assert ["web-2", "cli-1", "127.0.0.1:8081", "passing", "v2"] in table(change)
                second = json.loads(_read_until(jsonl, "\n"))
                assert sorted(e["Service"]["ID"] for e in second) == ["web-1", "web-2"]
            finally:
                http.put("/v1/agent/service/deregister/web-2").raise_for_status()
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            assert p.wait(timeout=DEADLINE_S) == 0
            assert p.stderr is not None and p.stderr.read() == ""
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=DEADLINE_S)


# ------------------------------------------------------------------------------ kv


@pytest.fixture(scope="module")
def dev_agent() -> Iterator[str]:
    """``meshlite agent --dev``: one server with the KV store (on free ports)."""
    process = AgentProcess("--dev", "--name", "kv-1", "--http", "127.0.0.1:0",
                           "--dns", "127.0.0.1:0")  # fmt: skip
    try:
        yield process.http_address()
    finally:
        process.kill()


def kv_bytes(*argv: str, addr: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """``meshlite kv ...`` with bytes in and out (values are bytes, not text)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MESHLITE_HTTP")}
    environ["MESHLITE_HTTP_ADDR"] = addr
    return subprocess.run([*COMMAND, "kv", *argv], input=stdin, capture_output=True,
                          env=environ, timeout=DEADLINE_S, check=False)  # fmt: skip


def test_kv_put_and_get_text_binary_and_stdin(dev_agent: str) -> None:
    assert ok("kv", "put", "cfg/name", "héllo ✓", addr=dev_agent) == (
        "Success! Data written to: cfg/name\n"
    )
    got = kv_bytes("get", "cfg/name", addr=dev_agent)
    assert (got.returncode, got.stdout, got.stderr) == (0, "héllo ✓".encode(), b"")  # exact
    blob = bytes(range(256)) + b"\n\x00"
    for argv in (("put", "cfg/blob"), ("put", "cfg/blob", "-")):  # no VALUE, or "-": stdin
        put = kv_bytes(*argv, addr=dev_agent, stdin=blob)
        assert (put.returncode, put.stderr) == (0, b""), put
        got = kv_bytes("get", "cfg/blob", addr=dev_agent)
        assert (got.returncode, got.stdout) == (0, blob)
    ok("kv", "put", "cfg/port", "8080", "--flags", "42", addr=dev_agent)
    [entry] = json.loads(ok("kv", "get", "cfg/port", "--json", addr=dev_agent))
    assert (entry["Key"], entry["Flags"], entry["Value"]) == ("cfg/port", 42, "ODA4MA==")
    ok("kv", "put", "cfg/empty", "", addr=dev_agent)
    assert ok("kv", "get", "cfg/empty", addr=dev_agent) == ""


def test_kv_recurse_keys_and_delete(dev_agent: str) -> None:
    for key in ("tree/a", "tree/b/c", "tree/b/d"):
        ok("kv", "put", key, key.upper(), addr=dev_agent)
    kv_bytes("put", "tree/bin", addr=dev_agent, stdin=b"\xff\x00")
    rows = table(ok("kv", "get", "tree/", "--recurse", addr=dev_agent))
    assert rows[0] == ["Key", "Flags", "Index", "Session", "Value"]
    assert [(r[0], r[-1]) for r in rows[1:]] == [
        ("tree/a", "TREE/A"), ("tree/b/c", "TREE/B/C"), ("tree/b/d", "TREE/B/D"),
        ("tree/bin", "<2 bytes>"),
    ]  # fmt: skip
    assert table(ok("kv", "get", "tree/", "--keys", "--separator", "/", addr=dev_agent)) == [
        ["Key"], ["tree/a"], ["tree/b/"], ["tree/bin"]
    ]  # fmt: skip
    keys = json.loads(ok("kv", "get", "tree/b", "--keys", "--json", addr=dev_agent))
    assert keys == ["tree/b/c", "tree/b/d", "tree/bin"]
    entries = json.loads(ok("kv", "get", "tree/b/", "--recurse", "--json", addr=dev_agent))
    assert [e["Key"] for e in entries] == ["tree/b/c", "tree/b/d"]

    assert ok("kv", "delete", "tree/a", addr=dev_agent) == "Success! Deleted key: tree/a\n"
    assert ok("kv", "delete", "tree/", "--recurse", addr=dev_agent) == (
        "Success! Deleted keys with prefix: tree/\n"
    )
    assert ok("kv", "get", "tree/", "--recurse", addr=dev_agent) == "no keys under 'tree/'\n"
    assert json.loads(ok("kv", "get", "tree/", "--keys", "--json", addr=dev_agent)) == []


def test_kv_cas_success_and_failure(dev_agent: str) -> None:
    ok("kv", "put", "cas/k", "v1", "--cas", "0", addr=dev_agent)
    assert error("kv", "put", "cas/k", "v1", "--cas", "0", addr=dev_agent) == (
        "CAS failed: 'cas/k' already exists (--cas 0 only creates a key)"
    )
    [entry] = json.loads(ok("kv", "get", "cas/k", "--json", addr=dev_agent))
    index = str(entry["ModifyIndex"])
    ok("kv", "put", "cas/k", "v2", "--cas", index, addr=dev_agent)
    line = error("kv", "put", "cas/k", "v3", "--cas", index, addr=dev_agent)
    assert line.startswith(f"CAS failed: 'cas/k' is no longer at index {index} ")
    line = error("kv", "delete", "cas/k", "--cas", index, addr=dev_agent)
    assert line.startswith(f"CAS failed: 'cas/k' is not at index {index}: nothing was deleted")
    assert ok("kv", "get", "cas/k", addr=dev_agent) == "v2"
    [entry] = json.loads(ok("kv", "get", "cas/k", "--json", addr=dev_agent))
    ok("kv", "delete", "cas/k", "--cas", str(entry["ModifyIndex"]), addr=dev_agent)
    assert error("kv", "get", "cas/k", addr=dev_agent) == "key not found: 'cas/k'"


def test_kv_errors(dev_agent: str) -> None:
    assert error("kv", "get", "no/such/key", addr=dev_agent) == "key not found: 'no/such/key'"
    assert error("kv", "get", "no/such/key", "--json", addr=dev_agent) == (
        "key not found: 'no/such/key'"
    )
    big = kv_bytes("put", "big", addr=dev_agent, stdin=b"x" * (600 * 1024))
    assert (big.returncode, big.stdout) == (1, b"")
    assert big.stderr.decode().startswith(
        "meshlite: error: the agent refused PUT /v1/kv/big: 413 Request body(614400 bytes) "
        "too large, max size: 524288 bytes."
    )
    port = _closed_port()
    for argv in (("get", "k"), ("put", "k", "v")):
        line = error("kv", *argv, addr=f"127.0.0.1:{port}")
        assert line.startswith(f"cannot reach the agent's HTTP API at http://127.0.0.1:{port} ")
    usage = [
        ["kv", "get"], ["kv", "get", "--separator", "/", "k"],
        ["kv", "delete", "k", "--recurse", "--cas", "1"], ["kv", "put", "k", "v", "--cas", "-1"],
    ]  # fmt: skip
    for argv in usage:
        proc = meshlite_cli(*argv, addr=dev_agent)
        assert proc.returncode == 2, proc
        [line] = proc.stderr.splitlines()
        assert line.startswith("meshlite: error: ")


# ------------------------------------------------------------------------------ errors


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_agent_names_the_address_and_the_variable() -> None:
    port = _closed_port()
    line = error("members", addr=f"127.0.0.1:{port}")
    assert line.startswith(f"cannot reach the agent's HTTP API at http://127.0.0.1:{port} ")
    assert "connection refused" in line and "MESHLITE_HTTP_ADDR" in line
    line = error("watch", "web", "--http-addr", f"http://127.0.0.1:{port}")
    assert "address from --http-addr" in line


@pytest.mark.parametrize(
    ("addr", "reason"),
    [
        ("ftp://127.0.0.1:8500", "expected 'host:port' or 'http://host:port'"),
        ("127.0.0.1:99999", "port must be between 1 and 65535"),
        ("127.0.0.1:http", "port 'http' is not a number"),
        ("http://127.0.0.1:8500/v1", "without a path"),
        ("bad host:8500", "is neither an IP address nor a host name"),
    ],
)
def test_a_malformed_address_is_one_line(addr: str, reason: str) -> None:
    line = error("services", addr=addr)
    assert line.startswith(f"MESHLITE_HTTP_ADDR {addr!r}") and reason in line


def test_unknown_service(agent: str) -> None:
    line = error("discover", "nope", addr=agent)
    assert (
        line == "unknown service 'nope': no instance of it is registered (see 'meshlite services')"
    )


def test_token_errors_then_leave_stops_the_agent() -> None:
    process = AgentProcess("--name", "cli-2", "--profile", "local", "--http", "127.0.0.1:0",
                           "--http-token", TOKEN, "--http-token-reads")  # fmt: skip
    try:
        addr = process.http_address()
        line = error("members", addr=addr)
        assert line == "the agent requires an ACL token (403 Permission denied): " \
                       "set MESHLITE_HTTP_TOKEN / --token"  # fmt: skip
        line = error("leave", "--token", "wrong", addr=addr)
        assert line == "the agent refused the token (403 Permission denied): " \
                       "check MESHLITE_HTTP_TOKEN / --token"  # fmt: skip
        assert process.proc.poll() is None
        line = error("kv", "put", "k", "v", addr=addr)  # refused before the store is asked
        assert line == "the agent requires an ACL token (403 Permission denied): " \
                       "set MESHLITE_HTTP_TOKEN / --token"  # fmt: skip
        assert table(ok("members", addr=addr, MESHLITE_HTTP_TOKEN=TOKEN))[1][0] == "cli-2"
        assert ok("leave", "--token", TOKEN, addr=addr).startswith("graceful leave complete")
        assert process.proc.wait(timeout=DEADLINE_S) == 0
    finally:
        process.kill()


def test_usage_errors_exit_2() -> None:
    for argv in (["catalog"], ["keyring"], ["keyring", "install"], ["discover"]):
        proc = meshlite_cli(*argv)
        assert proc.returncode == 2, proc
        [line] = proc.stderr.splitlines()
        assert line.startswith("meshlite: error: ")
