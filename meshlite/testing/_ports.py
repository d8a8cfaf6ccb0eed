"""Ports for processes a test or benchmark starts, chosen so that nothing else takes them.

A port found free by binding port 0 comes from the kernel's ephemeral range
(``/proc/sys/net/ipv4/ip_local_port_range``, 32768-60999 on Linux), which is also where
every outgoing TCP connection's source port comes from: between the test closing its probe
socket and the agent binding the port, any process's connection (another pytest worker's
mesh, say) may take it, and the agent then fails to bind.  These come from below that
range instead, at random (so two pytest workers rarely pick the same one), and must be free
for TCP and UDP alike (an agent binds both on its port).  ``tests/`` and ``benchmarks/``
both use these.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["free_port", "free_ports", "port_free"]

_LOW = 20000  # above well-known services and most registered ones


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_free(port: int) -> bool:
    """Whether ``port`` can be bound on 127.0.0.1 for both TCP and UDP right now."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports, free on 127.0.0.1 for TCP and UDP, outside the ephemeral range."""
    high = max(_LOW + 1000, _ephemeral_floor()) - 1
    rng = random.Random()
    ports: list[int] = []
    for _ in range(10_000):
        if len(ports) == n:
            return ports
        port = rng.randint(_LOW, high)
        if port not in ports and port_free(port):
            ports.append(port)
    raise RuntimeError(f"no {n} free ports in {_LOW}-{high}")


def free_port() -> int:
    """One port, as :func:`free_ports`."""
    (port,) = free_ports(1)
    return port
