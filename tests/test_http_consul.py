"""py-consul, the real Consul client, against meshlite's HTTP API.

The same scenarios run against an in-process ``Mesh(http=...)`` (both anyio backends;
the client is synchronous, so it runs in a worker thread while the mesh's loop serves it)
and against a ``meshlite agent`` subprocess: services, checks and health on any peer, the KV
store, transactions, sessions and locks on a one-server mesh (``agent --dev``).
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import attrs
import consul
import pytest
from http_served import py_consul, served
from meshes import eventually, eventually_in_thread

import meshlite
from meshlite import Mesh

pytestmark = pytest.mark.anyio

DEADLINE_S = 30.0
SCRIPT = Path(sys.executable).with_name("meshlite")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "meshlite.cli"]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# ------------------------------------------------------------------------------ scenario


def service_lifecycle(c: consul.Consul, node: str) -> None:
    """Register with a TTL check, pass it, read health/catalog, deregister."""
    ttl = consul.Check.ttl("30s")
    assert c.agent.service.register("web", service_id="web-1", port=8080, tags=["v1"],
                                    meta={"zone": "a"}, check=ttl)  # fmt: skip
    assert c.agent.services()["web-1"]["Service"] == "web"
    assert c.agent.service_definition("web-1")["Port"] == 8080
    check = c.agent.checks()["service:web-1"]
    assert (check["Status"], check["Type"], check["ServiceID"]) == ("critical", "ttl", "web-1")
    assert c.health.service("web", passing=True)[1] == []  # critical until passed

    assert c.agent.check.ttl_pass("service:web-1", notes="all good")
    _index, [entry] = c.health.service("web", passing=True)
    assert entry["Node"]["Node"] == node and entry["Service"]["ID"] == "web-1"
    assert entry["Service"]["Meta"] == {"zone": "a"}
    assert [ch["CheckID"] for ch in entry["Checks"]] == ["serfHealth", "service:web-1"]
    assert [ch["Status"] for ch in entry["Checks"]] == ["passing", "passing"]
    assert entry["Checks"][1]["Output"] == "all good"
    assert c.health.service("web", tag="v2")[1] == []

    assert c.agent.check.ttl_warn("service:web-1", notes="slow")
    assert c.health.service("web", passing=True)[1] == []
    assert c.health.service("web")[1][0]["Checks"][1]["Status"] == "warning"
    assert c.agent.check.ttl_pass("service:web-1")

    assert c.catalog.services()[1] == {"web": ["v1"]}
    assert node in [n["Node"] for n in c.catalog.nodes()[1]]
    [instance] = c.catalog.service("web", tag="v1")[1]
    assert (instance["ServiceID"], instance["ServicePort"]) == ("web-1", 8080)
    assert instance["Node"] == node
    assert c.catalog.node(node)[1]["Services"]["web-1"]["Tags"] == ["v1"]
    assert c.catalog.node("no-such-node")[1] is None
    states = {ch["CheckID"]: ch["Status"] for ch in c.health.node(node)[1]}
    assert states == {"serfHealth": "passing", "service:web-1": "passing"}
    assert [ch["CheckID"] for ch in c.health.checks("web")[1]] == ["service:web-1"]
    assert "service:web-1" in [ch["CheckID"] for ch in c.health.state("passing")[1]]

    assert c.agent.service.deregister("web-1")
    assert c.health.service("web")[1] == []
    assert c.catalog.services()[1] == {}
    assert c.agent.services() == {}


def check_registration(c: consul.Consul, node: str, address: str) -> None:
    """agent.check.register/deregister: a TTL check on a service under its own id, an
    HTTP check against this very agent, and a node check that takes the node out."""
    assert c.agent.service.register("api", service_id="api-1", port=9000)
    assert c.agent.check.register("api ready", consul.Check.ttl("30s"), check_id="api-ready",
                                  notes="set by the deploy", service_id="api-1")  # fmt: skip
    check = c.agent.checks()["api-ready"]
    assert (check["Name"], check["ServiceID"], check["ServiceName"], check["Type"]) == (
        "api ready", "api-1", "api", "ttl"
    )  # fmt: skip
    assert check["Status"] == "critical"
    assert c.agent.check.ttl_pass("api-ready", notes="up")
    [entry] = c.health.service("api", passing=True)[1]
    assert [ch["CheckID"] for ch in entry["Checks"]] == ["serfHealth", "api-ready"]

    self_check = consul.Check.http(f"http://{address}/v1/agent/self", "10s", timeout="5s",
                                   header={"Accept": ["application/json"]})  # fmt: skip
    assert c.agent.check.register("agent up", self_check, service_id="api-1")
    deadline = time.monotonic() + DEADLINE_S
    while c.agent.checks()["agent up"]["Status"] != "passing":  # its first run is prompt
        assert time.monotonic() < deadline, c.agent.checks()["agent up"]
        time.sleep(0.05)
    assert c.agent.checks()["agent up"]["Type"] == "http"

    # A node check (no service id): critical takes every service of the node out.
    assert c.agent.check.register("maintenance", consul.Check.ttl("1h"))
    assert c.agent.checks()["maintenance"]["ServiceID"] == ""
    assert c.health.service("api", passing=True)[1] == []
    states = {ch["CheckID"]: ch["Status"] for ch in c.health.node(node)[1]}
    assert states == {"serfHealth": "passing", "maintenance": "critical",
                      "api-ready": "passing", "agent up": "passing"}  # fmt: skip
    assert c.agent.check.ttl_pass("maintenance")
    assert len(c.health.service("api", passing=True)[1]) == 1
    assert c.agent.check.ttl_fail("maintenance")
    assert c.agent.check.deregister("maintenance")
    assert len(c.health.service("api", passing=True)[1]) == 1

    with pytest.raises(consul.exceptions.BadRequest, match="does not exist"):
        c.agent.check.register("x", consul.Check.ttl("1s"), service_id="no-such-service")
    assert c.agent.check.deregister("agent up")
    assert c.agent.check.deregister("api-ready")
    assert not c.agent.check.deregister("api-ready")  # 404: py-consul answers False
    assert c.agent.checks() == {}
    assert c.agent.service.deregister("api-1")


def agent_and_status(c: consul.Consul, node: str, key: str) -> None:
    me = c.agent.self()
    assert (me["Config"]["NodeName"], me["Member"]["Name"]) == (node, node)
    [member] = c.agent.members()
    assert (member["Name"], member["Status"]) == (node, 1)
    assert (c.status.leader(), c.status.peers()) == ("", [])
    [ring] = c.operator.keyring_list()
    assert (ring["Keys"], ring["PrimaryKeys"], ring["NumNodes"]) == ({key: 1}, {key: 1}, 1)


def blocking_queries(c: consul.Consul, other: consul.Consul) -> None:
    """One blocking query woken by a registration, one that times out."""
    index, entries = c.health.service("db")
    assert entries == []
    answer: dict[str, Any] = {}

    def wait() -> None:
        answer["result"] = other.health.service("db", index=index, wait="20s")
        answer["at"] = time.monotonic()

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive(), "the blocking query returned before anything changed"
    registered = time.monotonic()
    assert c.agent.service.register("db", service_id="db-1", port=5432)
    waiter.join(DEADLINE_S)
    new_index, [entry] = answer["result"]
    assert int(new_index) > int(index) and entry["Service"]["ID"] == "db-1"
    assert answer["at"] - registered < 5.0

    index, _ = c.catalog.services()
    start = time.monotonic()
    same, _ = c.catalog.services(index=index, wait="1s")
    elapsed = time.monotonic() - start
    assert same == index
    assert 0.9 <= elapsed < 1.0 + 1.0 / 16 + 2.0  # the wait plus at most 1/16 of jitter
    assert c.agent.service.deregister("db-1")


# ------------------------------------------------------------------------------ KV scenario


def wait_for_leader(c: consul.Consul) -> str:
    deadline = time.monotonic() + DEADLINE_S
    while not (leader := c.status.leader()):
        assert time.monotonic() < deadline, "no Raft leader"
        time.sleep(0.05)
    return str(leader)


def kv_round_trips(c: consul.Consul) -> None:
    """Binary and unicode values and keys, flags, empty values, recurse and keys."""
    blob = bytes(range(256)) * 16
    assert c.kv.put("bin/blob", blob)
    _index, entry = c.kv.get("bin/blob")
    assert (entry["Key"], entry["Value"], entry["Flags"]) == ("bin/blob", blob, 0)
    assert "Session" not in entry  # omitted when unlocked, as Consul
    text = "héllo wörld ✓ 日本語 🚀"
    assert c.kv.put("unicode/ключ/日本", text.encode(), flags=42)
    _index, entry = c.kv.get("unicode/ключ/日本")
    assert (entry["Key"], entry["Value"].decode(), entry["Flags"]) == (
        "unicode/ключ/日本",
        text,
        42,
    )
    assert c.kv.put("empty", None)
    assert c.kv.get("empty")[1]["Value"] is None  # Consul's null for an empty value
    index, missing = c.kv.get("no/such/key")
    assert missing is None and int(index) > 0  # a 404 still carries X-Consul-Index

    for key in ("app/a", "app/b/c", "app/b/d", "apple"):
        assert c.kv.put(key, key.encode())
    _index, entries = c.kv.get("app/", recurse=True)
    assert [(e["Key"], e["Value"]) for e in entries] == [
        ("app/a", b"app/a"), ("app/b/c", b"app/b/c"), ("app/b/d", b"app/b/d")
    ]  # fmt: skip
    assert c.kv.get("app", keys=True)[1] == ["app/a", "app/b/c", "app/b/d", "apple"]
    assert c.kv.get("app/", keys=True, separator="/")[1] == ["app/a", "app/b/"]
    assert c.kv.get("nothing/", recurse=True)[1] is None
    assert c.kv.delete("app/", recurse=True)
    assert c.kv.get("app/", recurse=True)[1] is None
    assert c.kv.get("apple")[1]["Value"] == b"apple"


def kv_cas(c: consul.Consul) -> None:
    """Check-and-set puts and deletes, and a transaction's all-or-nothing."""
    assert c.kv.put("cas/k", "v1", cas=0)  # create only
    assert not c.kv.put("cas/k", "again", cas=0)
    _index, entry = c.kv.get("cas/k")
    first = entry["ModifyIndex"]
    assert c.kv.put("cas/k", "v2", cas=first)
    assert not c.kv.put("cas/k", "v3", cas=first)  # stale
    _index, entry = c.kv.get("cas/k")
    assert (entry["Value"], entry["CreateIndex"]) == (b"v2", first)
    assert entry["ModifyIndex"] > first
    assert not c.kv.delete("cas/k", cas=first)
    assert c.kv.delete("cas/k", cas=entry["ModifyIndex"])
    assert c.kv.get("cas/k")[1] is None

    def op(verb: str, key: str, value: bytes = b"", index: int = 0) -> dict[str, Any]:
        kv = {"Verb": verb, "Key": key, "Value": base64.b64encode(value).decode()}
        return {"KV": {**kv, "Index": index}}

    answer = c.txn.put([op("set", "txn/a", b"1"), op("set", "txn/b", b"2"), op("get", "txn/a")])
    assert answer["Errors"] is None
    assert [r["KV"]["Key"] for r in answer["Results"]] == ["txn/a", "txn/b", "txn/a"]
    assert base64.b64decode(answer["Results"][2]["KV"]["Value"]) == b"1"
    with pytest.raises(consul.exceptions.ClientError, match="409"):
        c.txn.put([op("set", "txn/c", b"3"), op("cas", "txn/a", b"x", index=1)])
    assert c.kv.get("txn/c")[1] is None  # nothing of a failed transaction applied


def kv_blocking(c: consul.Consul, other: consul.Consul) -> None:
    """A blocking read woken by a write (its latency printed), and one that times out."""
    index, _ = c.kv.get("watch/key")
    answer: dict[str, Any] = {}

    def wait() -> None:
        answer["result"] = other.kv.get("watch/key", index=index, wait="20s")
        answer["at"] = time.perf_counter()

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive(), "the blocking read returned before the key was written"
    written = time.perf_counter()
    assert c.kv.put("watch/key", "now")
    waiter.join(DEADLINE_S)
    new_index, entry = answer["result"]
    assert int(new_index) > int(index) and entry["Value"] == b"now"
    print(f"KV blocking query woken {1000 * (answer['at'] - written):.1f} ms after the write "
          "was sent")  # fmt: skip

    start = time.monotonic()
    same, entry = c.kv.get("watch/key", index=new_index, wait="1s")
    elapsed = time.monotonic() - start
    assert (same, entry["Value"]) == (new_index, b"now")
    assert elapsed >= 0.9, elapsed  # it waited (the cap, jitter and wake-up are not timed)


def sessions_and_locks(c: consul.Consul, node: str) -> None:
    """Sessions: create, acquire/release, contention, info/list/node, renew, destroy."""
    holder = c.session.create(name="holder", ttl=30, lock_delay=0)
    rival = c.session.create(lock_delay=0)
    assert c.kv.put("locks/job", "holder", acquire=holder)
    assert not c.kv.put("locks/job", "rival", acquire=rival)  # held
    _index, entry = c.kv.get("locks/job")
    assert (entry["Session"], entry["LockIndex"], entry["Value"]) == (holder, 1, b"holder")
    assert not c.kv.put("locks/job", "x", release=rival)  # not the holder
    assert c.kv.put("locks/job", "released", release=holder)
    assert "Session" not in c.kv.get("locks/job")[1]
    assert c.kv.put("locks/job", "rival", acquire=rival)

    _index, info = c.session.info(holder)
    assert (info["ID"], info["Name"], info["Node"], info["TTL"]) == (holder, "holder", node, "30s")
    assert (info["Behavior"], info["LockDelay"]) == ("release", 0)
    assert {s["ID"] for s in c.session.list()[1]} == {holder, rival}
    assert {s["ID"] for s in c.session.node(node)[1]} == {holder, rival}
    assert c.session.renew(holder)["ID"] == holder

    assert c.session.destroy(rival)  # its lock is released
    assert "Session" not in c.kv.get("locks/job")[1]
    assert c.session.info(rival)[1] is None
    with pytest.raises(consul.NotFound):
        c.session.renew(rival)

    ephemeral = c.session.create(behavior="delete", lock_delay=0)
    assert c.kv.put("locks/ephemeral", "mine", acquire=ephemeral)
    assert c.session.destroy(ephemeral)
    assert c.kv.get("locks/ephemeral")[1] is None  # Behavior delete: the key goes too
    assert c.session.destroy(holder)
    assert c.session.list()[1] == []


def server_status(c: consul.Consul, gossip_address: str) -> None:
    assert wait_for_leader(c) == gossip_address
    assert c.status.peers() == [gossip_address]


def kv_scenario(c: consul.Consul, other: consul.Consul, node: str, gossip_address: str) -> None:
    server_status(c, gossip_address)
    kv_round_trips(c)
    kv_cas(c)
    kv_blocking(c, other)
    sessions_and_locks(c, node)


# ------------------------------------------------------------------------------ in process


async def test_py_consul_against_an_in_process_mesh(anyio_backend: str) -> None:
    key = meshlite.generate_key()
    async with served("api-1", key=key) as (mesh, _url):
        assert mesh.http_address is not None
        c, other = py_consul(mesh.http_address), py_consul(mesh.http_address)
        await anyio.to_thread.run_sync(service_lifecycle, c, "api-1")
        await anyio.to_thread.run_sync(check_registration, c, "api-1", mesh.http_address)
        await anyio.to_thread.run_sync(agent_and_status, c, "api-1", key)
        await anyio.to_thread.run_sync(blocking_queries, c, other)


async def test_py_consul_kv_and_sessions_against_an_in_process_server(anyio_backend: str) -> None:
    async with served("kv-1", server=True, bootstrap_expect=1) as (mesh, _url):
        assert mesh.http_address is not None and mesh.address is not None
        c, other = py_consul(mesh.http_address), py_consul(mesh.http_address)
        await anyio.to_thread.run_sync(kv_scenario, c, other, "kv-1", mesh.address)


async def test_another_peers_service_shows_its_aggregate_and_serf_health(
    anyio_backend: str,
) -> None:
    """A service of peer b, seen through a's API: one aggregate check; when b fails,
    serfHealth turns critical and ?passing drops it; once b is reaped, it is gone."""
    # Reaped 2.5 s after death (the local profile: 5 s): shorter, still long enough to see.
    quick_reap = attrs.evolve(meshlite.SwimConfig.local(), gossip_to_the_dead_s=2.5)
    async with (
        served("a", config=quick_reap) as (a, _url),
        Mesh("b", "127.0.0.1:0", join=[a.address], profile="local") as b,
    ):
        assert a.http_address is not None
        c = py_consul(a.http_address)
        await b.register("cache", 6379, id="cache-1")
        await eventually(lambda: bool(a.discover("cache")))
        _index, [entry] = await anyio.to_thread.run_sync(lambda: c.health.service("cache"))
        assert [(ch["CheckID"], ch["Status"], ch["Type"]) for ch in entry["Checks"]] == [
            ("serfHealth", "passing", ""),
            ("service:cache-1", "passing", "aggregate"),
        ]
        await b.close()  # a crash, to the others

        def serf_state() -> str | None:
            entries = c.health.service("cache")[1]
            return entries[0]["Checks"][0]["Status"] if entries else None

        await eventually_in_thread(lambda: serf_state() == "critical")
        passing = await anyio.to_thread.run_sync(lambda: c.health.service("cache", passing=True))
        assert passing[1] == []
        nodes = await anyio.to_thread.run_sync(lambda: c.catalog.nodes()[1])
        assert {n["Node"] for n in nodes} == {"a", "b"}  # failed nodes stay until reaped
        await eventually_in_thread(lambda: serf_state() is None)
        assert await anyio.to_thread.run_sync(lambda: c.catalog.services()[1]) == {}


# ------------------------------------------------------------------------------ agent


class AgentProcess:
    """``meshlite agent --log-json`` with its HTTP API on a free port."""

    def __init__(self, *argv: str) -> None:
        self.proc = subprocess.Popen(
            [*COMMAND, "agent", "--log-json", "--bind", "127.0.0.1:0", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []

    def http_address(self) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            raw = self.proc.stdout.readline()
            if not raw:
                break
            line = json.loads(raw)
            self.lines.append(line)
            if line.get("event") == "start":
                return str(line["http"])
        pytest.fail(f"no start line; exit={self.proc.poll()} {self.lines}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=DEADLINE_S)


@pytest.fixture
def agent_process() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    try:
        yield started
    finally:
        for agent in started:
            agent.kill()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_py_consul_against_a_meshlite_agent(
    agent_process: list[AgentProcess], anyio_backend: str
) -> None:
    key = meshlite.generate_key()
    agent = AgentProcess("--name", "agent-1", "--profile", "local", "--key", key,
                         "--http", "127.0.0.1:0")  # fmt: skip
    agent_process.append(agent)
    address = agent.http_address()
    c, other = py_consul(address), py_consul(address)
    await anyio.to_thread.run_sync(service_lifecycle, c, "agent-1")
    await anyio.to_thread.run_sync(check_registration, c, "agent-1", address)
    await anyio.to_thread.run_sync(agent_and_status, c, "agent-1", key)
    await anyio.to_thread.run_sync(blocking_queries, c, other)
    assert await anyio.to_thread.run_sync(c.agent.leave)  # Consul's: leave, then exit
    assert await anyio.to_thread.run_sync(lambda: agent.proc.wait(timeout=DEADLINE_S)) == 0
    assert agent.proc.stderr is not None and agent.proc.stderr.read() == ""


def test_py_consul_kv_against_a_dev_agent(agent_process: list[AgentProcess]) -> None:
    """``meshlite agent --dev``: a one-server mesh with the KV store, as consul -dev."""
    agent = AgentProcess("--dev", "--name", "dev-1", "--http", "127.0.0.1:0",
                         "--dns", "127.0.0.1:0")  # fmt: skip
    agent_process.append(agent)
    address = agent.http_address()
    start = agent.lines[-1]
    assert start["server"] is True
    c, other = py_consul(address), py_consul(address)
    kv_scenario(c, other, "dev-1", start["address"])
    c.agent.service.register("web", port=80)  # the catalog is served alongside the KV
    assert c.catalog.services()[1] == {"web": []}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_agent_sigterm_still_leaves_with_http_running(
    agent_process: list[AgentProcess], anyio_backend: str
) -> None:
    agent = AgentProcess("--profile", "local", "--http", "127.0.0.1:0")
    agent_process.append(agent)
    address = agent.http_address()
    assert await anyio.to_thread.run_sync(lambda: py_consul(address).agent.self())
    agent.proc.send_signal(signal.SIGTERM)
    assert await anyio.to_thread.run_sync(lambda: agent.proc.wait(timeout=DEADLINE_S)) == 0


# ------------------------------------------------------------------------------ CLI


def test_dev_mode_serves_http_on_8500_unless_told_otherwise() -> None:
    from meshlite.cli import agent_config, build_parser

    def config(*argv: str) -> Any:
        return agent_config(build_parser().parse_args(["agent", *argv]))

    assert config("--dev").http == "127.0.0.1:8500"
    assert config("--dev", "--http", "127.0.0.1:0").http == "127.0.0.1:0"
    assert config().http is None
    cfg = config("--http", "127.0.0.1:8501", "--http-token", "t", "--http-token-reads")
    kwargs = cfg.mesh_kwargs()
    assert (kwargs["http"], kwargs["http_token"], kwargs["http_token_reads"]) == (
        "127.0.0.1:8501", "t", True
    )  # fmt: skip


def test_a_taken_http_port_fails_with_one_line() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [*COMMAND, "agent", "--bind", "127.0.0.1:0", "--http", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=DEADLINE_S, check=False,
        )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        f"meshlite: error: cannot bind 127.0.0.1:{port} (HTTP API): Address already in use"
    ]
