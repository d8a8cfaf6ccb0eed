"""RaftServer: three servers on three in-process meshes, the KV API and persistence."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import pytest
from meshes import eventually

import meshlite
from meshlite import Mesh
from meshlite._core.kv import TxnOp
from meshlite._core.wire import Addr
from meshlite._raft_node import CHANNEL_RAFT
from meshlite._raft_server import RaftServer
from meshlite.errors import ConfigError, NotLeaderError

pytestmark = pytest.mark.anyio

NAMES = ["s0", "s1", "s2"]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _server(mesh: Mesh, data_dir: Path | None, threshold: int) -> RaftServer:
    driver = mesh._driver
    assert driver is not None

    def address_of(name: str) -> Addr | None:
        for m in mesh.members():
            if m.name == name and m.status == "alive":
                return (m.address, m.port)
        return None

    server = RaftServer(
        mesh.name,
        data_dir=data_dir,
        open_channel=driver.open_channel,
        address_of=address_of,
        snapshot_threshold=threshold,
        durable=False,
    )

    def on_channel(data: bytes, _src: Addr) -> None:
        if data[:1] == CHANNEL_RAFT:
            server.on_message(data[1:])

    driver.on_channel_message = on_channel
    return server


@asynccontextmanager
async def cluster(
    dirs: Sequence[Path | None] = (None, None, None), threshold: int = 8192, *, fresh: bool = True
) -> AsyncIterator[list[RaftServer]]:
    """Three meshes, a RaftServer on each, bootstrapped with expect=3 (if ``fresh``)."""
    key = meshlite.generate_key()
    servers: list[RaftServer] = []
    try:
        async with AsyncExitStack() as stack:
            meshes: list[Mesh] = []
            for name in NAMES:
                join = [meshes[0].address] if meshes else []
                mesh = Mesh(name, "127.0.0.1:0", join=join, key=key, server=True, profile="local")
                meshes.append(await stack.enter_async_context(mesh))
            await eventually(lambda: all(len(m.members()) == 3 for m in meshes))
            servers.extend(_server(m, d, threshold) for m, d in zip(meshes, dirs, strict=True))
            for mesh, server in zip(meshes, servers, strict=True):
                known = {m.name for m in mesh.members()}
                assert not server.maybe_bootstrap(known, 4)  # too few servers yet
                assert not server.maybe_bootstrap(known, 2)  # more than expected: refuse
                assert server.maybe_bootstrap(known, 3) == fresh
                assert mesh._driver is not None
                await mesh._driver.start(server.run)
            yield servers
    finally:
        for server in servers:
            server.close()


def leader_of(servers: list[RaftServer]) -> RaftServer | None:
    leaders = [s for s in servers if s.core.status()["role"] == "leader"]
    return leaders[0] if len(leaders) == 1 else None


async def elected(servers: list[RaftServer]) -> RaftServer:
    await eventually(lambda: leader_of(servers) is not None, 15)
    leader = leader_of(servers)
    assert leader is not None
    return leader


async def test_kv_api_on_three_servers(anyio_backend: str) -> None:
    async with cluster() as servers:
        assert all(s.peers() == NAMES for s in servers)
        assert not servers[0].maybe_bootstrap(set(NAMES), 3)  # never twice
        leader = await elected(servers)
        follower = next(s for s in servers if s is not leader)
        assert follower.leader() == leader.name or follower.leader() is None

        assert await leader.put("cfg/feature", b"on", flags=7)
        got = (await leader.read("get", "cfg/feature")).value
        assert got is not None and got.value == b"on" and got.flags == 7
        assert not await leader.put("cfg/feature", b"x", cas=got.modify_index - 1)
        assert await leader.put("cfg/feature", b"off", cas=got.modify_index)
        assert not await leader.put("cfg/feature", b"again", cas=0)  # create-only
        assert await leader.put("cfg/new", b"1", cas=0)

        for k in ("app/a/x", "app/a/y", "app/b", "app/c/z/w"):
            assert await leader.put(k, b"v")
        assert (await leader.read("keys", "app/", "/")).value == ["app/a/", "app/b", "app/c/"]
        listed = (await leader.read("list", "app/a/")).value
        assert [e.key for e in listed] == ["app/a/x", "app/a/y"]
        assert await leader.delete("app/", recurse=True)
        assert (await leader.read("keys", "app/")).value == []

        read = await leader.read("get", "cfg/feature", consistency="consistent")
        assert read.value is not None and read.value.value == b"off"
        assert read.leader == leader.name

        with pytest.raises(NotLeaderError):
            await follower.put("cfg/feature", b"no")
        with pytest.raises(NotLeaderError):
            await follower.read("get", "cfg/feature")
        with pytest.raises(NotLeaderError):
            await follower.read("get", "cfg/feature", consistency="consistent")
        with pytest.raises(ConfigError):
            await leader.read("get", "k", consistency="bogus")  # type: ignore[arg-type]

        async def stale_off() -> bool:
            r = await follower.read("get", "cfg/feature", consistency="stale")
            return r.value is not None and r.value.value == b"off" and r.lag >= 0

        with anyio.fail_after(10):
            while not await stale_off():
                await anyio.sleep(0.05)

        await _blocking_reads(leader)
        await _txn_and_sessions(leader)
        stats = await leader.stats()
        assert stats["role"] == "leader" and stats["storage"]["last_index"] >= read.index


async def _blocking_reads(leader: RaftServer) -> None:
    before = await leader.read("get", "cfg/feature")
    woken: list[bytes] = []

    async def waiter() -> None:
        r = await leader.read("get", "cfg/feature", index=before.index, wait_s=10)
        assert r.value is not None and r.index > before.index
        woken.append(r.value.value)

    with anyio.fail_after(5):  # far below wait_s: the put woke it
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.sleep(0.1)
            assert woken == []
            assert await leader.put("cfg/feature", b"changed")
    assert woken == [b"changed"]

    now = await leader.read("get", "cfg/feature")
    start = anyio.current_time()
    timed_out = await leader.read("get", "cfg/feature", index=now.index, wait_s=0.3)
    assert anyio.current_time() - start >= 0.29
    assert timed_out.index == now.index


async def _txn_and_sessions(leader: RaftServer) -> None:
    result = await leader.txn([TxnOp("set", "t/a", b"1"), TxnOp("set", "t/b", b"2")])
    assert result.ok and len(result.results) == 2
    failed = await leader.txn([TxnOp("set", "t/c", b"3"), TxnOp("check-not-exists", "t/a")])
    assert not failed.ok and (await leader.read("get", "t/c")).value is None
    read = await leader.txn([TxnOp("get", "t/a")])
    assert read.ok and read.results[0].entry.value == b"1"

    session = await leader.session_create(ttl_s=10, lock_delay_s=0)
    assert await leader.put("lock", b"me", acquire=session.id)
    other = await leader.session_create(lock_delay_s=0)
    assert not await leader.put("lock", b"them", acquire=other.id)
    assert (renewed := await leader.session_renew(session.id)) is not None
    assert renewed.id == session.id
    assert await leader.session_destroy(session.id)
    assert not await leader.session_destroy(session.id)
    assert await leader.session_renew(session.id) is None
    entry = (await leader.read("get", "lock")).value
    assert entry is not None and entry.session is None  # released by the destroy
    with pytest.raises(ConfigError):  # an unknown session cannot acquire
        await leader.put("lock", b"x", acquire=session.id)


async def test_an_idle_server_writes_its_commit_index(anyio_backend: str, tmp_path: Path) -> None:
    """A commit index that moved alone is written (unsynced, by the storage thread) once
    the server goes idle, so a restart does not replay the log from an old commit."""
    dirs = [tmp_path / name for name in NAMES]
    async with cluster(dirs) as servers:
        leader = await elected(servers)
        for i in range(5):
            assert await leader.put(f"k{i}", b"v")

        def stored_commit(s: RaftServer) -> int:
            return s._storage.load()[0].commit

        await eventually(
            lambda: all(stored_commit(s) == s.core.log.committed > 0 for s in servers), 10
        )


async def test_data_dir_survives_a_full_restart_with_snapshots(
    anyio_backend: str, tmp_path: Path
) -> None:
    dirs = [tmp_path / name for name in NAMES]
    acked: dict[str, bytes] = {}
    # 8 writers x 15 puts in turn: at least 15 entries however the leader batches them
    # (concurrent puts share entries, _kv_batcher.py), so a threshold of 10 snapshots.
    async with cluster(dirs, threshold=10) as servers:
        leader = await elected(servers)

        async def writer(w: int) -> None:
            for i in range(15):
                key, value = f"k/{w}/{i}", f"{w}-{i}".encode()
                assert await leader.put(key, value)
                acked[key] = value

        async with anyio.create_task_group() as tg:
            for w in range(8):
                tg.start_soon(writer, w)
        await eventually(lambda: all(s.snapshots >= 1 for s in servers), 10)
    assert len(acked) == 120

    async with cluster(dirs, threshold=10, fresh=False) as servers:
        assert all(s.core.log.snap_index >= 10 for s in servers)  # restored from snapshots
        leader = await elected(servers)
        read = await leader.read("list", "k/", consistency="consistent")
        assert {e.key: e.value for e in read.value} == acked
        assert await leader.put("after", b"restart")
        await eventually(lambda: all(s.kv.get("after") is not None for s in servers), 10)
        for s in servers:
            assert {e.key: e.value for e in s.kv.list("k/")} == acked
