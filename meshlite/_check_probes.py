"""One run of one check: how each kind is observed, as ``(Status, output)``.

Theory of operation
-------------------
Each probe follows its Consul counterpart in ``agent/checks/check.go`` and never raises:
whatever goes wrong becomes a critical result whose output says what happened.

* :class:`HTTPProbe` (``CheckHTTP``): 2xx passing, 429 (Too Many Requests) warning,
  anything else critical; no keep-alive, so every run tests a fresh connection; redirects
  followed; output ``"HTTP GET url: 200 OK Output: <body head>"``.  One ``httpx`` client
  per runner, made on first use (``import meshlite`` stays light).
* :class:`TCPProbe` (``CheckTCP``): a connection that opens in time is passing.
* :class:`ScriptProbe` (``CheckMonitor``): ``args`` without a shell, in a new session;
  exit 0 passing, 1 warning, else critical; stdout and stderr go to one pipe of which the
  last 4 KiB are kept (Consul's circular buffer: errors come last); at the timeout the
  whole process group is killed and reaped before the run ends, so two runs of one
  script never overlap.
* :class:`CallableProbe`: async callables are awaited under the timeout.  Sync ones run
  on :class:`SyncCaller` threads, which are *daemon* threads of our own: anyio's worker
  threads are not daemonic on asyncio, so one hung check would keep the process from
  exiting.  A run that times out is abandoned, not killed (Python cannot), and the check
  is not started again until it returns: each interval meanwhile counts as critical.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio
import anyio.abc

from meshlite._addr import format_hostport, parse_hostport
from meshlite._core.checkstate import OUTPUT_MAX_BYTES, cap_output
from meshlite._health import CallableCheck, HTTPCheck, ScriptCheck, Status, TCPCheck
from meshlite._serial_thread import loop_caller

if TYPE_CHECKING:
    import httpx

__all__ = ["CallableProbe", "HTTPProbe", "Observation", "ScriptProbe", "SyncCaller", "TCPProbe"]

Observation: TypeAlias = tuple[Status, str]

USER_AGENT = "meshlite health check"
# Threads running sync callables at once.  Checks are mostly I/O waits (a database ping);
# 16 lets a burst of them overlap without a 2-core host growing a large thread crowd.
# A run waits for a slot before its timeout starts, and a slot is freed at the timeout.
SYNC_CONCURRENCY = 16
# An idle thread exits after this long (anyio's WorkerThread.MAX_IDLE_TIME).
_IDLE_THREAD_EXIT_S = 10.0
# Room for "Captured N of M bytes" and "Timed out ... running check" before the kept tail.
_TAIL_RESERVE_BYTES = 128
# After SIGKILL a process exits at once; this only bounds a stuck (D-state) one.
_REAP_WAIT_S = 5.0


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------------------- callables


class _DaemonThreads:
    """A thread pool of daemon threads; a thread is added whenever none is idle."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = 0  # invariant: idle == threads waiting - jobs queued

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._jobs.put(job)
                return
        threading.Thread(target=self._work, args=(job,), name="meshlite-check", daemon=True).start()

    def _work(self, job: Callable[[], None]) -> None:
        while True:
            job()
            with self._lock:
                self._idle += 1
            try:
                job = self._jobs.get(timeout=_IDLE_THREAD_EXIT_S)
            except queue.Empty:
                with self._lock:
                    try:
                        job = self._jobs.get_nowait()  # submitted just as we timed out
                    except queue.Empty:
                        self._idle -= 1
                        return


class RunFlag:
    """Set (from the worker thread) when a sync run has returned; cheaper than an Event."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False


class SyncCaller:
    """Runs sync callables on daemon threads, at most ``concurrency`` at once."""

    def __init__(self, concurrency: int = SYNC_CONCURRENCY) -> None:
        self._threads = _DaemonThreads()
        self._concurrency = concurrency
        self._limiter: anyio.CapacityLimiter | None = None

    async def call(
        self, fn: Callable[[], Any], timeout_s: float, finished: RunFlag
    ) -> tuple[bool, Any] | None:
        """``(True, value)`` or ``(False, exception)``; None when abandoned at the timeout.
        ``finished`` is set when ``fn`` returns, even long after it was abandoned."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._concurrency)
        box: list[tuple[bool, Any]] = []
        done = anyio.Event()
        call_soon = loop_caller()

        def job() -> None:
            try:
                box.append((True, fn()))
            except BaseException as exc:  # a check's SystemExit is still just a failure
                box.append((False, exc))
            finished.done = True
            with contextlib.suppress(Exception):  # the event loop may be gone by now
                call_soon(done.set)

        async with self._limiter:
            self._threads.submit(job)
            with anyio.move_on_after(timeout_s):
                await done.wait()
        return box[0] if box else None


def interpret(label: str, value: object) -> Observation:
    """A callable's return value as a result (see ``CallableCheck``)."""
    detail: str | None = None
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str):
        value, detail = value
    if value is None or value is True:
        status = Status.PASSING
    elif value is False:
        status = Status.CRITICAL
    elif isinstance(value, str) and value in Status.__members__.values():
        status = Status(value)
    else:
        return Status.CRITICAL, (
            f"{label} returned {value!r}; expected True, False, None or a meshlite.Status"
        )
    return status, detail if detail is not None else f"{label} returned {value!r}"


class CallableProbe:
    """A Python callable, sync (on a daemon thread) or async (awaited)."""

    def __init__(self, spec: CallableCheck, caller: SyncCaller) -> None:
        self._spec = spec
        self._caller = caller
        fn = spec.fn
        self._label = f"{getattr(fn, '__name__', None) or repr(fn)}()"
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
        )
        self._finished: RunFlag | None = None  # the last sync run's end

    async def __call__(self) -> Observation:
        timeout_s = self._spec.timeout_s
        if self._is_async:
            return await self._await(self._spec.fn, timeout_s)
        if self._finished is not None and not self._finished.done:
            return Status.CRITICAL, (
                f"{self._label} is still running after timing out "
                f"({timeout_s:g}s); not started again until it returns"
            )
        self._finished = RunFlag()
        outcome = await self._caller.call(self._spec.fn, timeout_s, self._finished)
        if outcome is None:
            return Status.CRITICAL, f"{self._label} timed out after {timeout_s:g}s"
        ok, value = outcome
        if not ok:
            return Status.CRITICAL, f"{self._label} raised {_describe(value)}"
        if inspect.isawaitable(value):  # a sync function that returned a coroutine
            return await self._await(lambda: value, timeout_s)
        return interpret(self._label, value)

    async def _await(self, fn: Callable[[], Any], timeout_s: float) -> Observation:
        with anyio.move_on_after(timeout_s):
            try:
                value = await fn()
            except Exception as exc:
                return Status.CRITICAL, f"{self._label} raised {_describe(exc)}"
            return interpret(self._label, value)
        return Status.CRITICAL, f"{self._label} timed out after {timeout_s:g}s"


# ---------------------------------------------------------------------------- network


class HTTPProbe:
    """``CheckHTTP``: a request, its status code and the head of its body."""

    def __init__(self, spec: HTTPCheck, client: Callable[[], Awaitable[httpx.AsyncClient]]) -> None:
        self._spec = spec
        self._client = client
        self._prefix = f"HTTP {spec.method} {spec.url}"

    async def __call__(self) -> Observation:
        try:
            with anyio.fail_after(self._spec.timeout_s):
                return await self._request()
        except TimeoutError:
            return Status.CRITICAL, f"{self._prefix}: timed out after {self._spec.timeout_s:g}s"
        except Exception as exc:  # httpx.HTTPError, ssl.SSLError, OSError, ...
            return Status.CRITICAL, f"{self._prefix}: {_describe(exc)}"

    async def _request(self) -> Observation:
        import httpx

        client = await self._client()
        headers = httpx.Headers({"User-Agent": USER_AGENT, "Accept": "text/plain, text/*, */*"})
        headers.update(self._spec.headers)
        body = bytearray()
        spec = self._spec
        content = spec.body.encode() if spec.body else None
        async with client.stream(
            spec.method, spec.url, headers=headers, content=content, timeout=spec.timeout_s
        ) as response:
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) >= OUTPUT_MAX_BYTES:
                    break
        code = response.status_code
        if 200 <= code <= 299:
            status = Status.PASSING
        elif code == 429:
            status = Status.WARNING
        else:
            status = Status.CRITICAL
        text = body.decode("utf-8", "replace")
        return status, cap_output(f"{self._prefix}: {code} {response.reason_phrase} Output: {text}")


def make_http_client(verify: bool = True) -> httpx.AsyncClient:
    """The runner's client: no keep-alive (Consul's choice: each run opens a connection,
    and an idle pooled one cannot fail a check), redirects followed like Go's client, and
    no proxy from the environment (a check probes the service, not a proxy's view).
    ``verify=False`` is for checks with ``tls_skip_verify`` (Consul's ``TLSSkipVerify``)."""
    import httpx

    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
        follow_redirects=True,
        trust_env=False,
        verify=verify,
    )


class TCPProbe:
    """``CheckTCP``: passing when a connection opens within the timeout."""

    def __init__(self, spec: TCPCheck) -> None:
        self._spec = spec
        self._host, self._port = parse_hostport(spec.address, default_port=0, what="TCPCheck")
        self._prefix = f"TCP connect {format_hostport(self._host, self._port)}"

    async def __call__(self) -> Observation:
        try:
            with anyio.fail_after(self._spec.timeout_s):
                stream = await anyio.connect_tcp(self._host, self._port)
            await stream.aclose()
        except TimeoutError:
            return Status.CRITICAL, f"{self._prefix}: timed out after {self._spec.timeout_s:g}s"
        except Exception as exc:  # OSError, or a failed name resolution
            return Status.CRITICAL, f"{self._prefix}: {_describe(exc)}"
        return Status.PASSING, f"{self._prefix}: Success"


# ---------------------------------------------------------------------------- scripts


class _Tail:
    """The last ``limit`` bytes written, and how many were written in all."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buf = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self._buf += chunk
        if len(self._buf) > self._limit:
            del self._buf[: len(self._buf) - self._limit]

    def text(self) -> str:
        body = self._buf.decode("utf-8", "replace")
        if self.total > len(self._buf):
            return f"Captured {len(self._buf)} of {self.total} bytes\n...\n{body}"
        return body


def _kill_group(process: anyio.abc.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if hasattr(os, "killpg"):
            os.killpg(process.pid, signal.SIGKILL)  # new session: pgid == pid
        else:  # pragma: no cover - not POSIX
            process.kill()


class ScriptProbe:
    """``CheckMonitor``: exit 0 passing, 1 warning, anything else critical."""

    def __init__(self, spec: ScriptCheck) -> None:
        self._spec = spec

    async def __call__(self) -> Observation:
        try:
            process = await anyio.open_process(
                list(self._spec.args),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except (OSError, ValueError) as exc:
            return Status.CRITICAL, f"cannot run {self._spec.args[0]!r}: {_describe(exc)}"
        tail = _Tail(OUTPUT_MAX_BYTES - _TAIL_RESERVE_BYTES)
        try:
            with anyio.move_on_after(self._spec.timeout_s) as scope:
                assert process.stdout is not None
                async for chunk in process.stdout:
                    tail.add(chunk)
                await process.wait()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(_REAP_WAIT_S):
                if process.returncode is None:
                    _kill_group(process)
                await process.aclose()
        return _script_result(process.returncode, tail.text(), scope, self._spec.timeout_s)


def _script_result(
    code: int | None, output: str, scope: anyio.CancelScope, timeout_s: float
) -> Observation:
    if scope.cancelled_caught or code is None:
        message = f"Timed out ({timeout_s:g}s) running check"
        return Status.CRITICAL, cap_output(f"{message}\n\n{output}" if output else message)
    if code == 0:
        return Status.PASSING, cap_output(output)
    if not output:
        output = f"exit status {code}" if code > 0 else f"killed by signal {-code}"
    return (Status.WARNING if code == 1 else Status.CRITICAL), cap_output(output)
