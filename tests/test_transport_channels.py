"""Channels: long-lived one-way framed streams on the mesh port (for Raft traffic)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import pytest
from meshes import eventually

import meshlite
from meshlite import Mesh
from meshlite._core.wire import Addr
from meshlite._transport import CHANNEL_MAGIC, Transport

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _one_shot(request: bytes, _src: Addr) -> bytes | None:
    return b"re:" + request


@asynccontextmanager
async def server(
    on_frame: Callable[[bytes, Addr], bool] | None, idle_s: float = 60.0
) -> AsyncIterator[Transport]:
    t = await Transport.bind("127.0.0.1", 0)
    t.channel_idle_s = idle_s
    async with anyio.create_task_group() as tg:
        tg.start_soon(t.serve_streams, _one_shot, 5.0, on_frame)
        yield t
        tg.cancel_scope.cancel()  # as the driver does: stop serving, then close
    await t.aclose()


FRAME = bytes(range(40))


async def keep_sending(send: Callable[[bytes], Awaitable[None]], frame: bytes) -> None:
    """Send until the peer's hang-up surfaces as an error (a TCP send only fails once the
    reset has come back), for at most 10 s."""
    with anyio.fail_after(10):
        for _ in range(1000):
            await send(frame)
            await anyio.sleep(0.01)  # longer than the shortest sealed frame the framing accepts


async def test_frames_arrive_in_order_and_one_shot_requests_still_work(anyio_backend: str) -> None:
    got: list[bytes] = []
    async with server(lambda f, _src: got.append(f) is None) as srv:
        client = await Transport.bind("127.0.0.1", 0)
        channel = await client.open_channel(srv.local, 5.0)
        assert channel is not None
        for i in range(500):
            await channel.send(i.to_bytes(4, "big") + FRAME)
        await eventually(lambda: len(got) == 500, 10)
        assert [int.from_bytes(f[:4], "big") for f in got] == list(range(500))
        assert await client.request(srv.local, FRAME, 5.0) == b"re:" + FRAME
        await channel.aclose()
        await client.aclose()


async def test_a_refused_frame_closes_the_channel(anyio_backend: str) -> None:
    async with server(lambda f, _src: f == FRAME) as srv:
        client = await Transport.bind("127.0.0.1", 0)
        channel = await client.open_channel(srv.local, 5.0)
        assert channel is not None
        await channel.send(b"x" * 40)  # refused: the server hangs up
        with pytest.raises((OSError, anyio.BrokenResourceError)):
            await keep_sending(channel.send, FRAME)
        await client.aclose()


async def test_idle_channels_are_closed_and_servers_without_a_handler_refuse(
    anyio_backend: str,
) -> None:
    for on_frame, idle_s in ((lambda f, _src: True, 0.2), (None, 60.0)):
        async with server(on_frame, idle_s) as srv:
            async with await anyio.connect_tcp(*srv.local) as raw:
                await raw.send(CHANNEL_MAGIC)
                with anyio.fail_after(10):  # the server closes: EOF, not a hang
                    with pytest.raises((anyio.EndOfStream, OSError, anyio.BrokenResourceError)):
                        await raw.receive()


async def test_mesh_channels_carry_sealed_frames_and_refuse_wrong_keys(anyio_backend: str) -> None:
    key = meshlite.generate_key()
    received: list[tuple[bytes, Addr]] = []
    async with Mesh("a", "127.0.0.1:0", key=key, profile="local") as a:
        assert a._driver is not None
        a._driver.on_channel_message = lambda data, src: received.append((data, src))
        for sender_key, expect in ((key, True), (meshlite.generate_key(), False)):
            async with Mesh("b", "127.0.0.1:0", key=sender_key, profile="local") as b:
                assert b._driver is not None
                dst = a._driver.transport.local
                channel = await b._driver.open_channel(dst, 5.0)
                assert channel is not None
                await channel.send(b._driver.seal(b"append-entries"))
                if expect:
                    await eventually(lambda: [d for d, _ in received] == [b"append-entries"], 10)
                else:
                    with pytest.raises((OSError, anyio.BrokenResourceError)):
                        await keep_sending(channel.send, b._driver.seal(b"forged"))
                    assert [d for d, _ in received] == [b"append-entries"]
                await channel.aclose()
