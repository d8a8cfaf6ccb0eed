"""Services across real processes on loopback: the Python API, a sidecar agent, an observer.

Three processes: an observer mesh (the seed) printing what ``discover()`` returns; a
Python process registering ``api`` with a callable check (a flag file) and an HTTP check
(a real HTTP server in this test); and ``meshlite agent --config-dir`` registering ``web``
from a Consul-shaped file with a TCP check (a real listener in this test).
"""

from __future__ import annotations

import http.server
import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from netns import LineProcess

HERE = Path(__file__).resolve().parent
DEADLINE_S = 20.0
PEER = [sys.executable, str(HERE / "service_peer.py")]
AGENT = [
    sys.executable,
    "-m",
    "meshlite.cli",
    "agent",
    "--bind",
    "127.0.0.1:0",
    "--profile",
    "local",
]


class _Here:
    """``LineProcess`` wants a host; this one runs commands in the test's own namespace."""

    def popen(self, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(list(args), text=True, **kwargs)


def spawn(args: Sequence[str]) -> LineProcess:
    return LineProcess(_Here(), args)  # type: ignore[arg-type]


def address_of(p: LineProcess) -> str:
    line = p.wait_for(lambda s: s.startswith("address "), DEADLINE_S)
    assert line is not None, p.output()
    return line.split()[1]


def sees(observer: LineProcess, service: str, want: list[list[object]]) -> None:
    """Wait until the observer's latest ``discover`` line for ``service`` is ``want``."""

    def latest_matches(_line: str) -> bool:
        mine = [s for s in observer.lines if s.startswith(f"discover {service} ")]
        return bool(mine) and json.loads(mine[-1].split(" ", 2)[2]) == want

    assert observer.wait_for(latest_matches, DEADLINE_S) is not None, observer.output()[-3000:]


@pytest.fixture
def http_health() -> Iterator[str]:
    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/health"
    server.shutdown()
    server.server_close()


def test_python_and_sidecar_services_are_discovered_and_follow_health(
    tmp_path: Path, http_health: str
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    tcp_port = listener.getsockname()[1]
    config_dir = tmp_path / "services"
    config_dir.mkdir()
    (config_dir / "web.json").write_text(
        json.dumps(
            {
                "service": {
                    "name": "web",
                    "port": 8081,
                    "check": {"tcp": f"127.0.0.1:{tcp_port}", "interval": "200ms", "timeout": "1s"},
                }
            }
        )
    )
    flag = tmp_path / "healthy"
    flag.touch()
    procs: list[LineProcess] = []
    try:
        observer = spawn(
            [sys.executable, str(HERE / "service_peer.py"), "observer", "-", "api,web"]
        )
        procs.append(observer)
        seed = address_of(observer)
        owner = spawn([*PEER, "py-owner", seed, "-", "--api", "9090", str(flag), http_health])
        procs.append(owner)
        sidecar = spawn(
            [*AGENT, "--name", "sidecar", "--join", seed, "--config-dir", str(config_dir)]
        )
        procs.append(sidecar)

        sees(observer, "api", [["py-owner", 9090, "passing"]])
        sees(observer, "web", [["sidecar", 8081, "passing"]])

        flag.unlink()  # the callable check fails: critical within interval + gossip
        sees(observer, "api", [["py-owner", 9090, "critical"]])
        flag.touch()
        sees(observer, "api", [["py-owner", 9090, "passing"]])

        listener.close()  # the TCP check's target goes away
        sees(observer, "web", [["sidecar", 8081, "critical"]])

        owner.proc.send_signal(signal.SIGKILL)  # no leave: SWIM must detect it
        sees(observer, "api", [])
        sees(observer, "web", [["sidecar", 8081, "critical"]])
    finally:
        listener.close()
        for p in procs:
            p.kill()
