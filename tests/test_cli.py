"""The real ``meshlite`` command, run as subprocesses on loopback.

Each agent's ``--log-json`` stdout is read by a thread into a list of dicts; the tests
wait (bounded) for events in those logs.  Every child is killed in ``finally``.
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

DEADLINE_S = 60.0
SCRIPT = Path(sys.executable).with_name("meshlite")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "meshlite.cli"]


def run(*argv: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *argv], capture_output=True, text=True, timeout=timeout_s, check=False
    )


def keygen() -> str:
    return run("keygen").stdout.strip()


def assert_one_error_line(proc: subprocess.CompletedProcess[str], code: int, expected: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("meshlite: error: "), lines[0]
    assert expected in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stdout == ""


class Agent:
    """A ``meshlite agent --log-json`` child whose log lines are collected as dicts."""

    def __init__(self, *argv: str) -> None:
        self.proc = subprocess.Popen(
            [*COMMAND, "agent", "--log-json", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self.changed:
                self.lines.append(json.loads(raw))
                self.changed.notify_all()

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], what: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        with self.changed:
            while not predicate(self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    pytest.fail(f"{what}: not seen within {DEADLINE_S}s; {self.summary()}")
                self.changed.wait(min(left, 0.5))

    def summary(self) -> str:
        """The log in short, for failure messages: ``@message member`` per line."""
        args = " ".join(str(a) for a in self.proc.args[len(COMMAND) :])
        lines = [
            f"{x['@timestamp'][11:]} {x['@message']} {x.get('member', '')}" for x in self.lines
        ]
        return f"exit={self.proc.poll()} ({args}):\n  " + "\n  ".join(lines)

    def events(self, event: str) -> list[str]:
        with self.changed:
            return [x["member"] for x in self.lines if x.get("event") == event]

    def members_mentioned(self) -> set[str]:
        with self.changed:
            return {x["member"] for x in self.lines if "member" in x}

    def started(self) -> dict[str, Any]:
        self.wait_for(lambda ls: any(x.get("event") == "start" for x in ls), "start line")
        return next(x for x in self.lines if x.get("event") == "start")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=DEADLINE_S)
        self._reader.join(timeout=DEADLINE_S)


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    try:
        yield started
    finally:
        for agent in started:
            agent.kill()
        for agent in started:  # pytest shows this only when the test failed
            print(agent.summary())


# ------------------------------------------------------------------------------ keygen


def test_keygen_prints_a_fresh_32_byte_key() -> None:
    first, second = run("keygen"), run("keygen")
    assert first.returncode == 0
    assert first.stderr == ""
    assert len(base64.b64decode(first.stdout.strip(), validate=True)) == 32
    assert first.stdout != second.stdout


def test_version_and_no_command() -> None:
    proc = run("--version")
    assert (proc.returncode, proc.stdout.strip()) == (0, "meshlite 0.1.0.dev0")
    proc = run()
    assert proc.returncode == 2
    assert "keygen" in proc.stderr
    assert "agent" in proc.stderr


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("argv", "code", "expected"),
    [
        (["agent", "--bogus"], 2, "unrecognized arguments: --bogus"),
        (["agent", "--bind"], 2, "argument --bind: expected one argument"),
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
        (["agent", "--key", "not-a-key"], 1, "--key is not a usable key"),
        (["agent", "--key", base64.b64encode(b"short").decode()], 1, "5 bytes"),
        (["agent", "--profile", "wan"], 1, '--profile must be "lan" or "local", got "wan"'),
        (["agent", "--bind", "127.0.0.1:x"], 1, '--bind must be "host:port"'),
        (["agent", "--bind", "192.0.2.1:7946"], 1, "cannot bind 192.0.2.1:7946"),
        (["agent", "--name", ""], 1, "--name must be a non-empty string"),
    ],
)
def test_bad_command_lines_fail_with_one_line(argv: list[str], code: int, expected: str) -> None:
    assert_one_error_line(run(*argv), code, expected)


@pytest.mark.parametrize("kind", [socket.SOCK_DGRAM, socket.SOCK_STREAM])
def test_a_taken_port_fails_with_one_line(kind: socket.SocketKind) -> None:
    with socket.socket(socket.AF_INET, kind) as held:
        held.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            held.listen()
        port = held.getsockname()[1]
        proc = run("agent", "--bind", f"127.0.0.1:{port}")
    assert_one_error_line(proc, 1, f"cannot bind 127.0.0.1:{port}: Address already in use")


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "agent.toml",
            'bnid = "127.0.0.1:1"\n',
            'agent.toml: unknown setting "bnid" (did you mean "bind"?)',
        ),
        ("agent.toml", 'name = "a"\nbind = \n', "agent.toml:2:8: invalid TOML"),
        (
            "config.json",
            '{"bind": 42}',
            'config.json: setting "bind" must be a string "host:port", got 42',
        ),
        ("config.json", '{"name": "a",}', "config.json:1:14: invalid JSON"),
        (
            "config.json",
            '{"encrypt": "AAAA"}',
            'config.json: setting "encrypt" is not a usable key',
        ),
    ],
)
def test_config_file_errors_fail_with_one_line(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    (tmp_path / name).write_text(text)
    proc = run("agent", "--config-file", str(tmp_path / name))
    assert_one_error_line(proc, 1, expected)


def test_missing_config_file(tmp_path: Path) -> None:
    proc = run("agent", "--config-file", str(tmp_path / "absent.json"))
    assert_one_error_line(proc, 1, "absent.json: cannot read: No such file or directory")


# ------------------------------------------------------------------------------ running


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_agent_starts_from_a_config_file_and_stops_on_signal(
    tmp_path: Path, agents: list[Agent], sig: signal.Signals
) -> None:
    key = keygen()
    config = {"node_name": "solo", "bind_addr": "127.0.0.1", "ports": {"serf_lan": 0},
              "encrypt": key, "cluster": "ci", "profile": "local"}  # fmt: skip
    (tmp_path / "agent.json").write_text(json.dumps(config))
    agent = Agent("--config-file", str(tmp_path / "agent.json"))
    agents.append(agent)
    start = agent.started()
    host, _, port = start["address"].rpartition(":")
    assert (start["member"], host, start["cluster"], start["encryption"]) == (
        "solo", "127.0.0.1", "ci", "on",
    )  # fmt: skip
    assert int(port) > 0
    assert start["@timestamp"].endswith("Z")
    assert key not in json.dumps(agent.lines)
    agent.proc.send_signal(sig)
    assert agent.proc.wait(timeout=DEADLINE_S) == 0
    agent.kill()  # joins the reader
    assert [x.get("event") for x in agent.lines][-2:] == ["signal", "stop"]
    assert agent.proc.stderr is not None
    assert agent.proc.stderr.read() == ""


def test_text_log_format(agents: list[Agent]) -> None:
    proc = subprocess.Popen(
        [*COMMAND, "agent", "--name", "t", "--bind", "127.0.0.1:0", "--profile", "local"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE_S) == 0
    finally:
        proc.kill()
        proc.wait()
    started = next(line for line in lines if "agent started" in line)
    assert started[:24].endswith("Z")
    assert (
        " [INFO]  meshlite.agent: agent started: event=start member=t address=127.0.0.1:" in started
    )
    assert "encryption=off" in started


def test_six_agents_join_fail_leave_and_refuse_intruders(agents: list[Agent]) -> None:
    key, other_key = keygen(), keygen()
    common = ("--profile", "local", "--bind", "127.0.0.1:0")
    seed = Agent("--name", "agent-0", "--key", key, "--cluster", "ci", *common)
    agents.append(seed)
    seed_addr = seed.started()["address"]
    for i in range(1, 6):
        agents.append(
            Agent(
                "--name",
                f"agent-{i}",
                "--key",
                key,
                "--cluster",
                "ci",
                "--join",
                seed_addr,
                *common,
            )
        )
    intruders = [
        Agent(
            "--name",
            "wrong-key",
            "--key",
            other_key,
            "--cluster",
            "ci",
            "--join",
            seed_addr,
            *common,
        ),
        Agent(
            "--name",
            "wrong-label",
            "--key",
            key,
            "--cluster",
            "other",
            "--join",
            seed_addr,
            *common,
        ),
    ]
    agents.extend(intruders)
    peers = agents[:6]
    names = {f"agent-{i}" for i in range(6)}

    for i, agent in enumerate(peers):
        expected = names - {f"agent-{i}"}
        agent.wait_for(lambda _ls, a=agent, e=expected: set(a.events("join")) >= e, "5 joins")

    victim, leaver = peers[5], peers[4]
    victim.proc.send_signal(signal.SIGKILL)
    for agent in peers[:5]:
        agent.wait_for(lambda _ls, a=agent: "agent-5" in a.events("dead"), "agent-5 dead")

    leaver.proc.send_signal(signal.SIGTERM)
    assert leaver.proc.wait(timeout=DEADLINE_S) == 0
    for agent in peers[:4]:
        agent.wait_for(lambda _ls, a=agent: "agent-4" in a.events("left"), "agent-4 left")
        assert "agent-4" not in agent.events("dead")

    for agent in peers:
        assert not agent.members_mentioned() & {"wrong-key", "wrong-label"}
    for intruder in intruders:
        assert intruder.proc.poll() is None  # still running, still alone
        assert intruder.events("join") == []


def test_dev_mode_runs_a_fast_local_server_and_explicit_flags_still_win(
    agents: list[Agent],
) -> None:
    # --dev serves HTTP on 127.0.0.1:8500 and DNS on :8600: free ports here, so parallel runs
    # do not collide.
    free = ("--http", "127.0.0.1:0", "--dns", "127.0.0.1:0")
    agent = Agent("--dev", "--bind", "127.0.0.1:0", "--name", "dev-1", *free)
    agents.append(agent)
    start = agent.started()
    assert (start["member"], start["server"], start["profile"]) == ("dev-1", True, "local")
    assert start["address"].startswith("127.0.0.1:")
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=DEADLINE_S) == 0
    other = Agent("--dev", "--bind", "127.0.0.1:0", "--profile", "lan", "--no-server", *free)
    agents.append(other)
    start = other.started()
    assert (start["server"], start["profile"]) == (False, "lan")


def test_checks_from_a_config_file_are_registered_as_node_and_service_checks(
    tmp_path: Path, agents: list[Agent]
) -> None:
    config = {
        "node_name": "chk", "bind_addr": "127.0.0.1", "ports": {"serf_lan": 0, "http": 0},
        "profile": "local",
        "service": {"name": "web", "port": 80},
        "check": {"name": "disk", "ttl": "30s"},
        "checks": [{"id": "web-ttl", "name": "web ttl", "ttl": "30s", "service_id": "web"}],
    }  # fmt: skip
    (tmp_path / "agent.json").write_text(json.dumps(config))
    agent = Agent("--config-file", str(tmp_path / "agent.json"))
    agents.append(agent)
    agent.wait_for(lambda ls: len([x for x in ls if x.get("event") == "check"]) == 2, "checks")
    registered = {(x["id"], x["service_id"]) for x in agent.lines if x.get("event") == "check"}
    assert registered == {("disk", ""), ("web-ttl", "web")}
    http = agent.started()["http"]
    checks = httpx.get(f"http://{http}/v1/agent/checks", timeout=10).json()
    assert checks["disk"]["ServiceID"] == "" and checks["disk"]["Status"] == "critical"
    assert checks["web-ttl"]["ServiceID"] == "web"
    # The node check, critical until its TTL is passed, counts in the service's health.
    passing = httpx.get(f"http://{http}/v1/health/service/web?passing", timeout=10).json()
    assert passing == []
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=DEADLINE_S) == 0
