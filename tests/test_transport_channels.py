"""Channels: long-lived one-way framed streams on the mesh port (for Raft traffic).

First the transport's framing; then the driver's sealed channels, whose frames are bound
to their channel (``meshlite._channel_seal``): what replaying recorded frames over real
connections gets an attacker (nothing), and a flood that leaves the replay cache alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import pytest
from meshes import eventually

import meshlite
from meshlite import Mesh
from meshlite._core.wire import Addr
from meshlite._crypto import encode_stream_frame
from meshlite._driver import Driver
from meshlite._transport import CHANNEL_MAGIC, FrameHandler, Transport
from meshlite.testing._replay import long_run

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _one_shot(request: bytes, _src: Addr) -> bytes | None:
    return b"re:" + request


@asynccontextmanager
async def server(on_frame: FrameHandler | None, idle_s: float = 60.0) -> AsyncIterator[Transport]:
    """A transport serving channels with ``on_frame`` (all its channels share it)."""
    t = await Transport.bind("127.0.0.1", 0)
    t.channel_idle_s = idle_s
    accept = None if on_frame is None else (lambda _peer: on_frame)
    async with anyio.create_task_group() as tg:
        tg.start_soon(t.serve_streams, _one_shot, 5.0, accept)
        yield t
        tg.cancel_scope.cancel()  # as the driver does: stop serving, then close
    await t.aclose()


def collect(into: list[bytes]) -> FrameHandler:
    def on_frame(frame: bytes) -> bool:
        into.append(frame)
        return True

    return on_frame


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
    async with server(collect(got)) as srv:
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


async def test_a_channel_seals_each_payload_in_order(anyio_backend: str) -> None:
    got: list[bytes] = []
    sealed = iter(range(10**6))
    async with server(collect(got)) as srv:
        client = await Transport.bind("127.0.0.1", 0)
        channel = await client.open_channel(
            srv.local, 5.0, lambda p: next(sealed).to_bytes(4, "big") + p
        )
        assert channel is not None
        async with anyio.create_task_group() as tg:  # concurrent senders: still in order
            for _ in range(4):
                tg.start_soon(lambda: _send_many(channel.send, 100))
                tg.start_soon(lambda: _send_many(lambda p: channel.send_many([p] * 5), 20))
        await eventually(lambda: len(got) == 800, 10)
        assert [int.from_bytes(f[:4], "big") for f in got] == list(range(800))
        await channel.aclose()
        await client.aclose()


async def _send_many(send: Callable[[bytes], Awaitable[None]], n: int) -> None:
    for _ in range(n):
        await send(FRAME)


async def test_a_refused_frame_closes_the_channel(anyio_backend: str) -> None:
    async with server(lambda f: f == FRAME) as srv:
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
    for on_frame, idle_s in ((lambda f: True, 0.2), (None, 60.0)):
        async with server(on_frame, idle_s) as srv:
            async with await anyio.connect_tcp(*srv.local) as raw:
                await raw.send(CHANNEL_MAGIC)
                with anyio.fail_after(10):  # the server closes: EOF, not a hang
                    with pytest.raises((anyio.EndOfStream, OSError, anyio.BrokenResourceError)):
                        await raw.receive()


async def test_a_channel_busier_than_its_idle_timeout_stays_open(anyio_backend: str) -> None:
    got: list[bytes] = []
    async with server(collect(got), idle_s=0.3) as srv:
        client = await Transport.bind("127.0.0.1", 0)
        channel = await client.open_channel(srv.local, 5.0)
        assert channel is not None
        for i in range(12):  # 1.2 s, four idle timeouts, never 0.3 s of silence
            await channel.send(i.to_bytes(4, "big") + FRAME)
            await anyio.sleep(0.1)
        await eventually(lambda: len(got) == 12, 10)
        await channel.aclose()
        await client.aclose()


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
                await channel.send(b"append-entries")  # the channel seals it
                if expect:
                    await eventually(lambda: [d for d, _ in received] == [b"append-entries"], 10)
                else:
                    with pytest.raises((OSError, anyio.BrokenResourceError)):
                        await keep_sending(channel.send, b"forged")
                    assert [d for d, _ in received] == [b"append-entries"]
                await channel.aclose()


# ---------------------------------------------------------------------------------------
# Sealed channels between meshes: recorded frames replayed on real connections


class Pair:
    """Mesh ``a`` (receiving channel messages) and mesh ``b``, joined, with one key."""

    def __init__(self, a: Mesh, b: Mesh) -> None:
        assert a._driver is not None
        assert b._driver is not None
        self.a, self.b = a, b
        self.rx: Driver = a._driver
        self.tx: Driver = b._driver
        self.received: list[bytes] = []
        self.rx.on_channel_message = lambda data, _src: self.received.append(data)

    async def record(self, n: int) -> list[bytes]:
        """The frames a real channel of ``b`` sends for messages m0..m{n-1}, captured by a
        transport standing in for the network (``a`` sees none of them yet)."""
        frames: list[bytes] = []
        async with server(collect(frames)) as wire:
            channel = await self.tx.open_channel(wire.local, 5.0)
            assert channel is not None
            for i in range(n):
                await channel.send(b"m%d" % i)
            await eventually(lambda: len(frames) == n, 10)
            await channel.aclose()
        return frames

    async def deliver(self, frames: list[bytes], *, refused: bool) -> None:
        """Send ``frames`` to ``a`` on a new connection; if ``refused``, ``a`` must hang up."""
        async with await anyio.connect_tcp(*self.rx.transport.local) as raw:
            await raw.send(CHANNEL_MAGIC + b"".join(encode_stream_frame(f) for f in frames))
            if refused:
                with anyio.fail_after(10):
                    with pytest.raises((anyio.EndOfStream, OSError, anyio.BrokenResourceError)):
                        await raw.receive()

    def drops(self) -> dict[str, int]:
        return {k: v for k, v in self.a.stats.items() if k.startswith("drop_") and v}


@asynccontextmanager
async def pair() -> AsyncIterator[Pair]:
    key = meshlite.generate_key()
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(Mesh("a", "127.0.0.1:0", key=key, profile="local"))
        b = await stack.enter_async_context(
            Mesh("b", "127.0.0.1:0", join=[a.address], key=key, profile="local")
        )
        await eventually(lambda: len(a.members()) == len(b.members()) == 2, 10)
        yield Pair(a, b)


async def test_a_replayed_recorded_channel_is_refused(anyio_backend: str) -> None:
    async with pair() as p:
        frames = await p.record(20)
        await p.deliver(frames, refused=False)  # the original delivery
        expected = [b"m%d" % i for i in range(20)]
        await eventually(lambda: p.received == expected, 10)
        await p.deliver(frames, refused=True)  # the whole channel again
        await p.deliver(frames[5:], refused=True)  # or starting in the middle
        assert p.received == expected
        assert p.drops() == {"drop_replay": 1, "drop_auth": 1}


async def test_spliced_reordered_duplicated_or_tampered_frames_close_the_channel(
    anyio_backend: str,
) -> None:
    async with pair() as p:
        x, y, z, w, v = [await p.record(4) for _ in range(5)]
        tampered = bytearray(v[1])
        tampered[-1] ^= 1
        cases = [  # (frames delivered, how many of them pass, the drop counted)
            (x[:3] + y[3:], 3, "drop_channel"),  # splice: frame 3, but of another channel
            ([z[0], z[2]], 1, "drop_channel"),  # reorder
            ([w[0], w[1], w[1]], 2, "drop_channel"),  # duplicate
            ([v[0], bytes(tampered)], 1, "drop_auth"),  # tamper
        ]
        for frames, passing, drop in cases:
            before = len(p.received)
            counted = p.a.stats.get(drop, 0)
            await p.deliver(frames, refused=True)
            assert p.received[before:] == [b"m%d" % i for i in range(passing)]
            assert p.a.stats.get(drop, 0) == counted + 1
        assert p.drops() == {"drop_channel": 3, "drop_auth": 1}


# 3x the replay cache's capacity: per-frame nonces would have filled it three times over.
# ~5 s on asyncio; trio, a little slower, floods a fifth of it unless MESHLITE_LONG=1.
FLOOD_FRAMES, FLOOD_SMOKE_FRAMES = 50_000, 10_000


async def test_a_flood_through_one_channel_leaves_the_replay_cache_and_gossip_alone(
    anyio_backend: str,
) -> None:
    """Up to 50,000 frames on loopback, all delivered in order; the replay cache holds one
    entry for the channel (never full: nothing forgotten, its floor never moves), and
    gossip over UDP goes on meanwhile (a meta change propagates, nothing is refused)."""
    full = anyio_backend == "asyncio" or long_run()
    frames = FLOOD_FRAMES if full else FLOOD_SMOKE_FRAMES
    async with pair() as p:
        got = {"frames": 0, "out_of_order": 0}

        def on_message(data: bytes, _src: Addr) -> None:
            got["out_of_order"] += data != got["frames"].to_bytes(8, "big")
            got["frames"] += 1

        p.rx.on_channel_message = on_message
        packets = p.a.stats.get("packets_received", 0)
        channel = await p.tx.open_channel(p.rx.transport.local, 5.0)
        assert channel is not None
        with anyio.fail_after(60):
            for i in range(frames):
                await channel.send(i.to_bytes(8, "big"))
                if i == frames // 10:
                    await p.b.set_meta({"during": "flood"})
            await eventually(lambda: got["frames"] == frames, 30)
        assert p.a.stats["packets_received"] > packets  # UDP went on during the flood
        assert [m.status for m in p.a.members()] == ["alive", "alive"]
        await channel.aclose()
        assert got == {"frames": frames, "out_of_order": 0}
        cache = p.rx.sealer.replay_cache
        assert cache.floor_ms == -1  # nothing was ever forced out or expired
        assert len(cache) < 1_000  # gossip's nonces and the channel's one
        await eventually(lambda: p.a.members()[1].meta.get("during") == "flood", 10)
        assert p.drops() == {}
