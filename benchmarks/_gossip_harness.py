"""Run gossip members as separate processes on loopback and watch what they log.

Theory of operation
-------------------
:class:`Cluster` starts each member in its own session (process group) with stdout and
stderr merged into one pipe, and reads that pipe in a thread per member.  Each line is
stamped with ``time.monotonic()`` on arrival, saved to a per-member log file, and parsed by
the system's parser (``_gossip_systems.py``) into an :class:`Observation`: "at time t,
observer O saw member M as KIND".  Observations are indexed by ``(kind, member)`` so a
question such as "when had every other member seen the newcomer join?" is a dictionary
look-up; :meth:`Cluster.wait_for` blocks on a condition variable until a predicate holds or
a deadline passes (every wait is bounded).

Traffic accounting (:class:`ByteCounters`): each member runs with its own group id, and a
dedicated iptables chain hooked into ``OUTPUT -o lo`` holds one rule per (gid, protocol)
using the ``owner --gid-owner`` match.  That counts every UDP datagram and TCP segment the
process sends, whatever source port it used (memberlist's push/pull connects from an
ephemeral port, which a ``--sport`` match would miss).  Bytes are IP packet lengths,
headers included.  The chain is removed in ``__exit__``, and chains left by a harness that
was SIGKILLed are removed at the next start.

CPU (:func:`cpu_seconds`) is ``utime + stime`` from ``/proc/<pid>/stat``, which covers all
of a process's threads.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

import attrs
from _gossip_systems import GossipSystem, Kind, Spec

__all__ = ["ByteCounters", "Cluster", "Observation", "cpu_seconds", "rss_mib"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
# A member's ready line normally arrives in well under a second; Python start-up on two
# busy cores can take several.
READY_TIMEOUT_S = 20.0


@attrs.frozen
class Observation:
    at_s: float  # time.monotonic() when the harness read the line
    observer: str
    kind: Kind
    member: str


@attrs.define
class _Member:
    spec: Spec
    proc: subprocess.Popen[bytes]
    spawned_s: float
    ready_s: float | None = None
    first_line_s: float | None = None
    reader: threading.Thread | None = None


class Cluster:
    """Members of one system, their output, and what they have said about each other."""

    def __init__(self, system: GossipSystem, key: str, log_dir: Path) -> None:
        self.system = system
        self.key = key
        self.log_dir = log_dir
        self.members: dict[str, _Member] = {}
        self.observations: list[Observation] = []
        self._index: dict[tuple[Kind, str], dict[str, list[float]]] = {}
        # (observer, member) pairs with a JOIN seen, self excluded: a cheap convergence test.
        self.join_pairs: set[tuple[str, str]] = set()
        self._cond = threading.Condition(threading.RLock())
        log_dir.mkdir(parents=True, exist_ok=True)

    # --------------------------------------------------------------- processes

    def spawn(self, spec: Spec, seed: Spec | None) -> float:
        """Start one member; returns the monotonic time just before the spawn."""
        argv = self.system.argv(spec, seed, self.key)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        group = {} if spec.gid is None else {"group": spec.gid, "extra_groups": []}
        t0 = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            **group,  # type: ignore[call-overload]
        )
        member = _Member(spec, proc, t0)
        member.reader = threading.Thread(target=self._read, args=(member,), daemon=True)
        with self._cond:
            self.members[spec.name] = member
        member.reader.start()
        return t0

    def wait_ready(self, name: str, timeout_s: float = READY_TIMEOUT_S) -> bool:
        member = self.members[name]
        return self.wait_for(lambda: member.ready_s is not None, timeout_s)

    def kill(self, name: str) -> float:
        """SIGKILL one member's process group; returns the monotonic time of the kill."""
        member = self.members[name]
        t0 = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(member.proc.pid, signal.SIGKILL)
        member.proc.wait(timeout=10)
        return t0

    def exited(self) -> dict[str, int]:
        """Members whose process has ended, with their exit codes."""
        return {n: rc for n, m in self.members.items() if (rc := m.proc.poll()) is not None}

    def close(self) -> None:
        """Kill every member's process group and reap it (idempotent)."""
        for member in self.members.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(member.proc.pid, signal.SIGKILL)
        for member in self.members.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                member.proc.wait(timeout=10)
            if member.reader is not None:
                member.reader.join(timeout=2)

    def _read(self, member: _Member) -> None:
        stream: IO[bytes] | None = member.proc.stdout
        assert stream is not None
        path = self.log_dir / f"{member.spec.name}.log"
        with path.open("w", encoding="utf-8", buffering=1) as log:  # line-buffered: tail -f
            for raw in iter(stream.readline, b""):
                now = time.monotonic()
                line = raw.decode("utf-8", "replace").rstrip("\n")
                log.write(f"{now - member.spawned_s:10.3f} {line}\n")
                self._note(member, now, line.strip())

    def _note(self, member: _Member, now: float, line: str) -> None:
        sighting = self.system.parse(line)
        with self._cond:
            if member.first_line_s is None:
                member.first_line_s = now
            if member.ready_s is None and self.system.is_ready(line):
                member.ready_s = now
            if sighting is not None:
                obs = Observation(now, member.spec.name, sighting.kind, sighting.member)
                self.observations.append(obs)
                by_observer = self._index.setdefault((obs.kind, obs.member), {})
                by_observer.setdefault(obs.observer, []).append(now)
                if obs.kind is Kind.JOIN and obs.observer != obs.member:
                    self.join_pairs.add((obs.observer, obs.member))
            self._cond.notify_all()

    # --------------------------------------------------------------- questions

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Block until ``predicate()`` (evaluated under the lock) holds, or time runs out."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(timeout=min(left, 1.0))
        return True

    def first_seen(
        self, kinds: Iterable[Kind], member: str, observers: Iterable[str], since_s: float
    ) -> dict[str, float]:
        """For each observer that has, the first time at/after ``since_s`` it saw ``member``
        as one of ``kinds``."""
        seen: dict[str, float] = {}
        with self._cond:  # reentrant: wait_for's predicates call this under the lock
            for kind in kinds:
                for observer, times in self._index.get((kind, member), {}).items():
                    later = [t for t in times if t >= since_s]
                    if observer in observers and later:
                        seen[observer] = min(later[0], seen.get(observer, later[0]))
        return seen

    def seen_by_all(
        self, kinds: Iterable[Kind], member: str, observers: set[str], since_s: float
    ) -> bool:
        return len(self.first_seen(kinds, member, observers, since_s)) == len(observers)

    def sightings(self, kinds: set[Kind], start_s: float, end_s: float) -> list[Observation]:
        with self._cond:
            return [o for o in self.observations if o.kind in kinds and start_s <= o.at_s <= end_s]


# ------------------------------------------------------------------- /proc readings


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process (all threads), in seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # fields 14 and 15 of proc(5)


def rss_mib(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(m.group(1)) / 1024 if m else None


# ------------------------------------------------------------------- byte counters

_CHAIN_PREFIX = "MLBENCH"
_RULE = re.compile(r"^\s*\d+\s+(\d+)\s+RETURN\s+(\S+)\s.*owner GID match (\d+)")


def _run_iptables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["iptables", "-w", "5", *args], capture_output=True, text=True, timeout=30, check=False
    )


def _iptables(*args: str) -> str:
    out = _run_iptables(*args)
    if out.returncode != 0:
        raise RuntimeError(f"iptables {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def _drop_chain(chain: str) -> None:
    for _ in range(10):  # a jump inserted twice needs deleting twice; bounded
        if _run_iptables("-D", "OUTPUT", "-o", "lo", "-j", chain).returncode != 0:
            break
    _run_iptables("-F", chain)
    _run_iptables("-X", chain)


class ByteCounters:
    """Per-gid UDP and TCP bytes sent on ``lo``, from a dedicated iptables chain."""

    def __init__(self) -> None:
        self.chain = f"{_CHAIN_PREFIX}{os.getpid()}"
        self.enabled = False
        self.reason = ""

    def __enter__(self) -> ByteCounters:
        if os.geteuid() != 0 or shutil.which("iptables") is None:
            self.reason = "needs root and iptables"
            return self
        _remove_stale_chains()
        try:
            _iptables("-N", self.chain)
            _iptables("-I", "OUTPUT", "-o", "lo", "-j", self.chain)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            self.reason = str(exc)
            _drop_chain(self.chain)
            return self
        self.enabled = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            _drop_chain(self.chain)
            self.enabled = False

    def track(self, gid: int) -> None:
        if self.enabled:
            for proto in ("udp", "tcp"):
                _iptables("-A", self.chain, "-m", "owner", "--gid-owner", str(gid),
                          "-p", proto, "-j", "RETURN")  # fmt: skip

    def clear(self) -> None:
        """Remove every per-gid rule (and so its counters)."""
        if self.enabled:
            _iptables("-F", self.chain)

    def read(self) -> dict[int, dict[str, int]]:
        """``{gid: {"udp": bytes, "tcp": bytes}}`` so far."""
        if not self.enabled:
            return {}
        counts: dict[int, dict[str, int]] = {}
        for line in _iptables("-vxnL", self.chain).splitlines():
            m = _RULE.match(line)
            if m is not None:
                proto = {"17": "udp", "6": "tcp"}.get(m.group(2), m.group(2))
                counts.setdefault(int(m.group(3)), {})[proto] = int(m.group(1))
        return counts


def _remove_stale_chains() -> None:
    """Chains of earlier harness runs whose process is gone (e.g. SIGKILLed)."""
    for m in re.finditer(rf"^-N ({_CHAIN_PREFIX}(\d+))$", _iptables("-S"), re.MULTILINE):
        if not Path(f"/proc/{m.group(2)}").exists():
            _drop_chain(m.group(1))
