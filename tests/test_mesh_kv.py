"""mesh.kv, mesh.lock and the Raft facts on in-process meshes over real loopback sockets."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest
from meshes import eventually

import meshlite
from meshlite import KV, Mesh, NoLeaderError, TxnOp
from meshlite.errors import ConfigError

pytestmark = pytest.mark.anyio

SERVERS = ["s0", "s1", "s2"]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def cluster(
    stack: AsyncExitStack, key: str, dirs: list[Path | None] | None = None
) -> AsyncIterator[list[Mesh]]:
    """Three servers (bootstrap_expect=3) joined on loopback; yields them once one leads."""
    meshes: list[Mesh] = []
    for i, name in enumerate(SERVERS):
        join = [meshes[0].address] if meshes else []
        data_dir = None if dirs is None else dirs[i]
        mesh = Mesh(
            name,
            "127.0.0.1:0",
            join=join,
            key=key,
            server=True,
            bootstrap_expect=3,
            data_dir=data_dir,
            profile="local",
        )
        meshes.append(await stack.enter_async_context(mesh))
    await eventually(lambda: leader_of(meshes) is not None, 20)
    yield meshes


def leader_of(meshes: list[Mesh]) -> Mesh | None:
    names = {m.leader().name if m.leader() else None for m in meshes}
    if len(names) != 1 or None in names:
        return None
    return next(m for m in meshes if m.name in names)


async def client(stack: AsyncExitStack, name: str, seed: Mesh, key: str) -> Mesh:
    mesh = Mesh(name, "127.0.0.1:0", join=[seed.address], key=key, profile="local")
    await stack.enter_async_context(mesh)
    await eventually(lambda: mesh.leader() is not None, 20)
    return mesh


async def test_servers_bootstrap_and_a_client_uses_the_kv(anyio_backend: str) -> None:
    key = meshlite.generate_key()
    async with AsyncExitStack() as stack, cluster(stack, key) as servers:
        c = await client(stack, "c0", servers[0], key)
        leader = leader_of(servers)
        assert leader is not None
        assert c.leader() is not None and c.leader().name == leader.name  # type: ignore[union-attr]
        await eventually(lambda: sorted(p.name for p in c.raft_peers()) == SERVERS, 10)
        assert sorted(p.name for p in servers[1].raft_peers()) == SERVERS
        assert [m.name for m in c.members() if m.leader] == [leader.name]
        assert (await leader.raft_stats())["role"] == "leader"
        assert await c.raft_stats() == {}

        assert await c.kv.put("cfg/feature", b"on", flags=7)
        entry = await c.kv.get("cfg/feature")
        assert entry is not None and (entry.value, entry.flags) == (b"on", 7)
        assert not await c.kv.put("cfg/feature", b"x", cas=entry.modify_index - 1)
        assert await c.kv.put("cfg/feature", "off", cas=entry.modify_index)
        assert not await c.kv.put("cfg/feature", b"again", cas=0)
        for k in ("app/a/x", "app/a/y", "app/b"):
            assert await c.kv.put(k, b"v")
        assert await c.kv.keys("app/", "/") == ["app/a/", "app/b"]
        assert [e.key for e in await c.kv.list("app/a/")] == ["app/a/x", "app/a/y"]
        got = await c.kv.get("cfg/feature", consistency="consistent")
        assert got is not None and got.value == b"off"
        result = await c.kv.txn([TxnOp("set", "t/1", b"1"), TxnOp("get", "cfg/feature")])
        assert result.ok and [r.entry.key for r in result.results] == ["t/1", "cfg/feature"]
        assert await c.kv.delete("app/", recurse=True)
        assert await c.kv.list("app/") == []

        # A follower's own replica (stale) catches up; kv.local reads it synchronously.
        follower = next(s for s in servers if s is not leader)
        await eventually(lambda: follower.kv.local("t/1") is not None, 10)
        stale = await follower.kv.get("t/1", consistency="stale")
        assert stale is not None and stale.value == b"1"
        with pytest.raises(ConfigError, match="not a Raft server"):
            c.kv.local("t/1")

        # A blocking read is woken by a write from another peer.
        before = await c.kv.read("get", "watched")
        async with anyio.create_task_group() as tg:
            woke: list[bytes] = []

            async def watch() -> None:
                entry = await c.kv.get("watched", index=before.index, wait_s=20)
                woke.append(entry.value if entry else b"")

            tg.start_soon(watch)
            await anyio.sleep(0.2)
            assert await follower.kv.put("watched", b"now")
        assert woke == [b"now"]
        timed = time.monotonic()
        still = await c.kv.read(
            "get", "watched", index=(await c.kv.read("get", "watched")).index, wait_s=0.3
        )
        assert still.value is not None and time.monotonic() - timed >= 0.25


async def test_leader_crash_failover_keeps_acknowledged_writes(anyio_backend: str) -> None:
    key = meshlite.generate_key()
    async with AsyncExitStack() as stack, cluster(stack, key) as servers:
        c = await client(stack, "c0", servers[0], key)
        for i in range(20):
            assert await c.kv.put(f"k/{i}", str(i))
        leader = leader_of(servers)
        assert leader is not None
        await leader.close()  # a crash: no leave, no hand-over
        survivors = [s for s in servers if s is not leader]
        started = anyio.current_time()
        assert await c.kv.put("after", b"failover")  # waits out the election
        took = anyio.current_time() - started
        assert sorted(e.key for e in await c.kv.list("k/")) == sorted(f"k/{i}" for i in range(20))
        new = leader_of(survivors)
        assert new is not None and new.name != leader.name
        print(f"failover: write succeeded {took:.2f}s after the leader crashed")


async def test_graceful_leave_hands_leadership_over_and_shrinks_the_voters(
    anyio_backend: str,
) -> None:
    key = meshlite.generate_key()
    async with AsyncExitStack() as stack, cluster(stack, key) as servers:
        leader = leader_of(servers)
        assert leader is not None
        await leader.leave()
        survivors = [s for s in servers if s is not leader]
        # The hand-over happened inside leave(): a successor leads at once, no election wait.
        assert leader_of(survivors) is not None or survivors[0].leader() is not None
        await eventually(lambda: leader_of(survivors) is not None, 5)
        await eventually(
            lambda: all(
                sorted(p.name for p in s.raft_peers()) == sorted(x.name for x in survivors)
                for s in survivors
            ),
            10,
        )
        assert await survivors[0].kv.put("still", b"works")


async def test_a_dead_holders_lock_passes_to_the_next_client(anyio_backend: str) -> None:
    key = meshlite.generate_key()
    async with AsyncExitStack() as stack, cluster(stack, key) as servers:
        a = await client(stack, "a", servers[0], key)
        b = await client(stack, "b", servers[0], key)
        events: list[str] = []

        async def hold_a(*, task_status: anyio.abc.TaskStatus[str]) -> None:
            async with a.lock("jobs/nightly", b"a", lock_delay_s=0.5) as lock_a:
                assert lock_a.held and lock_a.session is not None
                task_status.started(lock_a.session)
                await lock_a.lost.wait()  # a's process "dies" while holding it
                events.append("a lost")
                await anyio.sleep_forever()

        async def take_b() -> None:
            async with b.lock("jobs/nightly", b"b", lock_delay_s=0.5) as lock_b:
                events.append("b holds")
                assert lock_b.held
                entry = await b.kv.get("jobs/nightly")
                assert entry is not None and entry.value == b"b"

        async with anyio.create_task_group() as tg:
            session_a = await tg.start(hold_a)
            entry = await b.kv.get("jobs/nightly")
            assert entry is not None and entry.session == session_a
            tg.start_soon(take_b)
            await anyio.sleep(1.0)
            assert events == []  # a still holds it; b waits
            await a.close()  # a crashes: the mesh declares it dead, its session ends
            await eventually(lambda: "b holds" in events, 30)
            tg.cancel_scope.cancel()
        sessions = (await b.kv.session_list()).value
        assert all(s.node != "a" for s in sessions)


async def test_a_mesh_without_servers_raises_no_leader(anyio_backend: str) -> None:
    async with Mesh("lonely", "127.0.0.1:0", profile="local") as mesh:
        mesh._kv = KV(mesh, hold_s=0.3)
        with pytest.raises(NoLeaderError, match="no Raft leader"):
            await mesh.kv.put("k", b"v")
        with pytest.raises(NoLeaderError):
            await mesh.kv.get("k")
        assert mesh.leader() is None and mesh.raft_peers() == []


async def test_a_server_that_joins_later_becomes_a_voter(anyio_backend: str) -> None:
    key = meshlite.generate_key()
    async with AsyncExitStack() as stack, cluster(stack, key) as servers:
        late = Mesh(
            "s3", "127.0.0.1:0", join=[servers[0].address], key=key, server=True, profile="local"
        )
        await stack.enter_async_context(late)
        await eventually(lambda: "s3" in {p.name for p in servers[0].raft_peers()}, 20)
        assert await servers[0].kv.put("x", b"1")
        await eventually(lambda: late.kv.local("x") is not None, 10)


async def test_restart_from_data_dir_keeps_everything(anyio_backend: str, tmp_path: Path) -> None:
    key = meshlite.generate_key()
    dirs: list[Path | None] = [tmp_path / n for n in SERVERS]
    async with AsyncExitStack() as stack, cluster(stack, key, dirs) as servers:
        for i in range(10):
            assert await servers[0].kv.put(f"k/{i}", b"v")
    async with AsyncExitStack() as stack, cluster(stack, key, dirs) as servers:
        assert len(await servers[1].kv.list("k/")) == 10


def test_server_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="server=True"):
        Mesh("x", bootstrap_expect=3)
    with pytest.raises(ConfigError, match="server=True"):
        Mesh("x", data_dir="/tmp/x")
    with pytest.raises(ConfigError, match="bootstrap_expect"):
        Mesh("x", server=True, bootstrap_expect=0)
