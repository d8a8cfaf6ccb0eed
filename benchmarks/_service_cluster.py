"""The service-propagation benchmark's peers, as the gossip harness runs them.

Theory of operation
-------------------
``bench_service_propagation.py`` reuses the membership benchmark's process harness
(``_gossip_harness.Cluster``: one session per process, stdout read in a thread per peer,
each line stamped with ``time.monotonic()`` on arrival and logged per peer, bounded waits
on a condition variable, SIGKILL of every process group in ``close``).  Two things
differ, and live here:

* :class:`ServicePeers` is the ``GossipSystem`` it launches: ``_service_peer.py``
  processes, which print their own monotonic stamps (see that file for the lines);
* :class:`PeerCluster` gives each peer a stdin pipe (commands; closing it stops the peer)
  and keeps, per peer, the time series the benchmark asks about: watch counts, discover()
  poll counts, gossip counters, members alive, and the ``did`` lines of commands.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import attrs
from _gossip_harness import Cluster, _Member
from _gossip_systems import Sighting, Spec

import meshlite

__all__ = ["COMMAND_TIMEOUT_S", "SERVICE", "PeerCluster", "ServicePeers"]

PEER = Path(__file__).resolve().parent / "_service_peer.py"
SERVICE = "bench-svc"
COMMAND_TIMEOUT_S = 10.0  # a peer prints "did"/"stats" right after reading the line


@attrs.frozen
class ServicePeers:
    """The ``GossipSystem`` the harness launches: ``_service_peer.py`` processes."""

    check_interval_s: float
    check_timeout_s: float
    poll_s: float
    name: str = "meshlite-services"

    def unavailable(self) -> str | None:
        return None

    def argv(self, spec: Spec, seed: Spec | None, key: str) -> list[str]:
        argv = [sys.executable, str(PEER), "--name", spec.name]
        argv += ["--bind", f"127.0.0.1:{spec.port}", "--key", key, "--service", SERVICE]
        argv += ["--check-interval-s", str(self.check_interval_s)]
        argv += ["--check-timeout-s", str(self.check_timeout_s), "--poll-s", str(self.poll_s)]
        return argv + (["--join", f"127.0.0.1:{seed.port}"] if seed is not None else [])

    def is_ready(self, line: str) -> bool:
        return line.startswith("ready ")

    def parse(self, line: str) -> Sighting | None:
        return None  # membership is read from "members" lines, see PeerCluster

    def version(self) -> str:
        return f"meshlite {meshlite.__version__}"


class PeerCluster(Cluster):
    """The harness's cluster, with stdin pipes and the peers' own time-stamped lines."""

    def __init__(self, system: ServicePeers, key: str, log_dir: Path) -> None:
        super().__init__(system, key, log_dir)
        self.watch: dict[str, list[tuple[float, int]]] = {}  # peer -> [(t, count)]
        self.polled: dict[str, list[tuple[float, int]]] = {}  # the same, from discover()
        self.stats: dict[str, dict[str, int]] = {}  # peer -> Mesh.stats
        self.counters: dict[str, list[tuple[float, int, int]]] = {}  # (t, delivered, syncs)
        self.alive: dict[str, int] = {}  # peer -> members alive, latest
        self.did: list[tuple[str, float]] = []  # (command line, t) from any peer
        self.errors: list[str] = []

    def spawn(self, spec: Spec, seed: Spec | None) -> float:
        """As ``Cluster.spawn``, with stdin a pipe (commands; closing it stops the peer)."""
        argv = self.system.argv(spec, seed, self.key)
        t0 = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        member = _Member(spec, proc, t0)
        with self._cond:
            self.members[spec.name] = member
            self.watch[spec.name] = []
            self.polled[spec.name] = []
            self.counters[spec.name] = []
        member.reader = threading.Thread(target=self._read, args=(member,), daemon=True)
        member.reader.start()
        return t0

    def _note(self, member: _Member, now: float, line: str) -> None:
        words = line.split()
        with self._cond:
            try:
                kind, t = words[0], float(words[-1])
                if kind == "watch":
                    self.watch[member.spec.name].append((t, int(words[1])))
                elif kind == "discover":
                    self.polled[member.spec.name].append((t, int(words[1])))
                elif kind == "counters":
                    self.counters[member.spec.name].append((t, int(words[1]), int(words[2])))
                elif kind == "stats":
                    self.stats[member.spec.name] = json.loads(words[1])
                elif kind == "members":
                    self.alive[member.spec.name] = int(words[1])
                elif kind == "did":
                    self.did.append((" ".join(words[1:-1]), t))
                elif kind == "error":
                    self.errors.append(f"{member.spec.name}: {line}")
            except (IndexError, ValueError):  # a traceback or a warning: kept in the log
                if line:
                    self.errors.append(f"{member.spec.name}: {line}")
        super()._note(member, now, line)  # readiness, and wakes wait_for

    def command(self, name: str, line: str) -> tuple[str, float] | None:
        """Send one command to ``name``; its ``did`` line, or None if none came in time."""
        with self._cond:
            before = len(self.did)
        stdin = self.members[name].proc.stdin
        assert stdin is not None
        stdin.write(f"{line}\n".encode())
        stdin.flush()
        if not self.wait_for(lambda: len(self.did) > before, COMMAND_TIMEOUT_S):
            return None
        return self.did[before]

    def first_count(
        self, name: str, count: int, since_s: float, polled: bool = False
    ) -> float | None:
        """When ``name``'s watch (or discover() poll) first showed ``count`` at/after
        ``since_s``."""
        with self._cond:
            series = (self.polled if polled else self.watch)[name]
            return next((t for t, c in series if t >= since_s and c == count), None)

    def counters_at(self, name: str, at_s: float) -> tuple[int, int] | None:
        """``name``'s (broadcasts delivered, push/pulls) as last printed before ``at_s``."""
        with self._cond:
            last = [(d, s) for t, d, s in self.counters[name] if t <= at_s]
            return last[-1] if last else None

    def collect_stats(self) -> None:
        """Ask every peer for its counters; wait a bounded time for the answers."""
        for member in self.members.values():
            if member.proc.stdin is not None and member.proc.poll() is None:
                with contextlib.suppress(OSError):
                    member.proc.stdin.write(b"stats\n")
                    member.proc.stdin.flush()
        self.wait_for(lambda: len(self.stats) == len(self.members), COMMAND_TIMEOUT_S)

    def last_count(self, name: str) -> int | None:
        with self._cond:
            return self.watch[name][-1][1] if self.watch[name] else None

    def close(self) -> None:
        for member in self.members.values():
            if member.proc.stdin is not None:
                with contextlib.suppress(OSError):  # the peer is gone: a broken pipe
                    member.proc.stdin.close()
        super().close()
