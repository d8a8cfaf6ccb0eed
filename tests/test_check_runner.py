"""The check runner (meshlite/_check_runner.py) against real things on both anyio backends:
an HTTP server and a TCP listener on loopback, real scripts, real sync/async callables."""

from __future__ import annotations

import http.server
import itertools
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from meshlite._check_runner import CheckRunner
from meshlite._core.checkstate import OUTPUT_MAX_BYTES
from meshlite._health import (
    CallableCheck,
    HTTPCheck,
    ScriptCheck,
    Status,
    TCPCheck,
    TTLCheck,
)
from meshlite.errors import ConfigError, NotRunningError

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

P, W, C = Status.PASSING, Status.WARNING, Status.CRITICAL
DEADLINE_S = 5.0
PY = sys.executable


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Recorder:
    """The runner's callbacks, recorded."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, Status, str]] = []
        self.deregistered: list[str] = []
        self.outputs: list[str] = []  # check ids whose output alone changed

    def on_change(self, check_id: str, status: Status, output: str) -> None:
        self.changes.append((check_id, status, output))

    def on_deregister(self, check_id: str) -> None:
        self.deregistered.append(check_id)

    def on_output(self, check_id: str) -> None:
        self.outputs.append(check_id)

    def statuses(self, check_id: str) -> list[Status]:
        return [s for c, s, _ in self.changes if c == check_id]


@asynccontextmanager
async def running(rec: Recorder | None = None) -> AsyncIterator[CheckRunner]:
    rec = rec or Recorder()
    async with CheckRunner(rec.on_change, rec.on_deregister, on_output=rec.on_output) as runner:
        yield runner


async def eventually(predicate: Callable[[], bool], timeout_s: float = DEADLINE_S) -> None:
    with anyio.fail_after(timeout_s):
        while not predicate():
            await anyio.sleep(0.01)


async def settle(runner: CheckRunner, check_id: str, status: Status) -> str:
    """Wait for a *result* with ``status`` (a check that has not run has no output)."""
    await eventually(
        lambda: runner.state(check_id)[0] is status and runner.state(check_id)[1] != ""
    )
    return runner.state(check_id)[1]


# ---------------------------------------------------------------------------- servers


class _Handler(http.server.BaseHTTPRequestHandler):
    release: threading.Event

    def do_GET(self) -> None:
        routes: dict[str, tuple[int, bytes]] = {
            "/ok": (200, b"fine"),
            "/busy": (429, b"slow down"),
            "/fail": (500, b"boom"),
            "/big": (200, b"y" * 100_000),
        }
        if self.path == "/slow":
            self.release.wait(10)
            routes["/slow"] = (200, b"late")
        if self.path == "/auth":
            ok = self.headers.get("X-Token") == "s3cret"
            routes["/auth"] = (200, b"welcome") if ok else (403, b"no")
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        code, body = routes.get(self.path, (404, b"?"))
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        if self.path == "/echo":  # the request body back, as the check's output shows it
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(201 if self.path == "/ok" else 405)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_url() -> Iterator[str]:
    release = threading.Event()
    handler = type("Handler", (_Handler,), {"release": release})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no CA signed, and its key: (cert, key) files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshlite test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def https_url(tmp_path: Path) -> Iterator[str]:
    """The same routes over TLS, with a self-signed certificate."""
    import ssl

    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    handler = type("Handler", (_Handler,), {"release": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    # No handshake in accept(): it would run in serve_forever's thread, where one client
    # stalled mid-handshake blocks the loop and so shutdown() (seen in a full run under
    # load). The handler's own thread shakes hands on its first read instead.
    server.socket = context.wrap_socket(
        server.socket, server_side=True, do_handshake_on_connect=False
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def tcp_ports() -> Iterator[tuple[int, int]]:
    """(a listening port, a port where nothing listens)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    closed = socket.create_server(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()
    try:
        yield listener.getsockname()[1], dead_port
    finally:
        listener.close()


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at teardown, so no hung test callable outlives its test."""
    event = threading.Event()
    yield event
    event.set()


# ---------------------------------------------------------------------------- HTTP / TCP


async def test_http_status_codes_map_to_consul_statuses(http_url: str) -> None:
    rec = Recorder()
    async with running(rec) as runner:
        for path in ("ok", "busy", "fail", "moved"):
            runner.add(path, HTTPCheck(f"{http_url}/{path}", interval_s=0.1, timeout_s=2))
        assert await settle(runner, "ok", P) == f"HTTP GET {http_url}/ok: 200 OK Output: fine"
        out = await settle(runner, "busy", W)
        assert out == f"HTTP GET {http_url}/busy: 429 Too Many Requests Output: slow down"
        assert "500 Internal Server Error Output: boom" in await settle(runner, "fail", C)
        assert "200 OK Output: fine" in await settle(runner, "moved", P)
    assert ("ok", P, f"HTTP GET {http_url}/ok: 200 OK Output: fine") in rec.changes
    assert rec.statuses("fail") == []  # started critical and stayed so: no change to report
    assert "fail" in rec.outputs  # ... but its output did change


async def test_http_method_headers_and_body_cap(http_url: str) -> None:
    async with running() as runner:
        runner.add("post", HTTPCheck(f"{http_url}/ok", method="post", interval_s=0.1))
        runner.add("auth", HTTPCheck(f"{http_url}/auth", headers={"x-token": "s3cret"}))
        runner.add("noauth", HTTPCheck(f"{http_url}/auth", initial_status="passing"))
        runner.add("big", HTTPCheck(f"{http_url}/big", interval_s=0.1))
        assert "201 Created" in await settle(runner, "post", P)
        assert "welcome" in await settle(runner, "auth", P)
        assert "403 Forbidden" in await settle(runner, "noauth", C)
        out = await settle(runner, "big", P)
        assert len(out.encode()) <= OUTPUT_MAX_BYTES
        assert out.startswith(f"HTTP GET {http_url}/big: 200 OK Output: yyyy")


async def test_http_body_is_sent(http_url: str) -> None:
    async with running() as runner:
        check = HTTPCheck(f"{http_url}/echo", method="POST", body='{"ping": 1}', interval_s=0.1)
        runner.add("echo", check)
        out = await settle(runner, "echo", P)
        assert out == f'HTTP POST {http_url}/echo: 200 OK Output: {{"ping": 1}}'


async def test_tls_skip_verify_accepts_an_unverified_certificate(https_url: str) -> None:
    async with running() as runner:
        runner.add("strict", HTTPCheck(f"{https_url}/ok", interval_s=0.1))
        runner.add("lenient", HTTPCheck(f"{https_url}/ok", interval_s=0.1, tls_skip_verify=True))
        assert await settle(runner, "lenient", P) == f"HTTP GET {https_url}/ok: 200 OK Output: fine"
        # The certificate is refused (asyncio's message names it; trio's is empty).
        out = await settle(runner, "strict", C)
        assert out.startswith(f"HTTP GET {https_url}/ok: ConnectError"), out


async def test_http_timeout_is_critical_and_stalls_nothing(http_url: str) -> None:
    runs = []
    async with running() as runner:
        runner.add("slow", HTTPCheck(f"{http_url}/slow", interval_s=0.1, timeout_s=0.3))
        runner.add("tick", CallableCheck(lambda: runs.append(1), interval_s=0.05))
        start = anyio.current_time()
        out = await settle(runner, "slow", C)
        assert out == f"HTTP GET {http_url}/slow: timed out after 0.3s"
        assert anyio.current_time() - start < 2.0
        await eventually(lambda: len(runs) >= 5)


async def test_tcp_connect(tcp_ports: tuple[int, int]) -> None:
    live, dead = tcp_ports
    async with running() as runner:
        runner.add("up", TCPCheck(f"127.0.0.1:{live}", interval_s=0.1))
        runner.add("down", TCPCheck(f"127.0.0.1:{dead}", interval_s=0.1, initial_status="passing"))
        assert await settle(runner, "up", P) == f"TCP connect 127.0.0.1:{live}: Success"
        assert (await settle(runner, "down", C)).startswith(f"TCP connect 127.0.0.1:{dead}: ")


# ---------------------------------------------------------------------------- scripts


def script(code: str, **kwargs: object) -> ScriptCheck:
    return ScriptCheck([PY, "-c", code], **{"interval_s": 0.1, "timeout_s": 5.0, **kwargs})  # type: ignore[arg-type]


async def test_script_exit_codes_and_captured_output() -> None:
    both = "import sys; print('to out', flush=True); print('to err', file=sys.stderr); "
    async with running() as runner:
        runner.add("zero", script(both + "sys.exit(0)"))
        runner.add("one", script(both + "sys.exit(1)"))
        runner.add("two", script(both + "sys.exit(2)"))
        runner.add("silent", script("import sys; sys.exit(3)", initial_status="passing"))
        assert await settle(runner, "zero", P) == "to out\nto err\n"
        assert await settle(runner, "one", W) == "to out\nto err\n"
        assert await settle(runner, "two", C) == "to out\nto err\n"
        assert await settle(runner, "silent", C) == "exit status 3"


async def test_script_output_keeps_the_last_4k() -> None:
    code = "import sys; sys.stdout.write('a' * 100000 + 'THE END'); sys.exit(2)"
    async with running() as runner:
        runner.add("chatty", script(code, initial_status="passing"))
        out = await settle(runner, "chatty", C)
    assert len(out.encode()) <= OUTPUT_MAX_BYTES
    assert out.startswith("Captured ") and "of 100007 bytes" in out
    assert out.endswith("aaaTHE END")


async def test_script_killed_at_timeout_with_its_children() -> None:
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('pids', child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    async with running() as runner:
        start = anyio.current_time()
        runner.add("hang", script(code, timeout_s=0.5, interval_s=30))
        out = await settle(runner, "hang", C)
        assert anyio.current_time() - start < 3.0
    assert out.startswith("Timed out (0.5s) running check\n\npids ")
    child = int(out.split()[-1])
    await eventually(lambda: not _alive(child))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (killed, parent gone, not reaped yet by init) counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_removing_a_check_kills_its_running_script(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    async with running() as runner:
        runner.add("long", script(code, timeout_s=30))
        await eventually(lambda: pid_file.exists() and pid_file.read_text() != "")
        pid = int(pid_file.read_text())
        assert _alive(pid)
        runner.remove("long")
        await eventually(lambda: not _alive(pid))


async def test_script_that_cannot_start_is_critical() -> None:
    async with running() as runner:
        runner.add("missing", ScriptCheck(["/nonexistent/check-me"], initial_status="passing"))
        out = await settle(runner, "missing", C)
    assert out.startswith("cannot run '/nonexistent/check-me': FileNotFoundError")


# ---------------------------------------------------------------------------- callables


def fails() -> bool:
    raise RuntimeError("db unreachable")


async def async_warns() -> Status:
    await anyio.lowlevel.checkpoint()
    return Status.WARNING


async def async_fails() -> None:
    raise ValueError("bad")


async def test_callable_results() -> None:
    cases: dict[str, tuple[Callable[[], object], Status, str]] = {
        "true": (lambda: True, P, "<lambda>() returned True"),
        "none": (lambda: None, P, "<lambda>() returned None"),
        "false": (lambda: False, C, "<lambda>() returned False"),
        "warn": (lambda: Status.WARNING, W, "<lambda>() returned <Status.WARNING: 'warning'>"),
        "detail": (lambda: (False, "replica lag 30s"), C, "replica lag 30s"),
        "raises": (fails, C, "fails() raised RuntimeError: db unreachable"),
        "odd": (lambda: 42, C, "<lambda>() returned 42; expected True, False, None or a"),
        "async": (async_warns, W, "async_warns() returned <Status.WARNING: 'warning'>"),
        "async-raises": (async_fails, C, "async_fails() raised ValueError: bad"),
    }
    async with running() as runner:
        for name, (fn, _, _) in cases.items():
            flip = P if cases[name][1] is C else C
            runner.add(name, CallableCheck(fn, interval_s=0.1, initial_status=flip))
        for name, (_, status, output) in cases.items():
            assert (await settle(runner, name, status)).startswith(output), name


async def test_hanging_sync_callable_delays_nothing_and_never_overlaps(
    release: threading.Event,
) -> None:
    hang_runs: list[float] = []
    ticks: list[float] = []

    def hang() -> bool:
        hang_runs.append(time.monotonic())
        release.wait(30)
        return True

    async with running() as runner:
        runner.add("hang", CallableCheck(hang, interval_s=0.05, timeout_s=0.2))
        runner.add("tick", CallableCheck(lambda: ticks.append(1), interval_s=0.05))
        out = await settle(runner, "hang", C)
        assert out == "hang() timed out after 0.2s"
        await eventually(lambda: "still running" in runner.state("hang")[1])
        n = len(ticks)
        await eventually(lambda: len(ticks) >= n + 5, timeout_s=2.0)
        assert len(hang_runs) == 1  # never started again while it hangs
        release.set()
        await settle(runner, "hang", P)
        assert len(hang_runs) >= 2


async def test_hanging_async_callable_is_cancelled_each_time() -> None:
    starts: list[int] = []

    async def stuck() -> bool:
        starts.append(1)
        await anyio.sleep(60)
        return True

    async with running() as runner:
        runner.add("stuck", CallableCheck(stuck, interval_s=0.05, timeout_s=0.1))
        assert await settle(runner, "stuck", C) == "stuck() timed out after 0.1s"
        await eventually(lambda: len(starts) >= 3)


async def test_runs_every_interval_after_a_prompt_first_run() -> None:
    runs: list[float] = []
    first: list[float] = []
    async with running() as runner:
        start = time.monotonic()
        runner.add("slow", CallableCheck(lambda: first.append(time.monotonic()), interval_s=30))
        runner.add("c", CallableCheck(lambda: runs.append(time.monotonic()), interval_s=0.2))
        await eventually(lambda: len(runs) >= 4 and len(first) == 1)
    # Consul would stagger the first run over the whole 30 s interval; we run it at once.
    assert first[0] - start < 1.0
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert all(g >= 0.19 for g in gaps), gaps


# ---------------------------------------------------------------------------- thresholds


async def test_thresholds_damp_flaps() -> None:
    rec = Recorder()
    results = [True, False, False, True, False, False, False, True, True]
    runs: list[int] = []

    def probe() -> tuple[bool, str]:
        runs.append(1)
        i = len(runs) - 1
        return (results[i] if i < len(results) else True), f"run {i}"

    spec = CallableCheck(
        probe, interval_s=0.02, success_before_passing=2, failures_before_critical=3
    )
    async with running(rec) as runner:
        runner.add("db", spec)
        await eventually(lambda: len(runs) > len(results))
    # The first result applies at once; then 3 failures in a row for critical, 2 successes
    # in a row for passing; shorter streaks change nothing.
    assert rec.changes == [("db", P, "run 0"), ("db", C, "run 6"), ("db", P, "run 8")]


# ---------------------------------------------------------------------------- TTL


async def test_ttl_updates_and_expiry() -> None:
    rec = Recorder()
    async with running(rec) as runner:
        runner.add("ttl", TTLCheck(ttl_s=0.3))
        assert runner.state("ttl") == (C, "")
        runner.ttl_update("ttl", P, "all good")
        assert runner.state("ttl") == (P, "all good")
        runner.ttl_update("ttl", W, "degraded")
        runner.ttl_update("ttl", W, "still degraded")  # same status: only the output moved
        runner.ttl_update("ttl", W, "still degraded")  # nothing moved: nothing reported
        runner.ttl_update("ttl", C, "broken")
        runner.ttl_update("ttl", P, "fixed")
        assert rec.statuses("ttl") == [P, W, C, P]
        assert rec.outputs == ["ttl"]
        for _ in range(3):  # keeping it fresh keeps it passing
            await anyio.sleep(0.05)
            runner.ttl_update("ttl", P, "fixed")
            start = anyio.current_time()
        assert runner.state("ttl")[0] is P
        out = await settle(runner, "ttl", C)
        assert out == "TTL expired (last output before timeout follows): fixed"
        assert anyio.current_time() - start >= 0.3
        assert rec.changes[-1] == ("ttl", C, out)


async def test_ttl_misuse_is_a_config_error() -> None:
    async with running() as runner:
        runner.add("cb", CallableCheck(lambda: True))
        with pytest.raises(ConfigError, match="not a TTL check"):
            runner.ttl_update("cb", P)
        with pytest.raises(ConfigError, match="no check with id 'nope'"):
            runner.ttl_update("nope", P)


# ---------------------------------------------------------------------------- deregister


async def test_deregister_after_critical_for_long_enough() -> None:
    rec = Recorder()
    runs: list[int] = []

    def down() -> bool:
        runs.append(1)
        return False

    spec = CallableCheck(down, interval_s=0.05, deregister_critical_after_s=0.3)
    async with running(rec) as runner:
        start = anyio.current_time()
        runner.add("dying", spec)
        runner.add("ttl", TTLCheck(ttl_s=0.1, deregister_critical_after_s=0.2))
        runner.ttl_update("ttl", P)
        await eventually(lambda: set(rec.deregistered) == {"dying", "ttl"})
        assert anyio.current_time() - start >= 0.3
        frozen = len(runs)
        await anyio.sleep(0.2)
        assert len(runs) == frozen  # a check due for deregistration stops running
        assert rec.deregistered.count("dying") == 1
        assert runner.state("dying")[0] is C  # state stays until the owner removes it
        runner.remove("dying")
        assert "dying" not in runner.ids()


async def test_callbacks_may_remove_and_may_fail(caplog: pytest.LogCaptureFixture) -> None:
    runner: CheckRunner

    def on_change(check_id: str, status: Status, output: str) -> None:
        raise RuntimeError("publisher bug")

    def on_deregister(check_id: str) -> None:
        runner.remove(check_id)

    spec = CallableCheck(lambda: False, interval_s=0.05, deregister_critical_after_s=0.1)
    with caplog.at_level(logging.ERROR, logger="meshlite.checks"):
        async with CheckRunner(on_change, on_deregister) as runner:
            runner.add("flaky", CallableCheck(lambda: True, interval_s=0.05))
            runner.add("gone", spec)
            await eventually(lambda: runner.ids() == ["flaky"])
            await eventually(lambda: runner.state("flaky")[0] is P)
    assert "on_change callback failed for check flaky" in caplog.text


# ---------------------------------------------------------------------------- misuse


async def test_ids_remove_and_misuse() -> None:
    rec = Recorder()
    async with running(rec) as runner:
        runner.add("a", CallableCheck(lambda: True, interval_s=0.05))
        runner.add("b", TTLCheck(ttl_s=5))
        assert sorted(runner.ids()) == ["a", "b"]
        with pytest.raises(ConfigError, match="already running"):
            runner.add("a", TTLCheck(ttl_s=5))
        await settle(runner, "a", P)
        runner.remove("a")
        assert runner.ids() == ["b"]
        n = len(rec.changes)
        runner.add("a", CallableCheck(lambda: False, interval_s=0.05, initial_status="passing"))
        await settle(runner, "a", C)  # the same id again is a new check
        assert rec.changes[n:] == [("a", C, "<lambda>() returned False")]
        with pytest.raises(ConfigError, match="no check with id"):
            runner.remove("zzz")
        with pytest.raises(ConfigError, match="no check with id"):
            runner.state("zzz")
    with pytest.raises(NotRunningError):
        runner.add("late", TTLCheck(ttl_s=1))


HUNG_CHECK_PROGRAM = textwrap.dedent("""
    import sys, time, anyio
    from meshlite._check_runner import CheckRunner
    from meshlite._health import CallableCheck

    async def main():
        async with CheckRunner(lambda *a: None, lambda c: None) as runner:
            spec = CallableCheck(lambda: time.sleep(120), interval_s=0.05, timeout_s=0.1)
            runner.add("hang", spec)
            with anyio.fail_after(10):
                while "timed out" not in runner.state("hang")[1]:
                    await anyio.sleep(0.01)

    anyio.run(main, backend=sys.argv[1])
    print("left the runner")
""")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_hung_sync_check_does_not_keep_the_process_alive(backend: str) -> None:
    # anyio's own worker threads are not daemonic on asyncio: a check hung in one would
    # hold the interpreter at exit for the full 120 s.
    start = time.monotonic()
    out = subprocess.run(
        [PY, "-c", HUNG_CHECK_PROGRAM, backend],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "left the runner"
    assert time.monotonic() - start < 30
