"""Raft over real mesh channels: three servers in one process, both anyio backends."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream
from meshes import eventually

import meshlite
from meshlite import Mesh
from meshlite._core.raft import Entry, EntryKind, RaftConfig, RaftCore, Snapshot
from meshlite._core.wire import Addr
from meshlite._raft_node import (
    CHANNEL_RAFT,
    PEER_BATCH_BYTES,
    PEER_BATCH_MESSAGES,
    RaftNode,
)
from meshlite._raft_storage import RaftStorage
from meshlite._transport import next_batch
from meshlite.errors import NotLeaderError

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Server:
    """A mesh peer with a RaftNode whose state machine is a list of applied commands."""

    def __init__(self, mesh: Mesh, voters: list[str]) -> None:
        self.mesh = mesh
        self.applied: list[bytes] = []
        driver = mesh._driver
        assert driver is not None
        core = RaftCore(mesh.name, RaftConfig(), random.Random(mesh.name))
        core.bootstrap(voters)
        self.node = RaftNode(
            core,
            RaftStorage.open(None),
            self._apply,
            self._restore,
            open_channel=driver.open_channel,
            address_of=self._address_of,
            tick_s=RaftConfig().tick_s,
        )
        driver.on_channel_message = self._on_channel

    def _apply(self, entry: Entry) -> int:
        self.applied.append(entry.data)
        return len(self.applied)

    def _restore(self, snapshot: Snapshot) -> None:
        raise AssertionError("no snapshots in this test")

    def _address_of(self, name: str) -> Addr | None:
        for m in self.mesh.members():
            if m.name == name and m.status == "alive":
                return (m.address, m.port)
        return None

    def _on_channel(self, data: bytes, _src: Addr) -> None:
        if data[:1] == CHANNEL_RAFT:
            self.node.on_message(data[1:])


@asynccontextmanager
async def cluster(n: int) -> AsyncIterator[list[Server]]:
    key = meshlite.generate_key()
    names = [f"s{i}" for i in range(n)]
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            Mesh(names[0], "127.0.0.1:0", key=key, server=True, profile="local")
        )
        meshes = [first]
        for name in names[1:]:
            meshes.append(
                await stack.enter_async_context(
                    Mesh(
                        name,
                        "127.0.0.1:0",
                        join=[first.address],
                        key=key,
                        server=True,
                        profile="local",
                    )
                )
            )
        await eventually(lambda: all(len(m.members()) == n for m in meshes))
        servers = [Server(m, names) for m in meshes]
        for s in servers:
            assert s.mesh._driver is not None
            await s.mesh._driver.start(s.node.run)
        yield servers


def leader_of(servers: list[Server]) -> Server | None:
    leaders = {s.node.core.leader for s in servers if s.node.core.leader is not None}
    live = [
        s for s in servers if s.mesh.name in leaders and s.node.core.status()["role"] == "leader"
    ]
    return live[0] if len(live) == 1 else None


async def test_three_servers_elect_replicate_and_survive_the_leader(anyio_backend: str) -> None:
    async with cluster(3) as servers:
        await eventually(lambda: leader_of(servers) is not None, 10)
        leader = leader_of(servers)
        assert leader is not None
        follower = next(s for s in servers if s is not leader)
        with pytest.raises(NotLeaderError):
            await follower.node.propose(b"nope")

        results: list[int] = []

        async def writer(w: int) -> None:
            for i in range(10):
                results.append(await leader.node.propose(f"{w}:{i}".encode()))

        async with anyio.create_task_group() as tg:
            for w in range(16):  # 16 concurrent writers: group commit + pipelining
                tg.start_soon(writer, w)
        assert sorted(results) == list(range(1, 161))
        await leader.node.read_barrier()
        await eventually(lambda: all(len(s.applied) == 160 for s in servers), 10)
        assert servers[0].applied == servers[1].applied == servers[2].applied

        await leader.mesh.close()  # the leader crashes: the others elect a new one
        rest = [s for s in servers if s is not leader]
        await eventually(lambda: leader_of(rest) is not None, 15)
        new = leader_of(rest)
        assert new is not None and new is not leader
        assert await new.node.propose(b"after") == 161
        await eventually(lambda: all(s.applied[-1:] == [b"after"] for s in rest), 10)


async def batch(rx: MemoryObjectReceiveStream[bytes]) -> list[bytes]:
    return await next_batch(rx, PEER_BATCH_MESSAGES, PEER_BATCH_BYTES)


async def test_queued_messages_go_out_in_bounded_batches(anyio_backend: str) -> None:
    tx, rx = anyio.create_memory_object_stream[bytes](1024)
    with tx, rx:
        for i in range(PEER_BATCH_MESSAGES + 10):
            tx.send_nowait(b"%d" % i)
        first, second = await batch(rx), await batch(rx)
        assert [len(first), len(second)] == [PEER_BATCH_MESSAGES, 10]
        assert first + second == [b"%d" % i for i in range(PEER_BATCH_MESSAGES + 10)]
        big = bytes(PEER_BATCH_BYTES // 2 + 1)
        for _ in range(3):
            tx.send_nowait(big)
        assert len(await batch(rx)) == 2  # the byte bound, then the rest
        assert len(await batch(rx)) == 1


def _lone_leader() -> tuple[RaftNode, list[bytes]]:
    """A one-voter RaftNode that leads, not running: a test applies entries by hand."""
    core = RaftCore("solo", RaftConfig(), random.Random(1))
    core.bootstrap(["solo"])
    core.campaign(pre=False)
    assert core.role.name == "LEADER"
    applied: list[bytes] = []

    def apply(entry: Entry) -> int:
        applied.append(entry.data)
        return len(applied)

    async def no_channel(_addr: Addr, _timeout_s: float) -> None:
        return None

    node = RaftNode(
        core,
        RaftStorage.open(None),
        apply,
        lambda _snap: None,
        open_channel=no_channel,
        address_of=lambda _name: None,
        tick_s=RaftConfig().tick_s,
    )
    return node, applied


async def test_a_proposer_gets_its_own_entrys_result_or_learns_it_was_replaced(
    anyio_backend: str,
) -> None:
    """Each proposer is woken by the apply of its index alone: with the term it proposed
    in, it gets the state machine's result; with another term (a new leader's entry took
    the index) NotLeaderError; a proposer that gives up leaves nothing behind."""
    node, applied = _lone_leader()
    term = node.core.term
    results: dict[bytes, object] = {}

    async def propose(data: bytes) -> None:
        try:
            results[data] = await node.propose(data)
        except NotLeaderError as exc:
            results[data] = exc

    async with anyio.create_task_group() as tg:
        for waiting, data in enumerate((b"a", b"b", b"c"), 1):  # proposed in this order
            tg.start_soon(propose, data)
            with anyio.fail_after(2):
                while len(node._proposals) < waiting:
                    await anyio.sleep(0.01)
        first = min(node._proposals)
        node._apply(Entry(first + 1, term, EntryKind.NORMAL, b"b"))  # out of order: only b
        await eventually(lambda: b"b" in results, timeout_s=2)
        assert results == {b"b": 1}
        node._apply(Entry(first, term, EntryKind.NORMAL, b"a"))
        node._apply(Entry(first + 2, term + 1, EntryKind.NORMAL, b"z"))  # another leader's
    assert results[b"a"] == 2
    assert isinstance(results[b"c"], NotLeaderError)
    assert applied == [b"b", b"a", b"z"]
    assert node._proposals == {}

    with anyio.move_on_after(0.05):  # a proposer that times out takes itself off
        await node.propose(b"never applied")
    assert node._proposals == {}
