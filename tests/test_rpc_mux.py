"""Multiplexed RPC (``meshlite._rpc_mux``) over real loopback connections, both backends.

The transport accepts the connection; both directions are sealed as channels with a real
keyring, as the driver wires them.  What a caller must be able to rely on: answers match
their calls whatever the order, one connection carries them all, "not sent" is only said
when no handler saw the call, and a broken or hostile connection costs nothing else.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from meshes import eventually

from meshlite._channel_seal import ChannelOpener, ChannelSealer
from meshlite._core.wire import Addr
from meshlite._crypto import AuthError, Keyring, Sealer, encode_stream_frame
from meshlite._rpc_mux import MuxClient, serve_mux
from meshlite._transport import MUX_MAGIC, NotSentError, Transport

pytestmark = pytest.mark.anyio

KEY = bytes(range(32))
MAX_FRAME = 64 * 1024
MAX_BODY = 16 * 1024

Handler = Callable[[bytes], Awaitable[bytes | None]]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def sealer() -> Sealer:
    return Sealer(Keyring([KEY]), "prod")


def opener_of(s: Sealer, refused: list[str]) -> Callable[[bytes], bytes | None]:
    opener = ChannelOpener(s)

    def open_frame(frame: bytes) -> bytes | None:
        try:
            return opener.open(frame, time.time())
        except AuthError as exc:
            refused.append(exc.reason)
            return None

    return open_frame


def sealer_of(s: Sealer) -> Callable[[bytes], bytes]:
    channel = ChannelSealer(s)
    return lambda plaintext: channel.seal(plaintext, time.time())


class Server:
    """A transport whose multiplexed connections are served by ``handler``."""

    def __init__(self, transport: Transport, handler: Handler, **limits: float) -> None:
        self.transport = transport
        self.handler = handler
        self.limits = limits
        self.connections = 0
        self.open_now = 0
        self.refused: list[str] = []
        self.streams: list[anyio.abc.SocketStream] = []
        self.sealer = sealer()  # one per peer, as the driver's: its replay cache is shared

    async def serve(
        self, reader: BufferedByteReceiveStream, stream: anyio.abc.SocketStream, _src: Addr
    ) -> None:
        self.connections += 1
        self.open_now += 1
        self.streams.append(stream)
        try:
            await serve_mux(
                reader,
                stream,
                open_frame=opener_of(self.sealer, self.refused),
                seal_frame=sealer_of(self.sealer),
                handler=self.handler,
                max_frame_bytes=MAX_FRAME,
                max_body_bytes=MAX_BODY,
                **self.limits,  # type: ignore[arg-type]
            )
        finally:
            self.open_now -= 1


async def _no_stream(_request: bytes, _src: Addr) -> bytes | None:
    return None


@asynccontextmanager
async def serving(handler: Handler, **limits: float) -> AsyncIterator[Server]:
    t = await Transport.bind("127.0.0.1", 0)
    srv = Server(t, handler, **limits)
    async with anyio.create_task_group() as tg:
        tg.start_soon(t.serve_streams, _no_stream, 5.0, None, srv.serve)
        yield srv
        tg.cancel_scope.cancel()
    await t.aclose()


@asynccontextmanager
async def connected(dst: Addr, idle_s: float = 30.0) -> AsyncIterator[MuxClient]:
    """A client connection to ``dst``, its reader running."""
    client_transport = await Transport.bind("127.0.0.1", 0)
    stream = await client_transport.connect_mux(dst, 5.0)
    s = sealer()
    client = MuxClient(
        stream,
        open_frame=opener_of(s, []),
        seal_frame=sealer_of(s),
        max_frame_bytes=MAX_FRAME,
        max_body_bytes=MAX_BODY,
        idle_s=idle_s,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.run)
        yield client
        await client.aclose()
    await client_transport.aclose()


async def echo_after_a_pause(request: bytes) -> bytes:
    # Later calls answer first: the answers come back out of order.
    await anyio.sleep((1000 - int(request)) / 20_000)
    return b"re:" + request


async def test_concurrent_calls_share_one_connection_and_match_their_answers(
    anyio_backend: str,
) -> None:
    async with serving(echo_after_a_pause) as srv, connected(srv.transport.local) as client:
        got: dict[int, bytes | None] = {}

        async def one(i: int) -> None:
            got[i] = await client.call(str(i).encode(), 10.0)

        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(one, i)
        assert got == {i: b"re:" + str(i).encode() for i in range(200)}
        assert srv.connections == 1
        assert srv.refused == []


async def test_refused_calls_are_not_sent_and_the_connection_lives_on(anyio_backend: str) -> None:
    async def only_even(request: bytes) -> bytes | None:
        return request if int(request) % 2 == 0 else None

    async with serving(only_even) as srv, connected(srv.transport.local) as client:
        assert await client.call(b"2", 5.0) == b"2"
        with pytest.raises(NotSentError, match="refused"):
            await client.call(b"3", 5.0)
        assert await client.call(b"4", 5.0) == b"4"
        assert client.fresh() and srv.connections == 1


async def test_calls_beyond_the_in_flight_limit_are_refused_not_queued(anyio_backend: str) -> None:
    release = anyio.Event()

    async def held(request: bytes) -> bytes:
        await release.wait()
        return request

    async with serving(held, max_in_flight=3) as srv, connected(srv.transport.local) as client:
        answers: list[bytes | None] = []

        async def one(i: int) -> None:
            answers.append(await client.call(b"%d" % i, 10.0))

        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(one, i)
            await anyio.sleep(0.2)
            with anyio.fail_after(5), pytest.raises(NotSentError):
                await client.call(b"late", 10.0)
            release.set()
        assert sorted(a or b"" for a in answers) == [b"0", b"1", b"2"]


async def test_a_handler_that_raises_is_an_unknown_outcome_not_a_refusal(
    anyio_backend: str,
) -> None:
    async def broken(request: bytes) -> bytes:
        if request == b"boom":
            raise RuntimeError("a bug")
        return request

    async with serving(broken) as srv, connected(srv.transport.local) as client:
        assert await client.call(b"boom", 5.0) is None
        assert await client.call(b"fine", 5.0) == b"fine"


async def test_sizes_are_checked_before_anything_is_sealed(anyio_backend: str) -> None:
    async def huge(request: bytes) -> bytes:
        return request * (MAX_BODY // len(request) + 1)

    async with serving(huge) as srv, connected(srv.transport.local) as client:
        with pytest.raises(ValueError, match="exceeds"):
            await client.call(b"x" * (MAX_BODY + 1), 5.0)
        assert await client.call(b"xy", 5.0) is None  # the answer would not fit: unknown
        assert client.fresh(), "neither size error broke the connection"


async def test_a_lost_connection_fails_calls_in_flight_and_the_next_reconnects(
    anyio_backend: str,
) -> None:
    started = anyio.Event()

    async def never(_request: bytes) -> bytes:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError

    async with serving(never) as srv:
        async with connected(srv.transport.local) as client:
            result: list[bytes | None] = []

            async def one() -> None:
                result.append(await client.call(b"x", 30.0))

            async with anyio.create_task_group() as tg:
                tg.start_soon(one)
                await started.wait()
                for stream in srv.streams:  # the server hangs up
                    await stream.aclose()
            assert result == [None]  # sent, never answered: unknown, and at once
            assert not client.fresh()
            with pytest.raises(NotSentError):
                await client.call(b"y", 5.0)
    with pytest.raises(NotSentError, match="cannot connect"):  # nobody listens there now
        await srv.transport.connect_mux(srv.transport.local, 1.0)


async def test_a_silent_peer_times_out_and_the_connection_is_dropped(anyio_backend: str) -> None:
    async def never(_request: bytes) -> bytes:
        await anyio.sleep_forever()
        raise AssertionError

    async with serving(never) as srv, connected(srv.transport.local) as client:
        start = time.monotonic()
        assert await client.call(b"x", 0.3) is None
        assert 0.25 < time.monotonic() - start < 3.0
        assert not client.fresh(), "no answer to anything since: the next call reconnects"


async def test_an_idle_connection_is_retired_by_the_client_long_before_the_server(
    anyio_backend: str,
) -> None:
    async def echo(request: bytes) -> bytes:
        return request

    async with serving(echo, idle_s=0.8) as srv:
        async with connected(srv.transport.local, idle_s=0.2) as client:
            assert await client.call(b"a", 5.0) == b"a"
            assert client.fresh()
            await anyio.sleep(0.3)
            assert not client.fresh(), "idle past the client's limit: not to be used"
            await eventually(lambda: srv.open_now == 0, 5)  # the server hangs up later
            await eventually(lambda: client.closed, 5)


async def test_a_held_call_keeps_an_idle_connection_open(anyio_backend: str) -> None:
    async def slow(request: bytes) -> bytes:
        await anyio.sleep(1.0)
        return request

    async with serving(slow, idle_s=0.3) as srv, connected(srv.transport.local) as client:
        assert await client.call(b"a", 5.0) == b"a"  # 1 s with no frame either way
        assert srv.connections == 1


async def test_garbage_tampering_and_replays_close_only_that_connection(
    anyio_backend: str,
) -> None:
    async def echo(request: bytes) -> bytes:
        return request

    async with serving(echo) as srv, connected(srv.transport.local) as good:
        dst = srv.transport.local

        def frames() -> list[bytes]:
            """Three valid frames of a new channel."""
            seal = sealer_of(sealer())
            return [
                encode_stream_frame(seal(b"\x00\x00\x00%c\x00hi" % i), MAX_FRAME) for i in (1, 2, 3)
            ]

        f0, f1, _ = frames()
        tampered = bytearray(f1)
        tampered[-1] ^= 1
        g0, _, g2 = frames()
        attempts = [
            b"\x00\x00\x00\x05hello",  # a plaintext frame
            f0 + bytes(tampered),  # frame 1 tampered
            g0 + g2,  # frame 1 left out (or frames reordered)
            f0,  # frame 0 replayed on a new connection (nonce cache)
            b"\x7f\xff\xff\xff",  # a length beyond the frame limit
        ]
        for raw in attempts:
            async with await anyio.connect_tcp(*dst) as attacker:
                await attacker.send(MUX_MAGIC + raw)
                with anyio.fail_after(5):
                    try:
                        while await attacker.receive():
                            pass  # an answer to the valid first frame, if any
                    except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                        pass  # the server hung up: what we want
        assert {"auth", "channel", "replay"} <= set(srv.refused)
        assert await good.call(b"still", 5.0) == b"still"
