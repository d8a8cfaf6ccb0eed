"""Throw-away Linux network namespaces joined on one private Ethernet segment.

``with lan(3) as hosts:`` creates three namespaces ``ml<pid>n<run>h0..2``, each with ``lo`` up
and an ``eth0`` (multicast on) addressed ``10.200.0.1/24``, ``.2``, ``.3``, whose veth peers
are enslaved to a bridge that lives in a fourth, hub namespace.  Nothing is created in the
namespace the tests run in, so no test traffic can reach a real network: the /24 exists
only inside these namespaces, and there is no route out.  The bridge floods 224.0.0.0/24
(mDNS's 224.0.0.251 among them) to every port, like a switch.

Cleanup always runs (exceptions, ``KeyboardInterrupt``, pytest timeouts): processes left
in our namespaces are killed by pid, then the namespaces are deleted, which destroys their
veth pairs and the bridge.  A run killed with SIGKILL leaves its namespaces behind; the next
run deletes any ``ml<pid>n*`` whose pid is gone.

Use :func:`require_lan` from tests to skip with a clear reason when this cannot work (not
root, no ``ip``, no netns/veth/bridge support in the kernel).  ``Host.popen`` runs a command
inside a namespace (``ip netns exec``); ``Host.run`` also checks its exit status, e.g. to
shape traffic with ``tc qdisc add dev eth0 root netem loss 10%`` where the kernel has
``sch_netem`` (the development sandbox's kernel does not: "Specified qdisc kind is unknown").
``LineProcess`` runs a helper script and collects its stdout lines to wait on.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import pytest

__all__ = [
    "Host",
    "LineProcess",
    "NetnsUnavailableError",
    "lan",
    "require_isolated",
    "require_lan",
]

SUBNET = "10.200.0"  # RFC 1918 space, only ever configured inside our namespaces
PREFIX_LEN = 24
# Commands here are local netlink calls that take milliseconds; 20 s means "the kernel is stuck".
IP_TIMEOUT_S = 20.0
MAX_HOSTS = 200  # 10.200.0.1 .. .200 within the /24
_runs = itertools.count()


class NetnsUnavailableError(RuntimeError):
    """Namespaces cannot be created here; the message says why (used as the skip reason)."""


@attrs.frozen
class Host:
    """One namespace: ``name`` for ``ip netns exec``, ``address`` on its ``eth0``."""

    name: str
    address: str

    def command(self, args: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        """Start ``args`` inside this namespace (text mode); the caller must reap it."""
        return subprocess.Popen(self.command(args), text=True, **kwargs)

    def run(self, args: Sequence[str], timeout_s: float = IP_TIMEOUT_S) -> str:
        """Run ``args`` inside this namespace, raise on failure, return its stdout."""
        return _ip_check(self.command(args), timeout_s)


class LineProcess:
    """A child process whose stdout lines are collected by a thread, to wait on with a deadline.

    ``stop()`` closes stdin (the helpers in tests/ exit on that) and waits; ``kill()`` is
    the ``finally`` backstop.  stderr is merged into the lines, so tracebacks show up in
    assertion messages.
    """

    def __init__(self, host: Host, args: Sequence[str]) -> None:
        self.host = host
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = host.popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, match: Callable[[str], bool], timeout_s: float) -> str | None:
        """The first line (already seen or arriving within ``timeout_s``) that matches."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for line in self.lines:
                    if match(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    return None
                self._cond.wait(min(remaining, 0.5))

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def stop(self, timeout_s: float) -> int | None:
        """Close stdin and wait for a clean exit; the exit code, or None if it hung."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None
        self._reader.join(timeout_s)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(IP_TIMEOUT_S)


def _ip(args: Sequence[str], timeout_s: float = IP_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout_s, check=False
    )


def _ip_check(args: Sequence[str], timeout_s: float = IP_TIMEOUT_S) -> str:
    done = _ip(args, timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale() -> None:
    """Delete namespaces a SIGKILLed earlier run of this module left behind."""
    for line in _ip(["ip", "netns", "list"]).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        pid_text = name[2:].partition("n")[0]
        if name.startswith("ml") and pid_text.isdigit() and not _pid_alive(int(pid_text)):
            _delete(name)


def _kill_pids(name: str) -> None:
    """Kill processes still inside namespace ``name`` (only ever ones our tests started)."""
    for text in _ip(["ip", "netns", "pids", name]).stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(text), signal.SIGKILL)


def _delete(name: str) -> None:
    _kill_pids(name)
    _ip(["ip", "netns", "delete", name])


def _check_available() -> None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        raise NetnsUnavailableError("network-namespace tests need root (CI runs them as root)")
    if shutil.which("ip") is None:
        raise NetnsUnavailableError(
            "network-namespace tests need iproute2's `ip` (apt-get install iproute2)"
        )


def _build(hub: str, hosts: list[Host]) -> None:
    _ip_check(["ip", "netns", "add", hub])
    _ip_check(["ip", "-n", hub, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"])
    _ip_check(["ip", "-n", hub, "link", "set", "br0", "up"])
    for index, host in enumerate(hosts):
        port = f"p{index}"
        _ip_check(["ip", "netns", "add", host.name])
        # Both veth ends are created directly inside their namespaces: never in ours.
        veth = ["ip", "link", "add", "name", "eth0", "netns", host.name, "type", "veth"]
        _ip_check([*veth, "peer", "name", port, "netns", hub])
        _ip_check(["ip", "-n", hub, "link", "set", port, "master", "br0", "up"])
        _ip_check(["ip", "-n", host.name, "link", "set", "lo", "up"])
        _ip_check(
            ["ip", "-n", host.name, "addr", "add", f"{host.address}/{PREFIX_LEN}", "dev", "eth0"]
        )
        _ip_check(["ip", "-n", host.name, "link", "set", "eth0", "multicast", "on", "up"])
    # `ip netns exec` also needs to remount /sys, which some containers forbid: find out now.
    _ip_check(hosts[0].command(["true"]))


@contextlib.contextmanager
def lan(count: int) -> Iterator[list[Host]]:
    """``count`` namespaces on one bridge; raises :class:`NetnsUnavailableError` if impossible."""
    if not 1 <= count <= MAX_HOSTS:
        raise ValueError(f"count must be between 1 and {MAX_HOSTS}, got {count}")
    _check_available()
    _remove_stale()
    stem = f"ml{os.getpid()}n{next(_runs)}"
    hub = f"{stem}hub"
    hosts = [Host(f"{stem}h{i}", f"{SUBNET}.{i + 1}") for i in range(count)]
    try:
        try:
            _build(hub, hosts)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            raise NetnsUnavailableError(f"cannot build the namespace LAN: {exc}") from exc
        yield hosts
    finally:
        for name in [*(h.name for h in hosts), hub]:
            with contextlib.suppress(Exception):
                _delete(name)


@contextlib.contextmanager
def require_lan(count: int) -> Iterator[list[Host]]:
    """:func:`lan`, but skip the calling test when namespaces are unavailable."""
    try:
        manager = lan(count)
        hosts = manager.__enter__()
    except NetnsUnavailableError as exc:
        pytest.skip(str(exc))
    with contextlib.ExitStack() as stack:
        stack.push(manager)
        yield hosts


@contextlib.contextmanager
def require_isolated() -> Iterator[Host]:
    """One namespace with nothing but ``lo`` (address 127.0.0.1): whatever runs inside can
    reach no other host at all, so it may be fed arbitrary input (a fuzzer registering HTTP
    checks against random addresses).  Skips the calling test when namespaces are
    unavailable; cleaned up like :func:`lan`'s."""
    try:
        _check_available()
        _remove_stale()
        host = Host(f"ml{os.getpid()}n{next(_runs)}iso", "127.0.0.1")
        _ip_check(["ip", "netns", "add", host.name])
    except (NetnsUnavailableError, RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot create a network namespace: {exc}")
    try:
        _ip_check(["ip", "-n", host.name, "link", "set", "lo", "up"])
        _ip_check(host.command(["true"]))
        yield host
    finally:
        with contextlib.suppress(Exception):
            _delete(host.name)
