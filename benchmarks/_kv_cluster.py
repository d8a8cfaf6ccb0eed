"""Three-member KV clusters on loopback for the benchmarks: etcd and ``meshlite agent``.

Theory of operation
-------------------
Each member is a child process in its own session (``start_new_session``), so
:meth:`Member.kill` can SIGKILL its whole process group; stdout and stderr go to a log
file in the cluster's temporary directory (kept under ``benchmarks/results/logs`` when a
``keep_logs`` directory is given).  A cluster is a context manager: ``__exit__`` kills
every member it started, whatever happened, and removes its temporary directory (data
dirs included).  Ports come from ``meshlite.testing.free_ports``: random, free for TCP and
UDP, below the kernel's ephemeral range, so no outgoing connection takes one before its
member binds it.  Only 127.0.0.1 is used.

* :class:`EtcdCluster`: Debian's ``etcd`` (3.4), three members with their own client and
  peer ports and data dirs, ``--initial-cluster-state new``, every other setting at its
  default (fsync on, heartbeat 100 ms, election 1,000 ms).  :meth:`EtcdCluster.leader`
  asks each member ``POST /v3/maintenance/status`` (the v3 JSON gateway) and returns the
  client URL of the one whose ``member_id`` equals its ``leader``.
* :class:`MeshliteServers`: three ``meshlite agent --server --bootstrap-expect 3
  --data-dir DIR`` processes with the default (LAN) timing, encrypted with one fresh key
  and a cluster label; each joins the others; optionally each serves the HTTP API.
  Members can be killed and restarted on the same port and data dir (failover).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from meshlite.testing import free_ports, port_free

__all__ = [
    "EtcdCluster",
    "Member",
    "MeshliteServers",
    "etcd_binary",
    "free_ports",
    "meshlite_binary",
    "port_free",
]

# etcd members normally answer within a second or two of starting; Python agents take
# 0.3-1 s to start on two busy cores.  Both bounds are generous outer limits.
START_TIMEOUT_S = 30.0
# SIGTERM gets this long before SIGKILL on a normal stop (etcd and the agents leave
# cleanly in well under a second).
STOP_GRACE_S = 3.0
CLUSTER_LABEL = "bench"


def etcd_binary() -> str | None:
    """The etcd server binary (Debian's ``etcd-server`` puts it in /usr/bin), or None."""
    return shutil.which("etcd")


def meshlite_binary() -> str | None:
    beside = Path(sys.executable).parent / "meshlite"
    return str(beside) if beside.exists() else shutil.which("meshlite")


class Member:
    """One child process in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_offset = 0
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.log_offset = self._log.tell()  # where this incarnation's output begins
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> float:
        """SIGKILL the process group; returns ``time.monotonic()`` just before the kill."""
        t0 = time.monotonic()
        self._signal(signal.SIGKILL)
        self._reap(10.0)
        return t0

    def terminate(self) -> None:
        """SIGTERM the process group (a graceful leave); :meth:`stop` finishes the job."""
        self._signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; the group is always gone after."""
        self._signal(signal.SIGTERM)
        if not self._reap(STOP_GRACE_S):
            self._signal(signal.SIGKILL)
            self._reap(10.0)
        # Children a member forked that outlived it would still be in the group.
        self._signal(signal.SIGKILL)

    def output(self) -> bytes:
        """What the current incarnation has written so far."""
        with contextlib.suppress(OSError), self.log_path.open("rb") as f:
            f.seek(self.log_offset)
            return f.read()
        return b""

    def log_tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def _reap(self, timeout_s: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        if self._log is not None:
            self._log.close()
            self._log = None
        return True


class _Cluster:
    """Temporary directory, members, and the always-runs cleanup."""

    prefix = "kvbench-"

    def __init__(self, keep_logs: Path | None = None) -> None:
        self.keep_logs = keep_logs
        self.members: list[Member] = []
        self.dir = Path(tempfile.mkdtemp(prefix=self.prefix))

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        for member in self.members:  # all leave at once, then each is reaped (or killed)
            member.terminate()
        for member in self.members:
            member.stop()
        if self.keep_logs is not None:
            self.keep_logs.mkdir(parents=True, exist_ok=True)
            for log in self.dir.glob("*.log"):
                shutil.copy(log, self.keep_logs / log.name)
        shutil.rmtree(self.dir, ignore_errors=True)

    def failure(self, what: str) -> RuntimeError:
        tails = "\n".join(f"--- {m.name}:\n{m.log_tail()}" for m in self.members)
        return RuntimeError(f"{what}\n{tails}")


def _post_json(port: int, path: str, body: dict[str, str], timeout_s: float) -> dict[str, object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        payload = resp.read()
        if resp.status != 200:
            raise OSError(f"{path}: HTTP {resp.status}: {payload[:200]!r}")
        result: dict[str, object] = json.loads(payload)
        return result
    finally:
        conn.close()


class EtcdCluster(_Cluster):
    """Three etcd members on 127.0.0.1 with default (durable) settings."""

    prefix = "kvbench-etcd-"

    def __init__(self, size: int = 3, keep_logs: Path | None = None) -> None:
        super().__init__(keep_logs)
        self.size = size
        ports = free_ports(2 * size)
        self.client_ports, self.peer_ports = ports[:size], ports[size:]

    def start(self) -> None:
        binary = etcd_binary()
        if binary is None:
            raise RuntimeError("etcd not found: apt-get install -y etcd-server etcd-client")
        initial = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, p in enumerate(self.peer_ports))
        token = base64.b32encode(os.urandom(5)).decode().lower()
        for i, (cport, pport) in enumerate(zip(self.client_ports, self.peer_ports, strict=True)):
            argv = [binary, "--name", f"m{i}", "--data-dir", str(self.dir / f"m{i}.etcd")]
            argv += ["--listen-client-urls", f"http://127.0.0.1:{cport}"]
            argv += ["--advertise-client-urls", f"http://127.0.0.1:{cport}"]
            argv += ["--listen-peer-urls", f"http://127.0.0.1:{pport}"]
            argv += ["--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}"]
            argv += ["--initial-cluster", initial, "--initial-cluster-state", "new"]
            argv += ["--initial-cluster-token", f"kvbench-{token}"]
            argv += ["--logger", "zap", "--log-level", "warn"]
            member = Member(f"etcd-m{i}", argv, self.dir / f"etcd-m{i}.log")
            self.members.append(member)
            member.start()
        self.wait_leader(START_TIMEOUT_S)

    def status(self, i: int, timeout_s: float = 2.0) -> dict[str, object]:
        return _post_json(self.client_ports[i], "/v3/maintenance/status", {}, timeout_s)

    def leader(self) -> int | None:
        """Index of the member that is leader by its own account, or None."""
        for i in range(self.size):
            try:
                status = self.status(i)
            except (OSError, ValueError):
                continue
            header = status.get("header")
            if isinstance(header, dict) and header.get("member_id") == status.get("leader"):
                return i
        return None

    def wait_leader(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(not m.alive for m in self.members):
                raise self.failure("an etcd member exited during start-up")
            leader = self.leader()
            if leader is not None:
                return leader
            time.sleep(0.1)
        raise self.failure(f"no etcd leader within {timeout_s:.0f} s")

    def version(self) -> str:
        binary = etcd_binary() or "etcd"
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
        return out.stdout.splitlines()[0] if out.stdout else "etcd (unknown version)"


class MeshliteServers(_Cluster):
    """Three ``meshlite agent --server`` processes with data dirs, LAN timing, encrypted."""

    prefix = "kvbench-meshlite-"

    def __init__(self, size: int = 3, keep_logs: Path | None = None, http: bool = False) -> None:
        super().__init__(keep_logs)
        self.size = size
        ports = free_ports(2 * size if http else size)
        self.ports = ports[:size]
        # With ``http``, each agent also serves the HTTP API (``/v1/status/leader``).
        self.http_ports = ports[size:]
        self.key = base64.b64encode(os.urandom(32)).decode()
        self.names = [f"server-{i}" for i in range(size)]

    @property
    def join(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.ports]

    def argv(self, i: int) -> list[str]:
        binary = meshlite_binary()
        if binary is None:
            raise RuntimeError("the meshlite script is not installed (pip install -e .)")
        argv = [binary, "agent", "--name", self.names[i], "--bind", f"127.0.0.1:{self.ports[i]}"]
        argv += ["--server", "--bootstrap-expect", str(self.size)]
        argv += ["--data-dir", str(self.dir / f"{self.names[i]}.data")]
        argv += ["--key", self.key, "--cluster", CLUSTER_LABEL, "--log-json"]
        if self.http_ports:
            argv += ["--http", f"127.0.0.1:{self.http_ports[i]}"]
        for j, port in enumerate(self.ports):
            if j != i:
                argv += ["--join", f"127.0.0.1:{port}"]
        return argv

    def start(self) -> None:
        for i in range(self.size):
            member = Member(self.names[i], self.argv(i), self.dir / f"{self.names[i]}.log")
            self.members.append(member)
            member.start()
        for i in range(self.size):
            self.wait_started(i)

    def wait_started(self, i: int, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait for member ``i``'s ``"event":"start"`` log line (it is bound and serving).

        A client that joins before the seeds listen backs off for seconds."""
        member = self.members[i]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not member.alive:
                raise self.failure(f"{member.name} exited during start-up")
            if b'"event":"start"' in member.output():
                return
            time.sleep(0.05)
        raise self.failure(f"{member.name} did not start within {timeout_s:.0f} s")

    def index(self, name: str) -> int:
        return self.names.index(name)

    def restart(self, i: int) -> None:
        """Start member ``i`` again on its port and data dir (after :meth:`Member.kill`)."""
        member = self.members[i]
        if member.alive:
            raise RuntimeError(f"{member.name} is still running")
        member.start()

    def http_leader(self, i: int, timeout_s: float = 1.0) -> str | None:
        """Member ``i``'s ``GET /v1/status/leader`` ("" during an election), or None."""
        conn = http.client.HTTPConnection("127.0.0.1", self.http_ports[i], timeout=timeout_s)
        try:
            conn.request("GET", "/v1/status/leader")
            resp = conn.getresponse()
            payload = resp.read()
            if resp.status != 200:
                return None
            leader = json.loads(payload)
            return leader if isinstance(leader, str) else None
        except (OSError, ValueError):
            return None
        finally:
            conn.close()

    def check_alive(self) -> None:
        dead = [m.name for m in self.members if not m.alive]
        if dead:
            raise self.failure(f"meshlite server(s) exited: {', '.join(dead)}")

    def version(self) -> str:
        binary = meshlite_binary() or "meshlite"
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
        return (
            (out.stdout or out.stderr).strip().splitlines()[0] if out.stdout or out.stderr else ""
        )
