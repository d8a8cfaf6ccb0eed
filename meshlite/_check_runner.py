"""Runs a peer's health checks on the event loop (asyncio or trio, through anyio).

Theory of operation
-------------------
Each check is one task in the runner's task group, inside its own cancel scope, so
:meth:`CheckRunner.remove` (or leaving the runner) stops exactly that check — a script
being run is killed, a hung sync callable is abandoned on its daemon thread.  The task
loops on a timer:

* *interval checks* (HTTP, TCP, script, callable) run once after a small random stagger
  — Consul staggers the first run over a whole interval (``lib.RandomStagger``); a short
  one de-synchronises checks registered in one batch without delaying the first result
  (and so a new service's first passing status) by up to an interval — then again
  ``interval_s`` after each run ends, as Consul's ``time.After(c.Interval)`` does — rounded
  up to a grid of at most 0.1 s, so that checks due together share one wake-up of the
  event loop (see ``RUN_TICK_MAX_S``).  Each observation (``_check_probes.py``) goes
  through the check's :class:`CheckState` (thresholds); a run is bounded by its timeout,
  so nothing waits on a hung check.
* *TTL checks* have no run, only the expiry timer; :meth:`CheckRunner.ttl_update` wakes
  the task so that it re-reads the deadline.
* Both wake for :meth:`CheckState.next_deadline` (TTL expiry, deregister-after).

``on_change(check_id, status, output)`` runs on the event loop, from the check's task,
only when the status changes (the caller publishes it); ``on_output(check_id)`` when only
the output changed (nothing to gossip, but the peer's HTTP view shows it);
``on_deregister(check_id)`` runs once when the check has been critical for
``deregister_critical_after_s`` — the check then stops running but keeps its state until
:meth:`CheckRunner.remove`.  An exception from a callback is logged and does not stop
the check.  Callbacks may call ``remove``.
"""

from __future__ import annotations

import functools
import logging
import math
import random
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import attrs

from meshlite._check_probes import (
    CallableProbe,
    HTTPProbe,
    Observation,
    ScriptProbe,
    SyncCaller,
    TCPProbe,
    make_http_client,
)
from meshlite._core.checkstate import CheckState
from meshlite._health import (
    CallableCheck,
    CheckSpec,
    HTTPCheck,
    ScriptCheck,
    Status,
    TCPCheck,
    TTLCheck,
)
from meshlite.errors import ConfigError, NotRunningError

if TYPE_CHECKING:
    import httpx

__all__ = ["FIRST_RUN_STAGGER_MAX_S", "CheckRunner"]

log = logging.getLogger("meshlite.checks")

# The first run of an interval check waits uniform(0, min(interval_s, this)).
FIRST_RUN_STAGGER_MAX_S = 0.2
# Runs are due on a grid of min(this, interval_s / 20) seconds.  Waking the event loop is
# most of what a passing check costs (an isolated asyncio timer wake-up takes ~180 us of
# CPU on a 2-core VM, a thread hand-off as much again); on a grid, checks due in the same
# tick share one wake-up.  The price: a run may start up to one tick late (1 % of a 10 s
# interval).  See benchmarks/bench_checks.py.
RUN_TICK_MAX_S = 0.1

Probe = Callable[[], Awaitable[Observation]]


@attrs.define(eq=False)
class _Entry:
    check_id: str
    spec: CheckSpec
    state: CheckState
    probe: Probe | None  # None for TTL checks
    interval_s: float
    scope: anyio.CancelScope = attrs.field(factory=anyio.CancelScope)
    wake: anyio.Event = attrs.field(factory=anyio.Event)


class CheckRunner:
    """The checks of one peer; an async context manager that owns their tasks."""

    def __init__(
        self,
        on_change: Callable[[str, Status, str], None],
        on_deregister: Callable[[str], None],
        *,
        on_output: Callable[[str], None] | None = None,
        rng: random.Random | None = None,
        first_run_stagger_max_s: float = FIRST_RUN_STAGGER_MAX_S,
    ) -> None:
        self._on_change = on_change
        self._on_deregister = on_deregister
        self._on_output = on_output
        self._rng = rng if rng is not None else random.Random()
        self._stagger_max_s = first_run_stagger_max_s
        self._entries: dict[str, _Entry] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._caller = SyncCaller()
        self._http: dict[bool, httpx.AsyncClient] = {}  # by "verify certificates"
        self._http_lock: anyio.Lock | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> CheckRunner:
        if self._tg is not None:
            raise RuntimeError("this CheckRunner is already running")
        self._http_lock = anyio.Lock()
        self._caller = SyncCaller()  # its limiter belongs to this event loop
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg, self._tg = self._tg, None
        assert tg is not None
        self._entries.clear()
        tg.cancel_scope.cancel()
        try:
            return await tg.__aexit__(exc_type, exc, tb)
        finally:
            clients, self._http = list(self._http.values()), {}
            with anyio.CancelScope(shield=True):
                for http in clients:  # at most two: verifying and not
                    await http.aclose()

    # ------------------------------------------------------------------ API

    def add(self, check_id: str, spec: CheckSpec) -> None:
        """Start running ``spec`` as ``check_id`` (its first run comes within a stagger)."""
        if self._tg is None:
            raise NotRunningError("the check runner is not running; add checks inside it")
        if check_id in self._entries:
            raise ConfigError(f"a check with id {check_id!r} is already running; remove it first")
        now = anyio.current_time()
        probe = self._probe(spec)
        interval_s = math.inf if isinstance(spec, TTLCheck) else spec.interval_s
        entry = _Entry(check_id, spec, CheckState.from_spec(spec, now), probe, interval_s)
        self._entries[check_id] = entry
        first_run = None
        if probe is not None:
            stagger_s = self._rng.uniform(0.0, min(interval_s, self._stagger_max_s))
            first_run = _on_tick(now + stagger_s, interval_s)
        self._tg.start_soon(self._drive, entry, first_run, name=f"meshlite check {check_id}")

    def remove(self, check_id: str) -> None:
        """Stop ``check_id`` and forget it; a run in progress is cancelled."""
        self._entry(check_id).scope.cancel()
        del self._entries[check_id]

    def ttl_update(self, check_id: str, status: Status, note: str = "") -> None:
        """Set a TTL check's status (``mesh.ttl_pass/warn/fail``) and re-arm its TTL."""
        entry = self._entry(check_id)
        if entry.probe is not None:
            raise ConfigError(
                f"check {check_id!r} is not a TTL check; only TTLCheck takes ttl updates"
            )
        before = entry.state.output
        changed = entry.state.ttl_update(Status(status), note, anyio.current_time())
        entry.wake.set()
        self._report(entry, changed, before)

    def state(self, check_id: str) -> tuple[Status, str]:
        """The current status and output of ``check_id``."""
        entry = self._entry(check_id)
        return entry.state.status, entry.state.output

    def spec(self, check_id: str) -> CheckSpec:
        """What ``check_id`` runs, as it was added."""
        return self._entry(check_id).spec

    def ids(self) -> list[str]:
        """The ids of the checks added and not removed."""
        return list(self._entries)

    def has(self, check_id: str) -> bool:
        """Whether ``check_id`` was added and not removed."""
        return check_id in self._entries

    # ------------------------------------------------------------------ internals

    def _entry(self, check_id: str) -> _Entry:
        try:
            return self._entries[check_id]
        except KeyError:
            raise ConfigError(f"no check with id {check_id!r} on this peer") from None

    def _probe(self, spec: CheckSpec) -> Probe | None:
        if isinstance(spec, CallableCheck):
            return CallableProbe(spec, self._caller)
        if isinstance(spec, HTTPCheck):
            return HTTPProbe(spec, functools.partial(self._http_client, not spec.tls_skip_verify))
        if isinstance(spec, TCPCheck):
            return TCPProbe(spec)
        if isinstance(spec, ScriptCheck):
            return ScriptProbe(spec)
        if isinstance(spec, TTLCheck):
            return None
        raise ConfigError(f"not a check spec: {spec!r} (use HTTPCheck, TCPCheck, ...)")

    async def _http_client(self, verify: bool) -> httpx.AsyncClient:
        assert self._http_lock is not None
        async with self._http_lock:
            client = self._http.get(verify)
            if client is None:
                # Building the client loads the CA bundle (tens of ms): off the loop.
                client = await anyio.to_thread.run_sync(make_http_client, verify)
                self._http[verify] = client
            return client

    async def _drive(self, entry: _Entry, next_run: float | None) -> None:
        with entry.scope:
            while True:
                now = anyio.current_time()
                before = entry.state.output
                self._report(entry, entry.state.expire(now), before)
                if entry.state.deregister_due(now):
                    self._notify_deregister(entry)
                    return
                if next_run is not None and now >= next_run:
                    assert entry.probe is not None
                    status, output = await entry.probe()
                    before = entry.state.output
                    changed = entry.state.record(status, output, anyio.current_time())
                    self._report(entry, changed, before)
                    next_run = _on_tick(anyio.current_time() + entry.interval_s, entry.interval_s)
                    continue
                await self._sleep(entry, next_run)

    async def _sleep(self, entry: _Entry, next_run: float | None) -> None:
        deadlines = [d for d in (next_run, entry.state.next_deadline()) if d is not None]
        deadline = min(deadlines) if deadlines else math.inf
        if entry.probe is not None:  # nothing else can move an interval check's deadlines
            await anyio.sleep_until(deadline)
            return
        with anyio.move_on_at(deadline):
            await entry.wake.wait()
        if entry.wake.is_set():
            entry.wake = anyio.Event()

    def _report(self, entry: _Entry, status_changed: bool, output_before: str) -> None:
        """After one state transition: tell the owner what it moved, if anything."""
        if status_changed:
            self._notify_change(entry)
        elif entry.state.output != output_before and self._on_output is not None:
            if self._entries.get(entry.check_id) is not entry:
                return  # removed meanwhile
            try:
                self._on_output(entry.check_id)
            except Exception:
                log.exception("on_output callback failed for check %s", entry.check_id)

    def _notify_change(self, entry: _Entry) -> None:
        if self._entries.get(entry.check_id) is not entry:
            return  # removed meanwhile
        try:
            self._on_change(entry.check_id, entry.state.status, entry.state.output)
        except Exception:
            log.exception("on_change callback failed for check %s", entry.check_id)

    def _notify_deregister(self, entry: _Entry) -> None:
        if self._entries.get(entry.check_id) is not entry:
            return
        try:
            self._on_deregister(entry.check_id)
        except Exception:
            log.exception("on_deregister callback failed for check %s", entry.check_id)


def _on_tick(t: float, interval_s: float) -> float:
    """``t`` rounded up to the run grid of checks with this interval."""
    tick_s = min(RUN_TICK_MAX_S, interval_s / 20)
    return math.ceil(t / tick_s) * tick_s
