"""Hostile input at scale: 100,000 junk packets (and junk TCP) against a live agent.

Three encrypted ``meshlite agent`` processes form a mesh on loopback; one of them is
flooded on its mesh port with every kind of frame it must refuse — random bytes,
truncated frames, plaintext frames, frames sealed with another key or for another cluster,
tampered frames, and one valid frame replayed over and over — plus TCP connections that
send garbage, announce oversized frames, or open a channel and send junk.  Afterwards:

* its resident memory grew by less than ``RSS_GROWTH_LIMIT_MIB`` (every buffer a packet
  can touch is bounded: the replay cache, the refusal log, the receive path);
* its refusal counters (``/v1/agent/self`` ``Stats``) grew for every kind of junk, by no
  more than was sent (the kernel drops what does not fit the socket buffer);
* each refusal was logged at most once per (host, reason);
* the mesh is whole again: all three members alive, as seen from every agent, and the
  flooded agent still answers gossip (a member event propagates through it).
"""

from __future__ import annotations

import os
import random
import socket
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from netns import LineProcess
from test_services_processes import spawn

import meshlite
from meshlite._crypto import Keyring, Sealer, encode_stream_frame, parse_key
from meshlite._transport import CHANNEL_MAGIC, MUX_MAGIC
from meshlite.testing import free_ports

DEADLINE_S = 30.0
PACKETS = 100_000
TCP_CONNECTIONS = 300
RSS_GROWTH_LIMIT_MIB = 40  # the replay cache alone may take ~3 MiB; Python's heap churns
NAMES = ["a", "b", "c"]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class Agents:
    def __init__(self) -> None:
        self.key = meshlite.generate_key()
        ports = free_ports(len(NAMES))
        self.ports = dict(zip(NAMES, ports, strict=True))
        self.http = dict(zip(NAMES, free_ports(len(NAMES)), strict=True))
        self.procs: dict[str, LineProcess] = {}

    def start(self, name: str) -> None:
        args = [sys.executable, "-m", "meshlite.cli", "agent", "--name", name, "--cluster", "c1"]
        args += ["--bind", f"127.0.0.1:{self.ports[name]}", "--profile", "local"]
        args += ["--key", self.key, "--http", f"127.0.0.1:{self.http[name]}"]
        for other in NAMES:
            if other != name:
                args += ["--join", f"127.0.0.1:{self.ports[other]}"]
        self.procs[name] = spawn(args)

    def get(self, name: str, path: str) -> object:
        return httpx.get(f"http://127.0.0.1:{self.http[name]}{path}", timeout=5.0).json()

    def alive(self, name: str) -> set[str]:
        members = self.get(name, "/v1/agent/members")
        assert isinstance(members, list)
        return {m["Name"] for m in members if m["Status"] == 1}

    def stats(self, name: str) -> dict[str, int]:
        self_doc = self.get(name, "/v1/agent/self")
        assert isinstance(self_doc, dict)
        return {k: int(v) for k, v in self_doc["Stats"]["meshlite"].items()}

    def wait_whole(self, timeout_s: float = DEADLINE_S) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if all(self.alive(n) == set(NAMES) for n in NAMES):
                    return
            except httpx.HTTPError:
                pass
            tails = {n: p.output()[-1500:] for n, p in self.procs.items()}
            assert time.monotonic() < deadline, tails
            time.sleep(0.1)


@pytest.fixture
def agents() -> Iterator[Agents]:
    a = Agents()
    try:
        for name in NAMES:
            a.start(name)
        a.wait_whole()
        yield a
    finally:
        for proc in a.procs.values():
            proc.kill()


def junk(sealer: Sealer, rng: random.Random) -> list[tuple[str, bytes]]:
    """One of each kind of frame a peer must refuse, with what it should count as."""
    now = time.time()
    valid = sealer.seal(b"\x00" * 40, now)
    tampered = bytearray(valid)
    tampered[-1] ^= 0x01
    wrong_key = Sealer(Keyring([parse_key(meshlite.generate_key())]), "c1").seal(b"x" * 40, now)
    other_cluster = Sealer(sealer.keyring, "c2").seal(b"x" * 40, now)
    plaintext = Sealer(None, "c1").seal(b"x" * 40, now)
    stale = sealer.seal(b"x" * 40, now - 3600)
    return [
        ("random", os.urandom(rng.randrange(1, 1400))),
        ("short", valid[:3]),
        ("plaintext", plaintext),
        ("wrong key", wrong_key),
        ("other cluster", other_cluster),
        ("tampered", bytes(tampered)),
        ("stale", stale),
        ("replayed", valid),  # the first copy may even open (as garbage); the rest: replay
    ]


def flood_udp(dst: tuple[str, int], sealer: Sealer, count: int) -> dict[str, int]:
    rng = random.Random(7)
    kinds = junk(sealer, rng)
    sent: dict[str, int] = {}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(count):
            name, frame = kinds[i % len(kinds)]
            if name == "random":
                frame = os.urandom(rng.randrange(1, 1400))
            sock.sendto(frame, dst)
            sent[name] = sent.get(name, 0) + 1
            if i % 2000 == 0:
                time.sleep(0.002)  # let the receiver breathe a little: count, not just drop
    finally:
        sock.close()
    return sent


def flood_tcp(dst: tuple[str, int], sealer: Sealer, count: int) -> None:
    valid = sealer.seal(b"\x00" * 40, time.time())
    payloads = [
        b"\x00\x00\x00\x10garbage garbage!",  # a frame that does not open
        b"\x7f\xff\xff\xff",  # a length beyond any limit: refused before reading
        encode_stream_frame(valid) * 3,  # a valid frame replayed on one stream
        CHANNEL_MAGIC + b"\x00\x00\x00\x08junkjunk",  # a channel whose first frame is junk
        MUX_MAGIC + b"\x00\x00\x00\x08junkjunk",  # the same for a multiplexed connection
        b"",  # connect and hang up
    ]
    for i in range(count):
        try:
            with socket.create_connection(dst, timeout=2.0) as s:
                s.sendall(payloads[i % len(payloads)])
        except OSError:
            pass  # refused or reset while the agent sheds load: fine


def test_a_junk_flood_leaves_memory_bounded_and_the_mesh_whole(agents: Agents) -> None:
    target = agents.procs["a"].proc.pid
    sealer = Sealer(Keyring([parse_key(agents.key)]), "c1")
    dst = ("127.0.0.1", agents.ports["a"])
    before = agents.stats("a")
    rss_before = rss_mib(target)

    sent = flood_udp(dst, sealer, PACKETS)
    flood_tcp(dst, sealer, TCP_CONNECTIONS)
    assert sum(sent.values()) == PACKETS

    # The refusals were counted (the kernel may have dropped part of the flood), and the
    # counters never exceed what was sent.
    deadline = time.monotonic() + DEADLINE_S
    while True:
        after = agents.stats("a")
        grew = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        refused = sum(v for k, v in grew.items() if k.startswith("drop_"))
        if refused >= PACKETS // 20 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for reason in ("drop_auth", "drop_replay", "drop_stale", "drop_short"):
        assert grew.get(reason, 0) > 0, (reason, grew)
    assert (
        grew.get("drop_auth", 0)
        <= sent["wrong key"]
        + sent["other cluster"]
        + sent["tampered"]
        + sent["random"]
        + TCP_CONNECTIONS
    ), grew

    rss_after = rss_mib(target)
    print(f"sent {sent}; counted {grew}; rss {rss_before:.1f} -> {rss_after:.1f} MiB")
    assert rss_after - rss_before < RSS_GROWTH_LIMIT_MIB, (rss_before, rss_after)

    # Refusals are logged once per (host, reason), not once per packet.
    log = agents.procs["a"].output()
    refusals = [line for line in log.splitlines() if "refusing traffic from" in line]
    assert 0 < len(refusals) <= 12, refusals

    # The mesh is whole, and gossip still flows through the flooded agent.
    agents.wait_whole()
    agents.procs["c"].kill()
    deadline = time.monotonic() + DEADLINE_S
    while "c" in agents.alive("b") or "c" in agents.alive("a"):
        assert time.monotonic() < deadline, "the failure of c never reached a and b"
        time.sleep(0.1)
