"""The two systems of ``bench_kv_http.py``: how to start them, their KV calls, wake-ups.

Theory of operation
-------------------
Each system is a subprocess on loopback managed by ``_kv_cluster`` (own process group,
log file, always killed): :class:`Meshlite` is ``meshlite agent --dev`` on free ports
(one Raft server, in memory), ready once ``/v1/status/leader`` names a leader;
:class:`Etcd` is ``_kv_cluster.EtcdCluster(size=1)``, its data directory moved to tmpfs
unless asked for disk.  ``calls(keys, value)`` prepares each system's put and get
requests for every key (``_http_client.Call``, bytes formatted once), so the load
generator spends nothing on encoding.

Wake-ups (through httpx, one connection for the waiting side, one for the writer):

* meshlite: ``GET /v1/kv/watch/key?index=I&wait=10s`` is held (sent, then 50 ms to
  park), a ``PUT`` of the key is sent, and the wake-up is from sending the put to the
  held read's answer arriving;
* etcd: a ``/v3/watch`` stream on the gateway, from sending the put to its event line
  arriving.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from _http_client import Call, call
from _kv_cluster import EtcdCluster, Member, free_ports, meshlite_binary

__all__ = ["HOST", "Etcd", "Meshlite", "System", "cpu_s", "etcd_wakeups", "key_name",
           "meshlite_wakeups"]  # fmt: skip

START_TIMEOUT_S = 60.0  # a Python agent on two busy cores starts in 1-3 s
REQUEST_TIMEOUT_S = 30.0
WAKE_WAIT = "10s"  # the held read's ?wait: far beyond any wake-up
HOLD_SETTLE_S = 0.05  # after sending the held read, before the put: it must be parked
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"


def key_name(i: int) -> str:
    return f"bench/k{i:04d}"


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (``/proc/PID/stat`` fields 14 and 15)."""
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    return float("nan")


# ------------------------------------------------------------------------------ systems


class Meshlite:
    """``meshlite agent --dev`` on free ports, in memory."""

    name = "meshlite"

    def __init__(self, workdir: Path) -> None:
        binary = meshlite_binary()
        if binary is None:
            raise RuntimeError("the meshlite script is not installed (pip install -e .)")
        gossip, http, dns = free_ports(3)
        self.port = http
        self.url = f"http://{HOST}:{http}"
        argv = [binary, "agent", "--dev", "--name", "bench", "--log-json", "--log-level", "warn",
                "--bind", f"127.0.0.1:{gossip}", "--http", f"127.0.0.1:{http}",
                "--dns", f"127.0.0.1:{dns}"]  # fmt: skip
        self.member = Member("meshlite-dev", argv, workdir / "meshlite-dev.log")

    def start(self) -> None:
        self.member.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.member.alive:
                raise RuntimeError(f"meshlite agent exited:\n{self.member.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v1/status/leader", timeout=1.0).json():
                    return
            time.sleep(0.05)
        raise RuntimeError(f"meshlite agent: no leader in {START_TIMEOUT_S:.0f} s")

    @property
    def pid(self) -> int:
        assert self.member.proc is not None
        return self.member.proc.pid

    def calls(self, keys: int, value: bytes) -> tuple[list[Call], list[Call]]:
        """``PUT`` and ``GET /v1/kv/bench/kNNNN`` for every key."""
        paths = [f"/v1/kv/{key_name(i)}" for i in range(keys)]
        puts = [call(HOST, self.port, "PUT", p, value, _is_true) for p in paths]
        gets = [call(HOST, self.port, "GET", p, b"", _is_ok) for p in paths]
        return puts, gets


class Etcd:
    """One etcd member (``_kv_cluster.EtcdCluster(size=1)``), data on tmpfs by default."""

    name = "etcd"

    def __init__(self, on_disk: bool) -> None:
        self.cluster = EtcdCluster(size=1)
        if not on_disk and Path("/dev/shm").is_dir():
            os.rmdir(self.cluster.dir)  # still empty: move the member's data to tmpfs
            self.cluster.dir = Path(tempfile.mkdtemp(prefix="kvbench-etcd-", dir="/dev/shm"))
        self.on_disk = on_disk
        self.port = self.cluster.client_ports[0]
        self.url = f"http://{HOST}:{self.port}"

    def start(self) -> None:
        self.cluster.start()

    @property
    def pid(self) -> int:
        proc = self.cluster.members[0].proc
        assert proc is not None
        return proc.pid

    def calls(self, keys: int, value: bytes) -> tuple[list[Call], list[Call]]:
        """``POST /v3/kv/put`` and ``/v3/kv/range`` (base64 key and value) for every key."""
        b64 = [base64.b64encode(key_name(i).encode()).decode() for i in range(keys)]
        v64 = base64.b64encode(value).decode()
        puts = [json.dumps({"key": k, "value": v64}).encode() for k in b64]
        gets = [json.dumps({"key": k}).encode() for k in b64]
        return (
            [call(HOST, self.port, "POST", "/v3/kv/put", b, _is_ok) for b in puts],
            [call(HOST, self.port, "POST", "/v3/kv/range", b, _has_kvs) for b in gets],
        )


System = Meshlite | Etcd


def _is_ok(status: int, _body: bytes) -> bool:
    return status == 200


def _is_true(status: int, body: bytes) -> bool:
    return status == 200 and body == b"true"


def _has_kvs(status: int, body: bytes) -> bool:
    return status == 200 and b'"kvs"' in body


# ------------------------------------------------------------------------------ wake-up


async def meshlite_wakeups(system: Meshlite, n: int) -> list[float]:
    """Put -> held blocking read answered, ``n`` times (milliseconds)."""
    out: list[float] = []
    path = "/v1/kv/watch/key"
    async with (
        httpx.AsyncClient(base_url=system.url, timeout=REQUEST_TIMEOUT_S) as held,
        httpx.AsyncClient(base_url=system.url, timeout=REQUEST_TIMEOUT_S) as writer,
    ):
        index = (await held.get(path)).headers["X-Consul-Index"]
        for i in range(n):

            async def read(since: str) -> tuple[float, httpx.Response]:
                r = await held.get(path, params={"index": since, "wait": WAKE_WAIT})
                return time.perf_counter(), r

            task = asyncio.create_task(read(index))
            await asyncio.sleep(HOLD_SETTLE_S)
            sent = time.perf_counter()
            await writer.put(path, content=b"v%d" % i)
            woke, r = await task
            if r.headers["X-Consul-Index"] == index:
                raise RuntimeError("the held read timed out instead of waking")
            index = r.headers["X-Consul-Index"]
            out.append((woke - sent) * 1000)
    return out


async def etcd_wakeups(system: Etcd, n: int) -> list[float]:
    """Put -> watch event arrived on a ``/v3/watch`` gateway stream (milliseconds)."""
    key = base64.b64encode(b"watch/key").decode()
    arrivals: asyncio.Queue[float] = asyncio.Queue()
    out: list[float] = []
    create = json.dumps({"create_request": {"key": key}})
    async with (
        httpx.AsyncClient(base_url=system.url, timeout=None) as stream,
        httpx.AsyncClient(base_url=system.url, timeout=REQUEST_TIMEOUT_S) as writer,
        stream.stream("POST", "/v3/watch", content=create) as response,
    ):
        lines = response.aiter_lines()
        await anext(lines)  # {"result": {"created": true, ...}}

        async def pump(lines: AsyncIterator[str]) -> None:
            async for line in lines:
                if '"events"' in line:
                    arrivals.put_nowait(time.perf_counter())

        reader = asyncio.create_task(pump(lines))
        try:
            for i in range(n):
                await asyncio.sleep(HOLD_SETTLE_S)
                sent = time.perf_counter()
                value = base64.b64encode(b"v%d" % i).decode()
                await writer.post("/v3/kv/put", json={"key": key, "value": value})
                woke = await asyncio.wait_for(arrivals.get(), REQUEST_TIMEOUT_S)
                out.append((woke - sent) * 1000)
        finally:
            reader.cancel()
    return out
