"""The chaos test bed: ``meshlite agent`` on N namespaced hosts, a worker beside each.

Theory of operation
-------------------
:class:`Bed` takes the hosts of ``netns.lan(n)`` (10.200.0.1 .. .n on one bridge) and
starts on host ``i`` an agent named ``h<i>``, bound to the host's own address
(``--bind 10.200.0.<i+1>:7946``), serving the HTTP API on the namespace's own loopback
(``--http 127.0.0.1:8500``), encrypted (``--key``), ``--join``-ing every other host,
logging JSON lines (``--log-json``), and registering one service ``chaos`` (id
``chaos-h<i>``, no check: passing) from a config file so that a restarted agent
registers it again.  The first ``servers`` hosts (3) are ``--server --bootstrap-expect
3 --data-dir``; the others are client agents that forward KV calls to the leader.

The timing profile is ``lan``, the default and the one meant for separate hosts: a
1 s probe interval, suspicion scaled by log N.  ``local`` (probes every 0.2 s) detects
faster, but on a shared 2-core machine running ten Python processes a scheduling stall
of a few hundred milliseconds is common, and under ``local`` it becomes a false death —
a failure of the configuration, not of meshlite, which the membership checker would
(rightly) report.  Raft's timing is the same under both profiles.

Beside each agent runs ``worker.py`` (:class:`WorkerProc`): the KV and lock workloads
and an observer, all through the local agent's HTTP API, plus a request proxy.  The
test process has no route into the namespaces' 10.200.0.0/24 (none is ever added): it
reaches the agents only through the workers' stdin/stdout (:meth:`WorkerProc.request`)
and signals the agents' processes directly (``ip netns exec`` execs the command, so the
``Popen`` pid is the agent's).  Everything each process prints is kept: the agents'
logs give the membership events (``event=dead``), the workers' lines the histories.

Cleanup: :meth:`Bed.close` kills every process the bed started; ``netns.lan`` then
kills whatever is left in the namespaces and deletes them, on any exit.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
from netns import Host, LineProcess

from meshlite import generate_key

HERE = Path(__file__).resolve().parent
WORKER = HERE / "worker.py"
GOSSIP_PORT = 7946
HTTP = "127.0.0.1:8500"
SERVICE = "chaos"
STOP_TIMEOUT_S = 60.0  # a worker drains its in-flight requests (op timeout 20 s) first
REPLY_TIMEOUT_S = 30.0


def wall_to_monotonic_offset() -> float:
    """``time.time() - time.monotonic()`` now: converts the agents' log timestamps."""
    return time.time() - time.monotonic()


@attrs.frozen
class Death:
    """``observer``'s agent logged ``member`` as dead at ``at`` (monotonic seconds)."""

    observer: str
    member: str
    at: float


@attrs.frozen
class Observation:
    """One poll of an observer: members' Serf status and the passing ``chaos`` nodes."""

    who: str
    call: float
    ret: float
    members: dict[str, int] | None
    svc: tuple[str, ...] | None


class Agent:
    """One host's ``meshlite agent``: its command line, its lives (restarts), its peak RSS."""

    def __init__(self, host: Host, name: str, args: list[str]) -> None:
        self.host = host
        self.name = name
        self.args = args
        self.lives: list[LineProcess] = []
        self.peak_rss_kib = 0
        self.faulted = False

    @property
    def proc(self) -> LineProcess:
        return self.lives[-1]

    def start(self) -> None:
        self.lives.append(LineProcess(self.host, self.args))

    def alive(self) -> bool:
        return bool(self.lives) and self.proc.proc.poll() is None

    def sample_rss(self) -> None:
        """Fold this life's VmHWM (its peak resident set so far) into ``peak_rss_kib``."""
        if not self.alive():
            return
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_kib = max(self.peak_rss_kib, int(line.split()[1]))

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            self.proc.proc.send_signal(sig)

    def kill(self) -> None:
        self.sample_rss()
        if self.alive():
            self.proc.proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.proc.wait(20.0)

    def log_events(self, offset: float) -> list[dict[str, Any]]:
        """Every JSON log line of every life, with ``at`` in monotonic seconds."""
        out: list[dict[str, Any]] = []
        for life in self.lives:
            for line in list(life.lines):
                if not line.startswith("{"):
                    continue
                try:
                    rec = json.loads(line)
                    stamp = datetime.fromisoformat(rec["@timestamp"].replace("Z", "+00:00"))
                except (ValueError, KeyError):
                    continue
                rec["at"] = stamp.timestamp() - offset
                out.append(rec)
        return out


class WorkerProc:
    """``worker.py`` in a namespace: its JSON lines sorted by type, and a request proxy."""

    def __init__(self, host: Host, cfg: dict[str, Any]) -> None:
        self.name = str(cfg["name"])
        self.proc = host.popen(
            [sys.executable, str(WORKER), json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            bufsize=1,
        )
        self.records: dict[str, list[dict[str, Any]]] = {}
        self.other: list[str] = []  # anything not JSON: tracebacks
        self._replies: dict[int, dict[str, Any]] = {}
        self._invoked: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._ids = iter(range(1, 1 << 62))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                rec = json.loads(line)
            except ValueError:
                self.other.append(line.rstrip("\n"))
                continue
            with self._cond:
                kind = rec.get("t")
                if kind == "reply":
                    self._replies[int(rec["id"])] = rec
                elif kind == "inv":  # kept only until its "op" line arrives
                    self._invoked[str(rec["id"])] = rec
                else:
                    if kind == "op":
                        self._invoked.pop(str(rec["id"]), None)
                    self.records.setdefault(str(kind), []).append(rec)
                self._cond.notify_all()

    def of(self, kind: str) -> list[dict[str, Any]]:
        """The lines of type ``kind``; for ``inv``, only those with no ``op`` line yet."""
        with self._cond:
            if kind == "inv":
                return list(self._invoked.values())
            return list(self.records.get(kind, ()))

    def last(self, kind: str) -> dict[str, Any] | None:
        with self._cond:
            got = self.records.get(kind)
            return got[-1] if got else None

    def send(self, cmd: dict[str, Any]) -> bool:
        if self.proc.stdin is None or self.proc.poll() is not None:
            return False
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):
            return False
        return True

    def request(
        self, method: str, path: str, body: str | None = None, timeout_s: float = 5.0
    ) -> tuple[int, str]:
        """The agent's answer (status 0: no answer) to one request, through the worker."""
        req = next(self._ids)
        if not self.send(
            {"id": req, "method": method, "path": path, "body": body, "timeout_s": timeout_s}
        ):
            return 0, "worker gone"
        deadline = time.monotonic() + timeout_s + 5.0
        with self._cond:
            while req not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0:
                    return 0, "no reply from the worker"
                self._cond.wait(min(left, 0.5))
            rec = self._replies.pop(req)
        return int(rec["status"]), str(rec["body"])

    def wait_for(self, kind: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while kind not in self.records:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return kind in self.records
                self._cond.wait(min(left, 0.5))
        return True

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        self.send({"stop": True})
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False
        self._reader.join(5.0)
        return True

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(20.0)


@attrs.define
class BedConfig:
    """The bed's shape and the workers' settings.  ``lease_s`` must stay below
    ``lock_delay_s``: that gap is what keeps lock holders apart (``checkers.check_locks``)."""

    servers: int = 3
    profile: str = "lan"
    epoch_s: float = 20.0
    keys: int = 3
    kv_gap_s: float = 0.05
    lock_delay_s: float = 3.0
    lease_s: float = 2.0
    observe_s: float = 0.5
    lock_hosts: tuple[int, ...] = (1, 3, 4)
    max_lifetime_s: float = 3600.0

    def __attrs_post_init__(self) -> None:
        if not 0 < self.lease_s < self.lock_delay_s:
            raise ValueError(
                f"need 0 < lease_s < lock_delay_s, got {self.lease_s}, {self.lock_delay_s}"
            )


class Bed:
    """Agents and workers on ``hosts``; see the module docstring."""

    def __init__(self, hosts: Sequence[Host], workdir: Path, seed: int, cfg: BedConfig) -> None:
        self.hosts = list(hosts)
        self.names = [f"h{i}" for i in range(len(hosts))]
        self.workdir = workdir
        self.cfg = cfg
        self.seed = seed
        self.rng = random.Random(seed)
        self.key = generate_key()
        self.offset = wall_to_monotonic_offset()
        self.t0 = time.monotonic()
        self.agents = [self._agent(i) for i in range(len(hosts))]
        self.workers: list[WorkerProc] = []

    # ------------------------------------------------------------------ processes

    def _agent(self, i: int) -> Agent:
        host, name = self.hosts[i], self.names[i]
        conf = self.workdir / name / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        service = {"service": {"name": SERVICE, "id": f"{SERVICE}-{name}", "port": 9000 + i}}
        (conf / "service.json").write_text(json.dumps(service))
        args = [sys.executable, "-m", "meshlite.cli", "agent", "--name", name]
        args += ["--bind", f"{host.address}:{GOSSIP_PORT}", "--http", HTTP]
        args += ["--key", self.key, "--profile", self.cfg.profile, "--log-json"]
        args += ["--config-dir", str(conf)]
        if i < self.cfg.servers:
            data = self.workdir / name / "data"
            data.mkdir(parents=True, exist_ok=True)
            args += ["--server", "--bootstrap-expect", str(self.cfg.servers)]
            args += ["--data-dir", str(data)]
        for other in self.hosts:
            if other is not host:
                args += ["--join", f"{other.address}:{GOSSIP_PORT}"]
        return Agent(host, name, args)

    def start(self, timeout_s: float = 60.0) -> float:
        """Start every agent and worker; wait until the mesh is whole and has a leader,
        then start the workloads.  Returns the seconds it took; raises ``AssertionError``
        with the logs if the mesh is not whole within ``timeout_s``."""
        began = time.monotonic()
        for agent in self.agents:
            agent.start()
        for i, host in enumerate(self.hosts):
            worker_cfg = {
                "name": self.names[i],
                "http": HTTP,
                "t0": self.t0,
                "epoch_s": self.cfg.epoch_s,
                "keys": self.cfg.keys,
                "kv_gap_s": self.cfg.kv_gap_s,
                "lock_delay_s": self.cfg.lock_delay_s,
                "lease_s": self.cfg.lease_s,
                "observe_s": self.cfg.observe_s,
                "service": SERVICE,
                "seed": self.rng.randrange(1 << 30),
                "max_lifetime_s": self.cfg.max_lifetime_s,
                "observe": True,
                "kv": True,
                "lock": i in self.cfg.lock_hosts,
            }
            self.workers.append(WorkerProc(host, worker_cfg))
        deadline = began + timeout_s
        while not self.converged(began) or self.leader() is None:
            self._assert_running()
            if time.monotonic() > deadline:
                raise AssertionError(f"the bed never came up:\n{self.tails()}")
            time.sleep(0.5)
        for worker in self.workers:  # the workloads start on a whole mesh
            worker.send({"start": True})
        return time.monotonic() - began

    def _assert_running(self) -> None:
        for agent in self.agents:
            if not agent.alive() and not agent.faulted:
                code = agent.proc.proc.poll()
                raise AssertionError(f"agent {agent.name} exited ({code}):\n{self.tails()}")

    def tails(self, lines: int = 15) -> str:
        parts = []
        for agent in self.agents:
            tail = "\n".join(agent.proc.lines[-lines:]) if agent.lives else ""
            parts.append(f"--- {agent.name}\n{tail}")
        for worker in self.workers:
            if worker.other:
                parts.append(f"--- worker {worker.name}\n" + "\n".join(worker.other[-lines:]))
        return "\n".join(parts)

    # ------------------------------------------------------------------ queries

    def index_of(self, name: str) -> int:
        return self.names.index(name)

    def ask(
        self, method: str, path: str, *, prefer: Sequence[int] = (), timeout_s: float = 5.0
    ) -> tuple[int, str]:
        """Ask the agents of ``prefer`` (then the others) until one answers."""
        order = list(prefer) + [i for i in range(len(self.hosts)) if i not in prefer]
        status, body = 0, "no host asked"
        for i in order:
            if not self.agents[i].alive() or self.agents[i].faulted:
                continue
            status, body = self.workers[i].request(method, path, timeout_s=timeout_s)
            if status:
                return status, body
        return status, body

    def leader(self, among: Sequence[int] = ()) -> int | None:
        """The host index of the Raft leader, as the first answering agent reports it."""
        status, body = self.ask("GET", "/v1/status/leader", prefer=among, timeout_s=3.0)
        if status != 200:
            return None
        address = json.loads(body).rpartition(":")[0]
        for i, host in enumerate(self.hosts):
            if host.address == address:
                return i
        return None

    def lock_holder(self) -> int | None:
        """The host whose session holds ``chaos-lock`` now, if any."""
        status, body = self.ask("GET", "/v1/kv/chaos-lock", timeout_s=3.0)
        if status != 200:
            return None
        session = json.loads(body)[0].get("Session")
        if not session:
            return None
        status, body = self.ask("GET", f"/v1/session/info/{session}", timeout_s=3.0)
        if status != 200 or not json.loads(body):
            return None
        node = json.loads(body)[0].get("Node")
        return self.names.index(node) if node in self.names else None

    def converged(self, since: float) -> bool:
        """Every observer's latest poll, made after ``since``, shows the whole mesh."""
        return converged_at(self.observations(), self.names, since) is not None

    def observations(self) -> list[Observation]:
        out = []
        for worker in self.workers:
            for rec in worker.of("obs"):
                svc = rec.get("svc")
                out.append(
                    Observation(
                        str(rec["who"]),
                        float(rec["call"]),
                        float(rec["ret"]),
                        rec.get("members"),
                        None if svc is None else tuple(svc),
                    )
                )
        return out

    def deaths(self) -> list[Death]:
        out = []
        for agent in self.agents:
            for rec in agent.log_events(self.offset):
                if rec.get("event") == "dead":
                    out.append(Death(agent.name, str(rec.get("member")), float(rec["at"])))
        return sorted(out, key=lambda d: d.at)

    def sample_rss(self) -> None:
        for agent in self.agents:
            agent.sample_rss()

    def final_reads(self, prefix: str = "chaos/") -> tuple[float, float, dict[str, str]] | None:
        """Every key under ``prefix`` by one ``?consistent`` read: (call, return, values)."""
        for _ in range(10):
            call = time.monotonic()
            status, body = self.ask("GET", f"/v1/kv/{prefix}?recurse&consistent", timeout_s=15.0)
            ret = time.monotonic()
            if status == 200:
                values = {
                    e["Key"]: ("" if e["Value"] is None else base64.b64decode(e["Value"]).decode())
                    for e in json.loads(body)
                }
                return call, ret, values
            if status == 404:
                return call, ret, {}
            time.sleep(1.0)
        return None

    # ------------------------------------------------------------------ shutdown

    def quiesce(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Stop the workloads (observers and proxies keep running); True once every
        worker has reported its in-flight operations."""
        for worker in self.workers:
            worker.send({"quiet": True})
        return all(worker.wait_for("quiet", timeout_s) for worker in self.workers)

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.send({"stop": True})
        for worker in self.workers:
            if not worker.stop():
                worker.kill()

    def close(self) -> None:
        self.sample_rss()
        for worker in self.workers:
            worker.kill()
        for agent in self.agents:
            with contextlib.suppress(ProcessLookupError):
                agent.signal(signal.SIGCONT)
            agent.kill()


def converged_at(obs: Sequence[Observation], names: Sequence[str], since: float) -> float | None:
    """The first poll return time at which every host's latest poll started after
    ``since`` and showed every member alive (Serf status 1) and every ``chaos``
    instance passing; None if that never happened."""
    want = set(names)
    latest: dict[str, Observation] = {}
    for o in sorted((o for o in obs if o.call >= since), key=lambda o: o.ret):
        latest[o.who] = o
        if set(latest) == want and all(_whole(v, want) for v in latest.values()):
            return o.ret
    return None


def whole_since(
    obs: Sequence[Observation], names: Sequence[str], since: float, until: float
) -> float | None:
    """When the mesh became whole for good within ``[since, until]``: the return time of
    the first poll, on each host, after its last poll that did not see the whole mesh;
    the largest over hosts.  None if some host's last poll before ``until`` was not
    whole (or it made none): the mesh was not whole at ``until``."""
    want = set(names)
    settled = since
    for who in want:
        mine = sorted((o for o in obs if o.who == who and since <= o.call <= until), key=_ret)
        if not mine or not _whole(mine[-1], want):
            return None
        broken = [i for i, o in enumerate(mine) if not _whole(o, want)]
        settled = max(settled, mine[broken[-1] + 1 if broken else 0].ret)
    return settled


def last_broken(
    obs: Sequence[Observation], names: Sequence[str], since: float, until: float
) -> dict[str, Any] | None:
    """The latest poll in ``[since, until]`` that did not see the whole mesh: who made it,
    when, and what it lacked (for the report on a slow reconvergence)."""
    want = set(names)
    broken = [o for o in obs if since <= o.call <= until and not _whole(o, want)]
    if not broken:
        return None
    o = max(broken, key=_ret)
    members = o.members or {}
    return {
        "observer": o.who,
        "at": round(o.ret, 3),
        "not_alive": sorted(n for n in want if members.get(n) != 1),
        "not_passing": sorted(want - set(o.svc or ())),
    }


def _ret(o: Observation) -> float:
    return o.ret


def _whole(o: Observation, want: set[str]) -> bool:
    if o.members is None or o.svc is None:
        return False
    alive = {n for n, status in o.members.items() if status == 1}
    return alive >= want and set(o.svc) >= want
