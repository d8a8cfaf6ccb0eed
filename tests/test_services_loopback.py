"""Services on real sockets: register on one peer, discover on another, on both backends."""

from __future__ import annotations

import anyio
import pytest
from meshes import eventually, mesh_of

import meshlite
from meshlite import ConfigError, Instance, Mesh, NotRunningError, Status

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def ports(mesh: Mesh, name: str, passing_only: bool = True) -> set[int]:
    return {i.port for i in mesh.discover(name, passing_only=passing_only)}


async def test_a_registration_is_discovered_everywhere_and_deregistration_too(
    anyio_backend: str,
) -> None:
    async with mesh_of(3, key=meshlite.generate_key()) as (a, b, c):
        svc = await a.register("api", 8080, tags=["v2"], meta={"zone": "a"})
        assert svc.id == "api" and svc.node == "node-0" and svc.status is Status.PASSING
        await eventually(lambda: ports(b, "api") == {8080} and ports(c, "api") == {8080})
        [seen] = c.discover("api")
        assert seen == Instance("api", "api", "node-0", svc.address, 8080, ("v2",), {"zone": "a"})
        assert c.discover("api", tag="v2") == [seen] and c.discover("api", tag="v1") == []
        assert c.pick("api") == seen and c.pick("nothing") is None
        await a.deregister(svc.id)
        await eventually(lambda: not b.discover("api") and not c.discover("api"))


async def test_a_failing_check_takes_the_instance_out_and_recovery_brings_it_back(
    anyio_backend: str,
) -> None:
    healthy = {"ok": True}
    async with mesh_of(2) as (a, b):
        await a.register("db", 5432, id="db-1")

        @a.check("db", interval_s=0.1, timeout_s=1)
        def db_ok() -> bool:
            return healthy["ok"]

        await eventually(lambda: ports(b, "db") == {5432})
        healthy["ok"] = False
        await eventually(lambda: ports(b, "db") == set() and ports(b, "db", False) == {5432})
        [critical] = b.discover("db", passing_only=False)
        assert critical.status is Status.CRITICAL
        healthy["ok"] = True
        await eventually(lambda: ports(b, "db") == {5432})


async def test_the_instances_of_a_crashed_peer_leave_discovery(anyio_backend: str) -> None:
    async with mesh_of(3) as (a, b, c):
        await c.register("cache", 6379)
        await eventually(lambda: ports(a, "cache") == {6379})
        await c.close()  # no leave: SWIM must detect it
        await eventually(lambda: a.discover("cache", passing_only=False) == [])
        # b learns of the death by its own probe or a's gossip: not necessarily at once.
        await eventually(lambda: b.discover("cache", passing_only=False) == [])


async def test_watch_yields_the_current_list_then_each_real_change(anyio_backend: str) -> None:
    async with mesh_of(2) as (a, b):
        seen: list[set[int]] = []
        got_two = anyio.Event()

        async def follow() -> None:
            async for instances in b.watch("web"):
                seen.append({i.port for i in instances})
                if len(seen) == 3:
                    got_two.set()
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.sleep(0.1)
            assert b._services is not None
            sleeping_on = b._services._wake["web"]  # the event the watcher waits on
            await a.register("other", 1)  # another service: must not wake the watcher
            await eventually(lambda: [i.port for i in b.discover("other")] == [1])
            assert b._services._wake["web"] is sleeping_on and not sleeping_on.is_set()
            await a.register("web", 80, id="web-1")
            await eventually(lambda: len(seen) >= 2)
            await a.register("web", 81, id="web-2")
            with anyio.fail_after(10):
                await got_two.wait()
        assert seen == [set(), {80}, {80, 81}]


async def test_ttl_checks_and_their_expiry(anyio_backend: str) -> None:
    async with mesh_of(1) as (a,):
        svc = await a.register("job", 9000, check=meshlite.TTLCheck(0.5))
        assert a.discover("job") == []  # Consul: a TTL check starts critical
        a.ttl_pass(f"service:{svc.id}", "working")
        await eventually(lambda: ports(a, "job") == {9000}, 5)
        await eventually(lambda: ports(a, "job") == set(), 5)  # no update within the TTL


async def test_bad_input_is_a_clear_config_error(anyio_backend: str) -> None:
    async with mesh_of(1) as (a,):
        with pytest.raises(ConfigError, match="port"):
            await a.register("api", 70000)
        with pytest.raises(ConfigError, match="tags"):
            await a.register("api", 80, tags="v2")
        with pytest.raises(ConfigError, match="service name"):
            await a.register("", 80)
        with pytest.raises(ConfigError, match="no service"):
            await a.deregister("nope")
        with pytest.raises(ConfigError):
            a.ttl_pass("service:nope")
    with pytest.raises(NotRunningError):
        a.discover("api")


async def test_a_decorator_check_given_before_register_runs_once(anyio_backend: str) -> None:
    """With the default id (= the name), the id and the name are one target: the check
    must be attached once, as Consul's lone ``service:<id>`` check."""
    calls = {"n": 0}
    async with mesh_of(1) as (a,):

        @a.check("db", interval_s=60, timeout_s=1)
        def db_ok() -> bool:
            calls["n"] += 1
            return True

        await a.register("db", 5432)
        assert a._services is not None
        assert [c for c, *_ in a._services.checks_of("db")] == ["service:db"]
        await eventually(lambda: calls["n"] >= 1, 5)
        await anyio.sleep(0.3)  # past the first-run stagger of any second copy
        assert calls["n"] == 1
