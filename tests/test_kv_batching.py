"""Writes that travel and commit together: the client's batch calls (_kv_coalesce.py) and
the leader's shared Raft entries (_kv_batcher.py), on real meshes over loopback."""

from __future__ import annotations

from contextlib import AsyncExitStack
from functools import partial

import anyio
import pytest
from meshes import eventually
from test_mesh_kv import client, cluster, leader_of

import meshlite
from meshlite import Mesh
from meshlite._core.kv import delete_op, put_op
from meshlite._raft_server import RaftServer
from meshlite.errors import ConfigError, NotLeaderError

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def raft(mesh: Mesh) -> RaftServer:
    server = mesh._raft_local()
    assert server is not None
    return server


def leader_raft(servers: list[Mesh]) -> RaftServer:
    leader = leader_of(servers)
    assert leader is not None
    return raft(leader)


async def test_concurrent_writes_share_calls_and_entries_and_each_gets_its_answer(
    anyio_backend: str,
) -> None:
    key = meshlite.generate_key()
    async with AsyncExitStack() as stack, cluster(stack, key) as servers:
        c = await client(stack, "c0", servers[0], key)
        leader = leader_of(servers)
        assert leader is not None
        assert await c.kv.put("cas/me", b"0")
        entry = await c.kv.get("cas/me")
        assert entry is not None
        batcher, coalescer = raft(leader)._batcher, c.kv._coalescer
        entries0, calls0 = batcher.entries, coalescer.calls
        answers: dict[str, bool] = {}

        async def put(k: str, v: bytes, **kw: int) -> None:
            answers[k] = await c.kv.put(k, v, **kw)  # type: ignore[arg-type]

        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(put, f"k/{i}", b"%d" % i)
            tg.start_soon(partial(put, "cas/me", b"stale", cas=entry.modify_index + 1000))
            tg.start_soon(partial(put, "cas/new", b"1", cas=0))
        assert answers.pop("cas/me") is False  # a stale cas in a batch still answers False
        assert all(answers.values()) and len(answers) == 41
        # 42 calls left this client; far fewer batch calls and Raft entries carried them.
        assert coalescer.calls - calls0 == 42 and coalescer.batches >= 1
        assert batcher.entries - entries0 < 42
        for s in servers:  # every server applied the same writes
            await eventually(lambda s=s: s.kv.local("cas/new") is not None, 10)
            assert {e.key: e.value for e in await s.kv.list("k/", consistency="stale")} == {
                f"k/{i}": b"%d" % i for i in range(40)
            }
        assert (await c.kv.get("cas/me")) == entry  # untouched by the stale cas


async def test_two_writes_to_one_key_never_share_an_entry(anyio_backend: str) -> None:
    key = meshlite.generate_key()
    async with AsyncExitStack() as stack, cluster(stack, key) as servers:
        server = leader_raft(servers)
        before = server._batcher.entries
        results = await server.write_many([put_op("k", b"1"), put_op("j", b"x"), put_op("k", b"2")])
        assert server._batcher.entries - before == 2  # {k, j}, then k again
        first, other, second = results
        assert not isinstance(first, Exception) and not isinstance(second, Exception)
        assert first.entry is not None and second.entry is not None
        assert first.entry.modify_index < second.entry.modify_index  # one index, one version
        assert not isinstance(other, Exception) and other.index == first.index
        bad = await server.write_many([put_op("lock", b"", acquire="no-such-session")])
        assert isinstance(bad[0], ConfigError)
        follower = next(raft(s) for s in servers if raft(s) is not server)
        refused = await follower.write_many([delete_op("k"), put_op("z", b"")])
        assert all(isinstance(r, NotLeaderError) for r in refused)
        assert follower._batcher._queue == []


async def test_a_writer_cancelled_before_the_flush_proposes_nothing(anyio_backend: str) -> None:
    key = meshlite.generate_key()
    async with AsyncExitStack() as stack, cluster(stack, key) as servers:
        server = leader_raft(servers)
        batcher = server._batcher
        before = batcher.writes
        server.node.before_ready = lambda: None  # hold the flush while the writer waits
        scope = anyio.CancelScope()

        async def writer() -> None:
            with scope:
                await server.put("never", b"x")

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            await eventually(lambda: len(batcher._queue) == 1, 5)
            scope.cancel()
        assert batcher._queue == []
        server.node.before_ready = batcher.flush
        assert await server.put("after", b"y")  # the ready loop goes on
        assert server.kv.get("never") is None and server.kv.get("after") is not None
        assert batcher.writes - before == 1
