"""The write load of the KV benchmarks, one shape for every system.

Theory of operation
-------------------
:func:`run_load` starts ``writers`` tasks on the running (asyncio) loop.  Each task does
``put(key, value)`` in a closed loop — the next put starts when the previous one returns,
as a blocking client library would — with keys drawn uniformly from ``keys`` names
(``bench/k0000``...) by a seeded ``random.Random`` per writer, and a ``value_bytes`` value
whose first 8 bytes are a per-writer sequence number (no two writes are identical).
The first ``warmup_s`` seconds are not measured (connections, leader discovery, caches).
In the measured window ``[t0, t1)`` every put started is timed with ``perf_counter``;
throughput is the number of puts that both started and completed inside the window,
divided by its length, and latency percentiles are over the puts started in it.

``sample`` (optional) is called at ``t0`` and ``t1``; the harness uses it to read the
servers' CPU time, so the report can say who was busy.

The clients:

* etcd — :class:`EtcdHttp`, one keep-alive HTTP/1.1 connection per writer to the
  leader's v3 JSON gateway (``POST /v3/kv/put``, base64 key and value, as etcd's
  grpc-gateway expects), with ``TCP_NODELAY``.  A deliberately minimal client: request
  bytes are formatted directly and the response is parsed by hand, so the Python side
  costs a few microseconds per put and the measurement is of etcd, not of an HTTP
  library.
* meshlite — ``await mesh.kv.put(key, value)`` on one embedded non-server ``Mesh`` shared
  by all writers (writes are forwarded over the encrypted mesh to the leader).
"""

from __future__ import annotations

import asyncio
import base64
import random
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

__all__ = ["EtcdHttp", "LoadResult", "LoadShape", "Put", "key_name", "run_load"]

# After a failed put, a writer pauses this long: an unavailable system must not turn the
# load generator into a busy loop that starves the servers of CPU.
ERROR_PAUSE_S = 0.01

Put = Callable[[str, bytes], Awaitable[None]]  # raises on failure
PutFactory = Callable[[int], Awaitable[Put]]  # writer index -> its put function


def key_name(i: int) -> str:
    return f"bench/k{i:04d}"


@attrs.frozen
class LoadShape:
    writers: int = 16
    duration_s: float = 10.0
    warmup_s: float = 2.0
    keys: int = 1000
    value_bytes: int = 128
    seed: int = 1


@attrs.frozen
class LoadResult:
    writers: int
    ops: int  # started and completed in the window
    errors: int  # failed puts started in the window
    window_s: float
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    loadgen_cpu_s: float  # this process's CPU time over the window
    samples: tuple[Any, Any] | None = None  # what ``sample`` returned at t0 and t1


@attrs.define
class _Tally:
    latencies_s: list[float] = attrs.Factory(list)
    completed: int = 0
    errors: int = 0


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


async def _writer(w: int, put: Put, shape: LoadShape, t0: float, t1: float, tally: _Tally) -> None:
    rng = random.Random(shape.seed * 1_000_003 + w)
    filler = rng.randbytes(max(0, shape.value_bytes - 8))
    names = [key_name(i) for i in range(shape.keys)]
    clock = time.perf_counter
    seq = 0
    while (start := clock()) < t1:
        seq += 1
        value = (struct.pack(">Q", seq) + filler)[: shape.value_bytes]
        try:
            await put(names[rng.randrange(shape.keys)], value)
        except Exception:  # counted; the load must go on
            if start >= t0:
                tally.errors += 1
            await asyncio.sleep(ERROR_PAUSE_S)
            continue
        end = clock()
        if start >= t0:
            tally.latencies_s.append(end - start)
            if end <= t1:
                tally.completed += 1


async def run_load(
    make_put: PutFactory, shape: LoadShape, sample: Callable[[], Any] | None = None
) -> LoadResult:
    """Run ``shape`` against the system behind ``make_put``; see the module docstring."""
    puts = [await make_put(w) for w in range(shape.writers)]
    clock = time.perf_counter
    t0 = clock() + shape.warmup_s
    t1 = t0 + shape.duration_s
    tally = _Tally()
    marks: list[Any] = []

    async def mark() -> None:
        for at in (t0, t1):
            await asyncio.sleep(max(0.0, at - clock()))
            marks.append((time.process_time(), sample() if sample else None))

    async with asyncio.TaskGroup() as tg:
        tg.create_task(mark())
        for w, put in enumerate(puts):
            tg.create_task(_writer(w, put, shape, t0, t1, tally))
    lat = sorted(tally.latencies_s)
    return LoadResult(
        writers=shape.writers,
        ops=tally.completed,
        errors=tally.errors,
        window_s=shape.duration_s,
        ops_per_s=tally.completed / shape.duration_s,
        p50_ms=_percentile(lat, 0.50) * 1000,
        p99_ms=_percentile(lat, 0.99) * 1000,
        max_ms=(lat[-1] if lat else float("nan")) * 1000,
        loadgen_cpu_s=marks[1][0] - marks[0][0],
        samples=(marks[0][1], marks[1][1]) if sample else None,
    )


class EtcdHttp:
    """One keep-alive HTTP/1.1 connection to etcd's v3 JSON gateway."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._head = (
            f"POST /v3/kv/put HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        ).encode()

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        sock = self._writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def put(self, key: str, value: bytes) -> None:
        if self._writer is None or self._reader is None:
            await self.connect()
        assert self._writer is not None
        body = b'{"key":"%s","value":"%s"}' % (
            base64.b64encode(key.encode()),
            base64.b64encode(value),
        )
        self._writer.write(self._head % len(body) + body)
        try:
            status, payload = await self._response()
        except (OSError, asyncio.IncompleteReadError, ValueError):
            await self.close()  # reconnect on the next put
            raise
        if status != 200:
            raise OSError(f"etcd put: HTTP {status}: {payload[:200]!r}")

    async def _response(self) -> tuple[int, bytes]:
        reader = self._reader
        assert reader is not None
        status = int((await reader.readuntil(b"\r\n")).split(b" ", 2)[1])
        length, chunked = -1, False
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, val = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(val)
            elif name == b"transfer-encoding" and b"chunked" in val.lower():
                chunked = True
        if not chunked:
            return status, await reader.readexactly(max(length, 0))
        body = bytearray()
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += await reader.readexactly(size + 2)
            del body[-2:]
        await reader.readuntil(b"\r\n")  # the empty trailer
        return status, bytes(body)
