"""The state of one health check: Consul's thresholds, TTL expiry and deregister-after.

Theory of operation
-------------------
A check's *status* is what the catalog publishes; its *results* are what the runner
(``meshlite/_check_runner.py``) observes.  This module decides, without I/O or clocks
(time is the ``now`` argument, in monotonic seconds), how results become status:

* **Thresholds** follow Consul's ``StatusHandler`` (``agent/checks/check.go``, Consul 1.7+):
  a passing *or warning* result is a success, a critical one a failure.  Each success
  increments a success counter and zeroes the failure counter, and vice versa.  A success
  is applied (status and output replaced) only once ``success_before_passing`` successes
  have come in a row, a failure only after ``failures_before_critical`` failures in a row;
  below its threshold a result changes nothing, not even the output (Consul leaves the
  last applied result in place, so status and output always agree).  Like Consul's
  ``NewStatusHandler``, both counters *start at their thresholds*, so the first result is
  applied at once and the thresholds damp later changes of direction (flapping).
* **TTL checks** (``CheckTTL``) take the status pushed by ``ttl_update`` as is (Consul
  applies no thresholds to TTL checks) and re-arm the deadline ``now + ttl_s``; the first
  deadline is creation + ``ttl_s``.  When it passes without an update, :meth:`expire`
  turns the check critical with the output ``"TTL expired"`` (plus the last note, as
  Consul's ``getExpiredOutput`` does) and disarms it until the next update.
* **Deregister-after** (Consul's ``deregister_critical_service_after`` and the agent's
  reaper, ``agent/agent.go``): the time the status last *became* critical is kept (a check
  created critical counts from its creation); :meth:`deregister_due` says when it has been
  critical for ``deregister_critical_after_s`` without a break.
* :meth:`next_deadline` is the earliest instant at which :meth:`expire` or
  :meth:`deregister_due` may change their answer, for the driver's timer.

Output is capped at :data:`OUTPUT_MAX_BYTES` (UTF-8), see :func:`cap_output`.
"""

from __future__ import annotations

from meshlite._health import CheckSpec, Status, TTLCheck
from meshlite.errors import ConfigError

__all__ = ["OUTPUT_MAX_BYTES", "TTL_EXPIRED", "CheckState", "cap_output"]

# Consul's DefaultBufSize (agent/checks/check.go): enough for a stack trace's last lines or
# a status page's head, small enough that a thousand checks hold 4 MB at most and that a
# check's output can never dominate the catalog or a push/pull exchange if it is shared.
OUTPUT_MAX_BYTES = 4096
# Room kept at the end of a capped output for the truncation note (~50 bytes at most).
_NOTE_RESERVE_BYTES = 96
TTL_EXPIRED = "TTL expired"


def cap_output(text: str, limit_bytes: int = OUTPUT_MAX_BYTES) -> str:
    """``text`` as valid UTF-8 of at most ``limit_bytes``: its head plus a truncation note.

    Lone surrogates (undecodable bytes smuggled through ``surrogateescape``) become ``?``,
    so the result always encodes, e.g. to msgpack, without error.
    """
    if len(text) <= limit_bytes and text.isascii():
        return text  # the common case, without encoding
    data = text.encode("utf-8", "replace")
    if len(data) <= limit_bytes:
        return data.decode("utf-8")
    keep = max(0, limit_bytes - _NOTE_RESERVE_BYTES)
    head = data[:keep].decode("utf-8", "ignore")  # "ignore" drops a split last character
    return f"{head} ... (captured {keep} of {len(data)} bytes)"


def _threshold(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _seconds(name: str, value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise ConfigError(f"{name} must be > 0 seconds or None, got {value!r}")
    return value


class CheckState:
    """Status, output and timers of one check; see the module docstring for the rules."""

    __slots__ = (
        "_critical_since",
        "_deregister_after_s",
        "_failures",
        "_failures_before_critical",
        "_last_note",
        "_success_before_passing",
        "_successes",
        "_ttl_deadline",
        "_ttl_s",
        "output",
        "status",
    )

    def __init__(
        self,
        *,
        now: float,
        initial_status: Status = Status.CRITICAL,
        success_before_passing: int = 1,
        failures_before_critical: int = 1,
        ttl_s: float | None = None,
        deregister_critical_after_s: float | None = None,
    ) -> None:
        self._success_before_passing = _threshold("success_before_passing", success_before_passing)
        self._failures_before_critical = _threshold(
            "failures_before_critical", failures_before_critical
        )
        self._ttl_s = _seconds("ttl_s", ttl_s)
        self._deregister_after_s = _seconds(
            "deregister_critical_after_s", deregister_critical_after_s
        )
        self.status = Status(initial_status)
        self.output = ""
        # NewStatusHandler: counters start at their thresholds, so the first result applies.
        self._successes = self._success_before_passing
        self._failures = self._failures_before_critical
        self._critical_since = now if self.status is Status.CRITICAL else None
        self._ttl_deadline = now + ttl_s if ttl_s is not None else None
        self._last_note = ""

    @classmethod
    def from_spec(cls, spec: CheckSpec, now: float) -> CheckState:
        """The state of a check declared by ``spec``, created at ``now``."""
        return cls(
            now=now,
            initial_status=spec.initial_status,
            success_before_passing=spec.success_before_passing,
            failures_before_critical=spec.failures_before_critical,
            ttl_s=spec.ttl_s if isinstance(spec, TTLCheck) else None,
            deregister_critical_after_s=spec.deregister_critical_after_s,
        )

    # ------------------------------------------------------------------ inputs

    def record(self, result: Status, output: str, now: float) -> bool:
        """One observed result; True when it changed the status."""
        result = Status(result)
        if result is Status.CRITICAL:
            # Counters saturate at their thresholds: only ">= threshold" matters.
            self._failures = min(self._failures + 1, self._failures_before_critical)
            self._successes = 0
            applies = self._failures >= self._failures_before_critical
        else:
            self._successes = min(self._successes + 1, self._success_before_passing)
            self._failures = 0
            applies = self._successes >= self._success_before_passing
        return self._apply(result, output, now) if applies else False

    def ttl_update(self, status: Status, note: str, now: float) -> bool:
        """``mesh.ttl_pass/warn/fail``: take ``status`` as is and re-arm the TTL."""
        if self._ttl_s is None:
            raise ConfigError("ttl_update is only for TTL checks (declare the check as TTLCheck)")
        self._ttl_deadline = now + self._ttl_s
        changed = self._apply(Status(status), note, now)
        self._last_note = self.output
        return changed

    def expire(self, now: float) -> bool:
        """Critical with "TTL expired" once the TTL deadline has passed; True on a change."""
        if self._ttl_deadline is None or now < self._ttl_deadline:
            return False
        self._ttl_deadline = None  # disarmed until the next ttl_update
        output = TTL_EXPIRED
        if self._last_note:
            output = f"{TTL_EXPIRED} (last output before timeout follows): {self._last_note}"
        return self._apply(Status.CRITICAL, output, now)

    # ------------------------------------------------------------------ queries

    @property
    def critical_since(self) -> float | None:
        """When the status last became critical, while it still is; else None."""
        return self._critical_since

    @property
    def ttl_deadline(self) -> float | None:
        """When the TTL expires unless updated; None for other kinds or once expired."""
        return self._ttl_deadline

    def deregister_due(self, now: float) -> bool:
        """True once the check has been critical for ``deregister_critical_after_s``."""
        due = self._deregister_at()
        return due is not None and now >= due

    def next_deadline(self) -> float | None:
        """The earliest pending TTL expiry or deregister time (possibly past); else None."""
        due = self._deregister_at()
        if self._ttl_deadline is None:
            return due
        return self._ttl_deadline if due is None else min(due, self._ttl_deadline)

    # ------------------------------------------------------------------ internals

    def _deregister_at(self) -> float | None:
        if self._deregister_after_s is None or self._critical_since is None:
            return None
        return self._critical_since + self._deregister_after_s

    def _apply(self, status: Status, output: str, now: float) -> bool:
        self.output = cap_output(output)
        if status is self.status:
            return False
        self.status = status
        self._critical_since = now if status is Status.CRITICAL else None
        return True
