"""mDNS across hosts: peers in separate network namespaces on one private bridge.

Each peer is a process started with ``ip netns exec`` (see ``netns.py``), so each has its
own interfaces, its own port 5353 and its own 10.200.0.x address, as separate machines on
a LAN would.  Needs root; skips with the reason otherwise.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import uuid
from pathlib import Path

import pytest
from netns import Host, LineProcess, require_lan

from meshlite._mdns import CLOSE_TIMEOUT_S

pytestmark = pytest.mark.netns

HERE = Path(__file__).parent
PORT = 7946
FIND_TIMEOUT_S = 20.0  # typical 1-3 s; process start-up and 2 busy cores add to it
STOP_TIMEOUT_S = CLOSE_TIMEOUT_S + 10.0


def mdns_peer(host: Host, name: str, bind_host: str, cluster: str, *ifaces: str) -> LineProcess:
    script = str(HERE / "mdns_peer.py")
    return LineProcess(host, [sys.executable, script, name, bind_host, str(PORT), cluster, *ifaces])


def stop_all(peers: list[LineProcess]) -> None:
    for peer in peers:
        assert peer.stop(STOP_TIMEOUT_S) == 0, peer.output()


def test_peers_find_each_other_across_namespaces_but_not_other_clusters() -> None:
    with require_lan(3) as (host_a, host_b, host_c):
        peers: list[LineProcess] = []
        try:
            c = mdns_peer(host_c, "c", host_c.address, "staging")
            peers.append(c)
            assert c.wait_for(lambda s: "registered c." in s, FIND_TIMEOUT_S), c.output()
            a = mdns_peer(host_a, "a", "0.0.0.0", "prod")  # wildcard: advertises eth0's address
            b = mdns_peer(host_b, "b", host_b.address, "prod")
            peers += [a, b]
            assert a.wait_for(lambda s: s == f"found {host_b.address} {PORT}", FIND_TIMEOUT_S), (
                a.output()
            )
            assert b.wait_for(lambda s: s == f"found {host_a.address} {PORT}", FIND_TIMEOUT_S), (
                b.output()
            )
            # c answered both browsers and was filtered out, not merely missed:
            for peer in (a, b):
                seen_c = peer.wait_for(lambda s: "c._meshlite._udp.local. is another" in s, 5.0)
                assert seen_c, peer.output()
            stop_all(peers)
        finally:
            for peer in peers:
                peer.kill()
        assert [s for s in a.lines if s.startswith("found")] == [f"found {host_b.address} {PORT}"]
        assert [s for s in b.lines if s.startswith("found")] == [f"found {host_a.address} {PORT}"]
        assert not [s for s in c.lines if s.startswith("found")], c.output()
        for peer in peers:
            assert not [s for s in peer.lines if s.startswith("log WARNING")], peer.output()
            closed = [float(s.split()[1]) for s in peer.lines if s.startswith("closed")]
            assert closed, peer.output()
            assert closed[0] < CLOSE_TIMEOUT_S


def test_no_multicast_interface_warns_and_carries_on() -> None:
    with require_lan(1) as (host,):
        # Both interfaces down (they keep their addresses): nothing can carry multicast.
        host.run(["ip", "link", "set", "eth0", "down"])
        host.run(["ip", "link", "set", "lo", "down"])
        peer = mdns_peer(host, "solo", "0.0.0.0", "prod")
        try:
            assert peer.wait_for(lambda s: s.startswith("log WARNING"), FIND_TIMEOUT_S)
            assert peer.stop(STOP_TIMEOUT_S) == 0, peer.output()
        finally:
            peer.kill()
        warnings = [s for s in peer.lines if s.startswith("log WARNING")]
        assert len(warnings) == 1, peer.output()
        assert "mDNS discovery disabled for 'solo'" in warnings[0]
        assert "seed addresses" in warnings[0]
        assert peer.lines[-1].startswith("closed"), peer.output()


# -- two full meshes that join through mDNS only ---------------------------------------


def mesh_peer(host: Host, name: str, cluster: str, key: str, backend: str) -> LineProcess:
    bind = f"{host.address}:{PORT}"
    args = [str(HERE / "mesh_peer.py"), name, bind, cluster, key, backend, "--mdns"]
    return LineProcess(host, [sys.executable, *args])


def sees_alive(peer: LineProcess, name: str, address: str) -> str | None:
    def match(line: str) -> bool:
        if not line.startswith("members "):
            return False
        return [name, address, "alive"] in json.loads(line.removeprefix("members "))

    return peer.wait_for(match, FIND_TIMEOUT_S)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_two_meshes_join_via_mdns_alone(backend: str) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    cluster = f"netns-{uuid.uuid4().hex[:8]}"
    with require_lan(2) as (host_a, host_b):
        peers: list[LineProcess] = []
        try:
            a = mesh_peer(host_a, "a", cluster, key, backend)
            b = mesh_peer(host_b, "b", cluster, key, backend)
            peers += [a, b]
            assert sees_alive(a, "b", f"{host_b.address}:{PORT}"), a.output()
            assert sees_alive(b, "a", f"{host_a.address}:{PORT}"), b.output()
            stop_all(peers)
        finally:
            for peer in peers:
                peer.kill()
        for peer in peers:
            assert peer.lines[-1] == "closed", peer.output()
            assert not [s for s in peer.lines if s.startswith("log WARNING")], peer.output()
