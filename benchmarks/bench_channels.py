"""Frames/s through one channel on loopback: per-frame nonce cache vs channel binding.

    python benchmarks/bench_channels.py [--frames 20000] [--repeats 5] [--payload 200]
                                        [--batch 16] [--backend asyncio|trio]

Two ways to seal a channel's frames (AES-GCM, one key):

* ``per-frame``: every frame sealed with ``Sealer.seal`` and opened with ``Sealer.open``,
  so each takes a slot in the receiver's replay cache -- what channels did before
  ``meshlite._channel_seal``;
* ``bound``: ``ChannelSealer`` / ``ChannelOpener`` (frame 0 through the cache, the rest
  bound by channel id and sequence number) -- what ``Driver.open_channel`` does now.

``cpu``: seal + open alone, no I/O (us/frame).  ``loopback``: two ``Transport``s in one
process, ``--frames`` frames of ``--payload`` bytes sent back to back over one channel,
one ``send`` each or ``send_many`` batches of ``--batch`` (as ``RaftNode`` writes what
queued up), timed until the receiver has opened the last.  ``mesh``: the real path, two
``Mesh``es (``Driver.open_channel`` and ``on_channel_message``).  Each row prints the
median of ``--repeats`` runs as wall-clock frames/s and as frames per CPU-second of this
process (sender and receiver both run in it: steadier than wall time on a busy machine),
and what the run left in the receiver's replay cache.  Both cases share today's
transport; the code before channel binding also paid a cancel scope per received frame
and wrote one frame per system call (see the rationale of ``IDLE_DEADLINE_STEP`` in
``_transport.py`` and ``PEER_BATCH_MESSAGES`` in ``_raft_node.py``).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from collections.abc import Awaitable, Callable

import anyio

import meshlite
from meshlite import Mesh
from meshlite._channel_seal import ChannelOpener, ChannelSealer
from meshlite._core.wire import Addr
from meshlite._crypto import Keyring, Sealer
from meshlite._transport import Channel, Transport

Codec = tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]  # seal, open
Rates = tuple[float, float, int]  # wall frames/s, frames per CPU-second, replay cache size


def per_frame(tx: Sealer, rx: Sealer) -> Codec:
    return (lambda p: tx.seal(p, time.time())), (lambda f: rx.open(f, time.time()))


def bound(tx: Sealer, rx: Sealer) -> Codec:
    sealing, opening = ChannelSealer(tx), ChannelOpener(rx)
    return (lambda p: sealing.seal(p, time.time())), (lambda f: opening.open(f, time.time()))


CASES = {"per-frame": per_frame, "bound": bound}


def sealers() -> tuple[Sealer, Sealer]:
    key = meshlite.generate_key()
    return Sealer(Keyring([key]), "bench"), Sealer(Keyring([key]), "bench")


def cpu_run(case: Callable[[Sealer, Sealer], Codec], frames: int, payload: bytes) -> float:
    """Microseconds per frame to seal and open, no I/O."""
    seal, open_ = case(*sealers())
    start = time.perf_counter()
    for _ in range(frames):
        open_(seal(payload))
    return (time.perf_counter() - start) / frames * 1e6


class Counter:
    """Counts opened frames; ``done`` once ``target`` have arrived."""

    def __init__(self, target: int) -> None:
        self.target, self.count, self.done = target, 0, anyio.Event()

    def tick(self) -> None:
        self.count += 1
        if self.count == self.target:
            self.done.set()


async def flood(
    channel: Channel, counter: Counter, payload: bytes, batch: int
) -> tuple[float, float]:
    """Send ``counter.target`` frames (in batches of ``batch``), wait for all: wall and CPU s."""
    wall, cpu = time.perf_counter(), time.process_time()
    with anyio.fail_after(300):
        if batch == 1:
            for _ in range(counter.target):
                await channel.send(payload)
        else:
            for _ in range(counter.target // batch):
                await channel.send_many([payload] * batch)
        await counter.done.wait()
    return time.perf_counter() - wall, time.process_time() - cpu


async def _no_streams(_request: bytes, _src: Addr) -> bytes | None:
    return None


async def loopback_run(
    case: Callable[[Sealer, Sealer], Codec], frames: int, payload: bytes, batch: int
) -> Rates:
    tx, rx = sealers()
    seal, open_ = case(tx, rx)
    counter = Counter(frames)

    def on_frame(frame: bytes) -> bool:
        open_(frame)
        counter.tick()
        return True

    server = await Transport.bind("127.0.0.1", 0)
    client = await Transport.bind("127.0.0.1", 0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve_streams, _no_streams, 5.0, lambda _peer: on_frame)
        channel = await client.open_channel(server.local, 5.0, seal)
        assert channel is not None
        wall_s, cpu_s = await flood(channel, counter, payload, batch)
        await channel.aclose()
        tg.cancel_scope.cancel()
    await server.aclose()
    await client.aclose()
    return frames / wall_s, frames / cpu_s, len(rx.replay_cache)


async def mesh_run(frames: int, payload: bytes, batch: int) -> Rates:
    key = meshlite.generate_key()
    async with (
        Mesh("a", "127.0.0.1:0", key=key, profile="local") as a,
        Mesh("b", "127.0.0.1:0", key=key, profile="local") as b,
    ):
        assert a._driver is not None
        assert b._driver is not None
        counter = Counter(frames)
        a._driver.on_channel_message = lambda _data, _src: counter.tick()
        channel = await b._driver.open_channel(a._driver.transport.local, 5.0)
        assert channel is not None
        wall_s, cpu_s = await flood(channel, counter, payload, batch)
        await channel.aclose()
        return frames / wall_s, frames / cpu_s, len(a._driver.sealer.replay_cache)


async def row(name: str, run: Callable[[], Awaitable[Rates]], repeats: int) -> float:
    runs = [await run() for _ in range(repeats)]
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    print(f"  {name:28s} {wall:9,.0f} frames/s  {cpu:9,.0f} /CPU-s  cache {runs[-1][2]:>6}")
    return cpu


async def run_all(args: argparse.Namespace) -> None:
    payload, n, b = os.urandom(args.payload), args.frames // args.batch * args.batch, args.batch
    print(f"{n} frames of {args.payload} bytes, median of {args.repeats} runs, {args.backend}")
    cpu = {name: statistics.median(cpu_run(c, n, payload) for _ in range(args.repeats))
           for name, c in CASES.items()}  # fmt: skip
    for name, us in cpu.items():
        print(f"  cpu {name:24s} {us:9.2f} us/frame  ({cpu['per-frame'] / us:4.2f}x per-frame)")
    rates = {}
    for name, case in CASES.items():
        for batch in (1, b):
            label = f"loopback {name}, batch {batch}"
            run = functools.partial(loopback_run, case, n, payload, batch)
            rates[label] = await row(label, run, args.repeats)
    for batch in (1, b):
        label = f"mesh bound, batch {batch}"
        rates[label] = await row(
            label, functools.partial(mesh_run, n, payload, batch), args.repeats
        )
    base = rates["loopback per-frame, batch 1"]
    print("  frames per CPU-second vs loopback per-frame, batch 1:")
    for label, rate in rates.items():
        print(f"    {label:28s} {rate / base:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--payload", type=int, default=200, help="bytes (a small Raft append)")
    parser.add_argument("--batch", type=int, default=16, help="frames per send_many")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    anyio.run(run_all, args, backend=args.backend)


if __name__ == "__main__":
    main()
