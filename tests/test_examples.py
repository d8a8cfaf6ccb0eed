"""The examples run as their docstrings say: real processes, real HTTP, real mesh."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from meshlite.testing import free_port

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_flask_service_is_discovered_and_called_by_the_client() -> None:
    mesh_port, http_port = free_port(), free_port()
    env = {**os.environ, "MESHLITE_BIND": f"127.0.0.1:{mesh_port}", "MESHLITE_NAME": "flask-1"}
    service = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "flask_service.py"), "--port", str(http_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the HTTP port opens once Flask runs
            try:
                socket.create_connection(("127.0.0.1", http_port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        client = subprocess.run(
            [sys.executable, str(EXAMPLES / "discover_client.py"), "--join", env["MESHLITE_BIND"]],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("MESHLITE_")},
        )
        assert client.returncode == 0, client.stderr
        assert f"flask-1 127.0.0.1:{http_port} passing" in client.stdout
        assert client.stdout.count("hello from") == 3
    finally:
        service.terminate()
        service.wait(timeout=20)


def test_leader_election_hands_over_after_a_crash() -> None:
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "leader_election.py")],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    first = next(line.split(":")[0] for line in lines if line.endswith("I am the leader"))
    assert f"the key names the leader: {first}" in lines
    new = next(line.split(": ")[1] for line in lines if line.startswith("new leader: "))
    assert new != first and f"{new}: I am the leader" in lines
