"""The per-host workload of the chaos test bed: runs inside one namespace, next to its agent.

Theory of operation
-------------------
``python tests/chaos/worker.py CONFIG_JSON`` is started with ``ip netns exec`` on every
host of the bed and talks only to its own agent's HTTP API on the namespace's loopback
(``127.0.0.1:8500`` by default), as a sidecar's client would: the faults act on
``eth0`` between hosts, never on this path.  It uses the standard library only (one
fresh HTTP/1.1 connection per request, so a refused connection proves a request was
never delivered) and prints one JSON object per line on stdout:

* ``inv`` / ``op`` — the KV workload (``"kv": true``): one thread doing puts, reads in
  Consul's ``default`` mode, ``?consistent`` reads and compare-and-swaps (a read, then
  ``PUT ?cas=<ModifyIndex>``, ``?cas=0`` for a missing key) on a few keys.  Every value
  written is unique (``<name>-<seq>``), so a value names the write that made it.  ``inv``
  is printed at the invocation, ``op`` at the completion with ``status`` ``ok`` (with
  ``result``), ``fail`` (certainly not applied: connection refused, or Consul's ``500 No
  cluster leader``, which meshlite answers only for a call that reached no leader) or
  ``info`` (outcome unknown: a timeout, any other error).  Keys are
  ``chaos/e<epoch>/k<i>``: the epoch (``epoch_s`` seconds since the bed's ``t0``) keeps
  each key's history short enough to check exhaustively.
* ``hold`` — the lock workload (``"lock": true``): a contender for ``chaos-lock`` using
  Consul's recipe (a session with ``LockDelay``, ``?acquire``, ``?release``).  It *acts*
  as the holder only at instants ``t < t_c + lease_s``, ``t_c`` being the invocation
  time of its latest confirmation: an ``?acquire`` that answered ``true`` or a
  ``?consistent`` read naming its session as the holder (``lease_s < lock_delay_s``;
  see ``checkers.check_locks`` for why that makes overlapping acts impossible).  A
  ``hold`` line per acquisition gives its first and last act, the acts counted, the
  ``LockIndex`` values seen (the fencing token) and why it ended.
* ``obs`` — the observer (``"observe": true``): every ``observe_s``, the agent's
  ``/v1/agent/members`` and ``/v1/health/service/<service>?passing`` as this host sees
  them, with the poll's start and end times.
* ``reply`` — answers to commands on stdin: ``{"id": N, "method": "GET", "path": ...,
  "body": ..., "timeout_s": ...}``, a proxy the test driver (outside the namespaces,
  with no route to them) uses to query this host's agent.  ``{"start": true}`` starts
  the KV and lock workloads (the driver sends it once the mesh is whole); ``{"quiet":
  true}`` stops them (printing what is in flight as incomplete, then ``quiet``) and
  leaves the observer and the proxy running; ``{"stop": true}`` or end of input stops
  everything; the worker prints what is still in flight as incomplete,
  then ``done``, and exits 0.

All times are ``time.monotonic()``: CLOCK_MONOTONIC is one clock for every process on
a Linux machine (network namespaces do not change it), so the driver and every worker
share it.  Every loop is bounded by the stop flag and by ``max_lifetime_s``.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import random
import socket
import sys
import threading
import time
from typing import Any

LOCK_KEY = "chaos-lock"
NO_LEADER = "No cluster leader"


class RefusedError(Exception):
    """The connection was refused: the request was never delivered."""


class UnknownError(Exception):
    """The request may have been delivered, and no answer came (timeout, reset, ...)."""


class Out:
    """Serialised JSON-lines output (several threads print)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def emit(self, **fields: Any) -> None:
        line = json.dumps(fields, separators=(",", ":"))
        with self._lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


class Api:
    """One HTTP request per connection to this host's agent."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.host, self.port = host, int(port)

    def call(
        self, method: str, path: str, body: bytes | None, timeout_s: float
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)
        try:
            try:
                conn.connect()
            except ConnectionRefusedError as exc:
                raise RefusedError(str(exc)) from exc
            except OSError as exc:  # a connect that timed out: nothing was sent
                raise RefusedError(str(exc)) from exc
            try:
                conn.request(method, path, body=body, headers={"Connection": "close"})
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException) as exc:
                raise UnknownError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            conn.close()


def decode_entry(body: bytes) -> dict[str, Any]:
    entries = json.loads(body)
    entry: dict[str, Any] = entries[0]
    return entry


def entry_value(entry: dict[str, Any]) -> str:
    raw = entry.get("Value")
    return "" if raw is None else base64.b64decode(raw).decode()


class Worker:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.name: str = cfg["name"]
        self.api = Api(cfg.get("http", "127.0.0.1:8500"))
        self.out = Out()
        self.stop = threading.Event()
        self.quiet = threading.Event()
        self.started = time.monotonic()
        self.deadline = self.started + float(cfg.get("max_lifetime_s", 3600.0))
        self.op_timeout_s = float(cfg.get("op_timeout_s", 20.0))
        self.rng = random.Random(cfg.get("seed", 0))
        self._inflight: dict[str, dict[str, Any]] = {}
        self._inflight_lock = threading.Lock()
        self._seq = 0
        self.loops: list[threading.Thread] = []
        self.workload_threads: list[threading.Thread] = []
        self.workloads_started = False

    def running(self) -> bool:
        return not self.stop.is_set() and time.monotonic() < self.deadline

    def loading(self) -> bool:
        """The KV and lock loops run until ``quiet`` (or the end)."""
        return self.running() and not self.quiet.is_set()

    def pause(self, seconds: float) -> None:
        self.quiet.wait(max(0.0, seconds))

    # ------------------------------------------------------------------ KV workload

    def _begin(self, **op: Any) -> dict[str, Any]:
        self._seq += 1
        op["id"] = f"{self.name}-{self._seq}"
        op["client"] = self.name
        op["call"] = time.monotonic()
        with self._inflight_lock:
            self._inflight[op["id"]] = op
        self.out.emit(t="inv", **op)
        return op

    def _end(self, op: dict[str, Any], status: str, result: Any = None, note: str = "") -> None:
        ret = time.monotonic()
        with self._inflight_lock:
            self._inflight.pop(op["id"], None)
        done = dict(op, status=status, result=result, ret=ret if status == "ok" else None)
        if note:
            done["note"] = note[:200]
        self.out.emit(**dict(done, t="op"))

    def _read(self, key: str, mode: str) -> tuple[str | None, int] | None:
        """A recorded read; (value, ModifyIndex) or None when it failed."""
        op = self._begin(kind="read", key=key, mode=mode)
        suffix = "?consistent" if mode == "consistent" else ""
        try:
            status, body = self.api.call("GET", f"/v1/kv/{key}{suffix}", None, self.op_timeout_s)
        except (RefusedError, UnknownError) as exc:
            self._end(op, "fail", note=str(exc))  # a read that failed constrains nothing
            return None
        if status == 404:
            self._end(op, "ok", None)
            return None, 0
        if status != 200:
            self._end(op, "fail", note=f"{status} {body[:100]!r}")
            return None
        entry = decode_entry(body)
        value = entry_value(entry)
        self._end(op, "ok", value)
        return value, int(entry["ModifyIndex"])

    def _put(self, op: dict[str, Any], path: str) -> None:
        try:
            status, body = self.api.call(
                "PUT", path, op["value"].encode(), timeout_s=self.op_timeout_s
            )
        except RefusedError as exc:
            self._end(op, "fail", note=str(exc))
            return
        except UnknownError as exc:
            self._end(op, "info", note=str(exc))
            return
        text = body.decode(errors="replace")
        if status == 200:
            self._end(op, "ok", json.loads(body) is True)
        elif status == 500 and text.strip() == NO_LEADER:
            self._end(op, "fail", note=text)
        else:
            self._end(op, "info", note=f"{status} {text}")

    def kv_loop(self) -> None:
        keys = int(self.cfg.get("keys", 3))
        epoch_s = float(self.cfg.get("epoch_s", 20.0))
        t0 = float(self.cfg["t0"])
        gap_s = float(self.cfg.get("kv_gap_s", 0.05))
        for values in range(1, 10_000_000):  # bounded by loading() in practice
            if not self.loading():
                return
            epoch = max(0, int((time.monotonic() - t0) / epoch_s))
            key = f"chaos/e{epoch:04d}/k{self.rng.randrange(keys)}"
            roll = self.rng.random()
            value = f"{self.name}-{values}"
            if roll < 0.4:
                op = self._begin(kind="write", key=key, value=value)
                self._put(op, f"/v1/kv/{key}")
            elif roll < 0.65:
                self._read(key, "default")
            elif roll < 0.8:
                self._read(key, "consistent")
            else:
                seen = self._read(key, "default" if self.rng.random() < 0.5 else "consistent")
                if seen is not None:
                    expected, index = seen
                    op = self._begin(kind="cas", key=key, value=value, expected=expected)
                    self._put(op, f"/v1/kv/{key}?cas={index}")
            self.pause(self.rng.uniform(0.0, 2 * gap_s))

    def flush_inflight(self) -> None:
        with self._inflight_lock:
            left = list(self._inflight.values())
            self._inflight.clear()
        for op in left:
            self.out.emit(**dict(op, t="op", status="info", result=None, ret=None, note="stop"))

    # ------------------------------------------------------------------ lock workload

    def _session(self) -> str | None:
        body = json.dumps(
            {
                "Name": f"chaos-{self.name}",
                "LockDelay": f"{float(self.cfg.get('lock_delay_s', 3.0))}s",
                "Behavior": "release",
            }
        ).encode()
        try:
            status, answer = self.api.call("PUT", "/v1/session/create", body, 10.0)
        except (RefusedError, UnknownError):
            return None
        if status != 200:
            return None
        return str(json.loads(answer)["ID"])

    def _holder(self, timeout_s: float) -> tuple[str | None, int] | None:
        """The lock's (Session, LockIndex) by a ``?consistent`` read; None on error."""
        try:
            status, body = self.api.call("GET", f"/v1/kv/{LOCK_KEY}?consistent", None, timeout_s)
        except (RefusedError, UnknownError):
            return None
        if status == 404:
            return None, 0
        if status != 200:
            return None
        entry = decode_entry(body)
        return entry.get("Session"), int(entry.get("LockIndex", 0))

    def _destroy(self, session: str) -> None:
        with contextlib.suppress(RefusedError, UnknownError):
            self.api.call("PUT", f"/v1/session/destroy/{session}", None, 5.0)

    def _acquire(self, session: str) -> tuple[str, float]:
        """``held`` (with the confirmation time), ``free``, ``busy`` or ``gone``."""
        t_c = time.monotonic()
        path = f"/v1/kv/{LOCK_KEY}?acquire={session}"
        try:
            status, body = self.api.call("PUT", path, self.name.encode(), 10.0)
        except RefusedError:
            return "busy", t_c
        except UnknownError:
            status, body = 0, b""
        if status == 200:
            return ("held" if json.loads(body) is True else "busy"), t_c
        if status == 400:
            return "gone", t_c  # the session was invalidated
        # UnknownError outcome: we may hold it.  A consistent read settles it.
        t_c = time.monotonic()
        holder = self._holder(5.0)
        if holder is not None and holder[0] == session:
            return "held", t_c
        return "busy", t_c

    def _hold(self, session: str, t_c: float) -> dict[str, Any]:
        """Act as the holder until the hold ends; the ``hold`` record (``end``: why)."""
        lease_s = float(self.cfg.get("lease_s", 2.0))
        lock_delay_s = float(self.cfg.get("lock_delay_s", 3.0))
        hold_for = self.rng.uniform(0.5, 2.5)
        started = time.monotonic()
        first: float | None = None
        last: float | None = None
        acts = 0
        indexes: list[int] = []
        last_conf = t_c
        next_confirm = 0.0
        end = "stopped"
        for _ in range(1_000_000):
            now = time.monotonic()
            if now < last_conf + lease_s:  # the lease rule: act only while confirmed
                first = now if first is None else first
                last, acts = now, acts + 1
            if not self.loading():
                end = "stopped"
                break
            if now - started >= hold_for:
                end = "released"
                break
            if now - last_conf > 3 * lock_delay_s + 10.0:
                end = "expired"
                break
            if now >= next_confirm:
                t_i = time.monotonic()
                holder = self._holder(1.0)
                if holder is not None:
                    if holder[0] != session:
                        end = "lost"
                        break
                    last_conf = t_i
                    if holder[1] not in indexes:
                        indexes.append(holder[1])
                next_confirm = time.monotonic() + 0.3
            self.pause(0.05)
        return {
            "t": "hold",
            "who": self.name,
            "session": session,
            "acquired": t_c,
            "first_act": first,
            "last_act": last,
            "acts": acts,
            "lock_indexes": indexes,
            "end": end,
        }

    def _release(self, session: str) -> str:
        """``released``, ``lost`` (the session no longer held it) or ``release_unknown``."""
        try:
            status, body = self.api.call("PUT", f"/v1/kv/{LOCK_KEY}?release={session}", b"", 5.0)
        except (RefusedError, UnknownError):
            return "release_unknown"
        if status != 200:
            return "release_unknown"
        return "released" if json.loads(body) is True else "lost"

    def lock_loop(self) -> None:
        session: str | None = None
        for _ in range(1_000_000):
            if not self.loading():
                break
            if session is None:
                session = self._session()
                if session is None:
                    self.pause(0.5)
                    continue
            state, t_c = self._acquire(session)
            if state == "gone":
                session = None
                continue
            if state == "busy":
                self.pause(self.rng.uniform(0.1, 0.4))
                continue
            record = self._hold(session, t_c)
            if record["end"] == "released":  # acts are over: now let go
                record["end"] = self._release(session)
            self.out.emit(**record)
            if record["end"] != "released":  # lost, expired, unsure: start afresh
                self._destroy(session)
                session = None
            self.pause(self.rng.uniform(0.05, 0.4))
        if session is not None:
            self._destroy(session)

    # ------------------------------------------------------------------ observer

    def observe_loop(self) -> None:
        period_s = float(self.cfg.get("observe_s", 0.5))
        service = str(self.cfg.get("service", "chaos"))
        for _ in range(10_000_000):
            if not self.running():
                return
            call = time.monotonic()
            members: dict[str, int] | None = None
            passing: list[str] | None = None
            try:
                status, body = self.api.call("GET", "/v1/agent/members", None, 2.0)
                if status == 200:
                    members = {m["Name"]: int(m["Status"]) for m in json.loads(body)}
                status, body = self.api.call(
                    "GET", f"/v1/health/service/{service}?passing", None, 2.0
                )
                if status == 200:
                    passing = sorted(e["Node"]["Node"] for e in json.loads(body))
            except (RefusedError, UnknownError, ValueError, KeyError):
                pass
            ret = time.monotonic()
            self.out.emit(t="obs", who=self.name, call=call, ret=ret, members=members, svc=passing)
            self.stop.wait(max(0.0, period_s - (time.monotonic() - call)))

    # ------------------------------------------------------------------ commands

    def command(self, cmd: dict[str, Any]) -> None:
        body = cmd.get("body")
        try:
            status, answer = self.api.call(
                str(cmd.get("method", "GET")),
                str(cmd["path"]),
                None if body is None else str(body).encode(),
                float(cmd.get("timeout_s", 5.0)),
            )
            text = answer.decode(errors="replace")
        except (RefusedError, UnknownError) as exc:
            status, text = 0, f"{type(exc).__name__}: {exc}"
        self.out.emit(t="reply", id=cmd.get("id"), status=status, body=text, at=time.monotonic())

    def start_workloads(self) -> None:
        """Start the KV and lock loops this worker is configured for (once)."""
        if self.workloads_started:
            return
        self.workloads_started = True
        for role, target in (("kv", self.kv_loop), ("lock", self.lock_loop)):
            if self.cfg.get(role):
                thread = threading.Thread(target=target, name=role, daemon=True)
                thread.start()
                self.workload_threads.append(thread)
        self.out.emit(t="started", who=self.name, at=time.monotonic())

    def quiesce(self) -> None:
        """Stop the workloads, wait for their loops, report what is still in flight."""
        self.quiet.set()
        for thread in self.workload_threads:
            thread.join(self.op_timeout_s + 15.0)
        self.flush_inflight()
        self.out.emit(t="quiet", who=self.name, at=time.monotonic())

    def commands(self) -> None:
        for line in sys.stdin:
            try:
                cmd = json.loads(line)
            except ValueError:
                continue
            if cmd.get("stop"):
                break
            if cmd.get("start"):
                self.start_workloads()
                continue
            if cmd.get("quiet"):
                threading.Thread(target=self.quiesce, daemon=True).start()
                continue
            threading.Thread(target=self.command, args=(cmd,), daemon=True).start()
        self.quiet.set()
        self.stop.set()


def main() -> None:
    cfg = json.loads(sys.argv[1])
    worker = Worker(cfg)
    threading.Thread(target=worker.commands, daemon=True).start()
    if cfg.get("observe"):
        observer = threading.Thread(target=worker.observe_loop, name="observe", daemon=True)
        observer.start()
        worker.loops.append(observer)
    worker.out.emit(t="ready", who=worker.name, at=time.monotonic())
    while worker.running():
        worker.stop.wait(0.5)
    worker.stop.set()
    worker.quiet.set()
    for thread in [*worker.loops, *worker.workload_threads]:
        thread.join(worker.op_timeout_s + 15.0)
    worker.flush_inflight()
    worker.out.emit(t="done", who=worker.name, at=time.monotonic())
    sys.stdout.flush()


if __name__ == "__main__":
    socket.setdefaulttimeout(30.0)
    main()
