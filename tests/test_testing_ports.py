"""meshlite.testing.free_ports: distinct, bindable for TCP and UDP, below the ephemeral range."""

from __future__ import annotations

import socket
from pathlib import Path

from meshlite.testing import free_port, free_ports, port_free


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    floor = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert all(20000 <= p < floor for p in ports)
    assert all(port_free(p) for p in ports)
    assert 20000 <= free_port() < floor


def test_a_port_in_use_for_either_protocol_is_not_free() -> None:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            assert not port_free(s.getsockname()[1])
