"""The network-namespace fixture itself: it builds what it says and always cleans up."""

from __future__ import annotations

import subprocess
import sys

import pytest
from netns import NetnsUnavailableError, lan, require_lan

pytestmark = pytest.mark.netns


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return {line.split()[0] for line in out.stdout.splitlines() if line.split()}


def test_hosts_get_distinct_addresses_on_a_shared_segment() -> None:
    with require_lan(2) as (a, b):
        assert (a.address, b.address) == ("10.200.0.1", "10.200.0.2")
        assert f"inet {b.address}/24" in b.run(["ip", "-4", "addr", "show", "dev", "eth0"])
        # A UDP datagram from a to b crosses the bridge (and only exists inside the namespaces).
        receiver = b.popen(
            [
                sys.executable,
                "-c",
                "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                f"s.bind(('{b.address}', 9999)); s.settimeout(10); print(s.recv(16).decode())",
            ],
            stdout=subprocess.PIPE,
        )
        try:
            send = (
                "import socket, time\n"
                "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                "for _ in range(50):\n"
                f"    s.sendto(b'hi', ('{b.address}', 9999))\n"
                "    time.sleep(0.1)\n"
            )
            sender = a.popen([sys.executable, "-c", send])
            out, _ = receiver.communicate(timeout=15)
            sender.kill()
            sender.wait(5)
        finally:
            receiver.kill()
        assert out.strip() == "hi"


def interrupted_run(names: list[str], children: list[subprocess.Popen[str]]) -> None:
    """Build a LAN, start a long process in it, then get interrupted like Ctrl-C would."""
    with require_lan(2) as hosts:
        names += [h.name for h in hosts]
        assert set(names) <= namespaces()
        children.append(hosts[0].popen(["sleep", "60"]))
        raise KeyboardInterrupt


def test_namespaces_and_processes_go_away_even_on_keyboard_interrupt() -> None:
    names: list[str] = []
    children: list[subprocess.Popen[str]] = []
    with pytest.raises(KeyboardInterrupt):
        interrupted_run(names, children)
    assert children[0].wait(10) != 0  # killed by the fixture, not finished
    assert not set(names) & namespaces()
    assert not [n for n in namespaces() if n.startswith(names[0][:-2])]  # the hub too


def test_namespaces_left_by_a_killed_run_are_removed() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait(10)
    stale = f"ml{dead.pid}n0h0"
    try:
        subprocess.run(["ip", "netns", "add", stale], check=True, capture_output=True, timeout=20)
    except (subprocess.CalledProcessError, FileNotFoundError, PermissionError) as exc:
        pytest.skip(f"cannot create a namespace here: {exc}")
    try:
        with lan(1):
            assert stale not in namespaces()
    except NetnsUnavailableError as exc:
        pytest.skip(str(exc))
    finally:
        subprocess.run(["ip", "netns", "delete", stale], capture_output=True, check=False)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="count"), lan(0):
        pass
    with pytest.raises(ValueError, match="count"), lan(201):
        pass
