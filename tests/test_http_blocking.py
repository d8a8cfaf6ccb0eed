"""Blocking queries: the directory's catalog-wide index, and holding a request on it.

The index unit tests drive a real ``Directory`` synchronously; the rest use real sockets
on both anyio backends (httpx as the client, on the mesh's own loop).
"""

from __future__ import annotations

import time

import anyio
import pytest
from http_served import client, served

from meshlite import Mesh, TTLCheck
from meshlite._core.catalog import Record
from meshlite._core.directory import Directory
from meshlite._core.events import Member, MemberEvent, MemberEventKind
from meshlite._http.blocking import JITTER_FRACTION, MAX_WAIT_S, Blocking

pytestmark = pytest.mark.anyio

DEADLINE_S = 30.0


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# ------------------------------------------------------------------------------ index


def record(node: str, port: int, status: str = "passing") -> Record:
    return Record(node, "web-1", 0, "web", "10.0.0.1", port, (), {}, status)


def member_event(kind: MemberEventKind, name: str) -> MemberEvent:
    return MemberEvent(kind, Member(name, "10.0.0.2", 7946, "alive", 1))


def test_the_index_moves_on_every_visible_change_and_only_then() -> None:
    d = Directory("a", first_version=1_000)
    assert d.index == 1_000  # starts where the catalog's versions do
    _names, _b = d.publish(record("a", 80), now=0.0)
    assert d.index == 1_001
    d.publish(record("a", 80), now=1.0)  # the same fields again: a new version, same results
    assert d.index == 1_001
    d.publish(record("a", 80, "critical"), now=2.0)
    assert d.index == 1_002
    d.on_member(member_event(MemberEventKind.JOIN, "b"))  # a node joined: catalog/nodes moved
    assert d.index == 1_003
    d.on_broadcast(b"\xc1 garbage", now=3.0)
    assert (d.index, d.drops) == (1_003, 1)
    before = d.index
    d.withdraw("web-1", now=4.0)
    assert d.index > before
    values = [d.index]
    for kind in (MemberEventKind.SUSPECT, MemberEventKind.DEAD, MemberEventKind.REAP):
        d.on_member(member_event(kind, "b"))
        values.append(d.index)
    assert values == sorted(set(values)), "the index only grows"


# ------------------------------------------------------------------------------ over HTTP


async def test_a_change_on_another_peer_wakes_a_blocked_health_query(anyio_backend: str) -> None:
    async with served("a") as (a, url), client(url) as http:
        async with Mesh("b", "127.0.0.1:0", join=[a.address], profile="local") as b:
            # Let b's join settle first: its member event moves a's index too.
            with anyio.fail_after(DEADLINE_S):
                while not all(len(m.members()) == 2 for m in (a, b)):
                    await anyio.sleep(0.02)
            first = await http.get("/v1/health/service/db")
            index = first.headers["x-consul-index"]
            answer: dict[str, object] = {}

            async def blocked() -> None:
                r = await http.get(f"/v1/health/service/db?index={index}&wait=20s")
                answer["response"], answer["at"] = r, time.monotonic()

            async with anyio.create_task_group() as tg:
                tg.start_soon(blocked)
                await anyio.sleep(0.3)
                assert not answer, "returned before anything changed"
                changed_at = time.monotonic()
                await b.register("db", 5432, id="db-1")
            r = answer["response"]
            assert hasattr(r, "json")
            entries = r.json()
            if not entries:  # woken by b's join gossip first: block again on the new index
                again = await http.get(
                    f"/v1/health/service/db?index={r.headers['x-consul-index']}&wait=20s"
                )
                entries = again.json()
            assert [e["Service"]["ID"] for e in entries] == ["db-1"]
            assert int(r.headers["x-consul-index"]) > int(index)
            assert float(str(answer["at"])) - changed_at < 10.0


async def test_a_new_check_output_alone_wakes_a_blocked_query(anyio_backend: str) -> None:
    # A TTL note that keeps the status (critical -> critical) changes nothing to gossip,
    # but this agent's HTTP view shows the output: a held query must see it.
    async with served() as (mesh, url), client(url) as http:
        await mesh.register("db", 5432, id="db-1", check=TTLCheck(ttl_s=60.0))
        first = await http.get("/v1/health/state/any")
        index = first.headers["x-consul-index"]
        answer: dict[str, object] = {}

        async def blocked() -> None:
            answer["response"] = await http.get(f"/v1/health/state/any?index={index}&wait=20s")

        async with anyio.create_task_group() as tg:
            tg.start_soon(blocked)
            await anyio.sleep(0.3)
            assert not answer, "returned before anything changed"
            start = time.monotonic()
            mesh.ttl_fail("service:db-1", "connection refused")
        r = answer["response"]
        assert hasattr(r, "json") and time.monotonic() - start < 10.0
        assert int(r.headers["x-consul-index"]) > int(index)
        outputs = {c["CheckID"]: c["Output"] for c in r.json()}
        assert outputs["service:db-1"] == "connection refused"
        # The same note again changes nothing: the index stays.
        mesh.ttl_fail("service:db-1", "connection refused")
        again = await http.get("/v1/health/state/any")
        assert again.headers["x-consul-index"] == r.headers["x-consul-index"]


async def test_a_blocking_query_times_out_with_the_same_index(anyio_backend: str) -> None:
    async with served() as (_mesh, url), client(url) as http:
        index = (await http.get("/v1/catalog/nodes")).headers["x-consul-index"]
        start = time.monotonic()
        r = await http.get(f"/v1/catalog/nodes?index={index}&wait=500ms")
        elapsed = time.monotonic() - start
        assert r.status_code == 200 and r.headers["x-consul-index"] == index
        assert 0.45 <= elapsed < 0.5 + 0.5 / JITTER_FRACTION + 1.5
        # An index from the future (a previous life of the agent) answers at once.
        start = time.monotonic()
        r = await http.get(f"/v1/catalog/nodes?index={int(index) + 1000}&wait=20s")
        assert r.status_code == 200 and time.monotonic() - start < 5.0


async def test_closing_the_mesh_answers_blocked_queries_at_once(anyio_backend: str) -> None:
    async with served() as (mesh, url), client(url) as http:
        index = (await http.get("/v1/catalog/services")).headers["x-consul-index"]
        answer: dict[str, int] = {}

        async def blocked() -> None:
            r = await http.get(f"/v1/catalog/services?index={index}&wait=5m")
            answer["status"] = r.status_code

        async with anyio.create_task_group() as tg:
            tg.start_soon(blocked)
            await anyio.sleep(0.3)
            start = time.monotonic()
            await mesh.close()
        assert answer == {"status": 503}  # "the agent is shutting down", at once
        assert time.monotonic() - start < 3.0


async def test_a_client_that_goes_away_releases_its_wait(anyio_backend: str) -> None:
    async with served() as (mesh, url):
        http_server = mesh._http  # the server's bookkeeping of held queries
        assert http_server is not None
        async with client(url) as http:
            index = (await http.get("/v1/catalog/services")).headers["x-consul-index"]
            with anyio.move_on_after(0.5):
                await http.get(f"/v1/catalog/services?index={index}&wait=5m")
            assert len(http_server.api.waits) == 1
        # The client closed its connection: the held query ends without any change.
        with anyio.fail_after(DEADLINE_S):
            while http_server.api.waits:
                await anyio.sleep(0.05)


async def test_a_held_kv_read_ends_at_close_and_when_its_client_goes(anyio_backend: str) -> None:
    """KV blocking reads wait inside ``mesh.kv.read``; the HTTP layer still ends them when
    the server closes (answered at once) or the client disconnects (released)."""
    async with served(server=True, bootstrap_expect=1) as (mesh, url):
        http_server = mesh._http
        assert http_server is not None
        async with client(url) as http:
            index = (await http.get("/v1/kv/k")).headers["x-consul-index"]  # waits for a leader
            with anyio.move_on_after(0.5):
                await http.get(f"/v1/kv/k?index={index}&wait=5m")
            assert len(http_server.api.waits) == 1
        with anyio.fail_after(DEADLINE_S):  # the client closed its connection
            while http_server.api.waits:
                await anyio.sleep(0.05)

        async with client(url) as http:
            answer: dict[str, int] = {}

            async def blocked() -> None:
                r = await http.get(f"/v1/kv/?recurse&index={index}&wait=5m")
                answer["status"] = r.status_code

            async with anyio.create_task_group() as tg:
                tg.start_soon(blocked)
                await anyio.sleep(0.3)
                assert not answer
                start = time.monotonic()
                await mesh.close()
            assert answer["status"] in (404, 503)  # answered now: nothing stored, or closing
            assert time.monotonic() - start < 3.0


async def test_blocking_queries_past_the_limit_are_refused_not_held(anyio_backend: str) -> None:
    """``MAX_BLOCKING_QUERIES`` (here 2): a third held query is a 429 at once, for catalog
    and KV reads alike; once one ends, the next is held again."""
    async with served(server=True, bootstrap_expect=1) as (mesh, url):
        http_server = mesh._http
        assert http_server is not None
        http_server.api.max_waits = 2
        async with client(url) as http:
            kv_index = (await http.get("/v1/kv/k")).headers["x-consul-index"]  # has a leader
            index = (await http.get("/v1/catalog/services")).headers["x-consul-index"]
            # The catalog settles first: the new leader's gossip meta (its Raft role) can
            # move the index a moment after the election, which would end the held
            # queries below early and free their slots (seen in a full run under load).
            for _ in range(50):
                r = await http.get(f"/v1/catalog/services?index={index}&wait=300ms")
                if r.headers["x-consul-index"] == index:
                    break
                index = r.headers["x-consul-index"]
            answers: list[int] = []

            async def held() -> None:
                r = await http.get(f"/v1/catalog/services?index={index}&wait=3s")
                answers.append(r.status_code)

            async with anyio.create_task_group() as tg:
                tg.start_soon(held)
                tg.start_soon(held)
                with anyio.fail_after(DEADLINE_S):
                    while len(http_server.api.waits) < 2:
                        await anyio.sleep(0.02)
                start = time.monotonic()
                r = await http.get(f"/v1/catalog/services?index={index}&wait=5m")
                assert r.status_code == 429 and "too many blocking queries" in r.text
                r = await http.get(f"/v1/kv/k?index={kv_index}&wait=5m")
                assert r.status_code == 429
                assert time.monotonic() - start < 3.0
                assert (await http.get("/v1/catalog/services")).status_code == 200  # no ?index
            assert answers == [200, 200]  # the held two timed out normally
            r = await http.get(f"/v1/catalog/services?index={index}&wait=200ms")
            assert r.status_code == 200


def test_wait_is_capped_and_defaulted() -> None:
    from starlette.requests import Request

    def parse(query: bytes) -> Blocking:
        scope = {"type": "http", "query_string": query, "headers": [], "method": "GET"}
        return Blocking.from_request(Request(scope))

    assert parse(b"index=5&wait=1h") == Blocking(5, MAX_WAIT_S)
    assert parse(b"index=5") == Blocking(5, 300.0)
    assert parse(b"wait=0s") == Blocking(0, 300.0)
    assert parse(b"wait=1500ms") == Blocking(0, 1.5)
