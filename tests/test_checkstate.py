"""The check state machine (meshlite/_core/checkstate.py): Consul's thresholds, TTL and
deregister-after, as examples, properties, and a stateful test against a small model."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from meshlite._core.checkstate import OUTPUT_MAX_BYTES, TTL_EXPIRED, CheckState, cap_output
from meshlite._health import CallableCheck, HTTPCheck, Status, TTLCheck
from meshlite.errors import ConfigError

P, W, C = Status.PASSING, Status.WARNING, Status.CRITICAL
statuses = st.sampled_from([P, W, C])


def feed(state: CheckState, results: list[Status], t0: float = 0.0) -> list[bool]:
    return [state.record(r, f"run {i}", t0 + i) for i, r in enumerate(results)]


# ---------------------------------------------------------------------------- thresholds


def test_first_result_applies_at_once_whatever_the_thresholds() -> None:
    # Consul's NewStatusHandler starts both counters at their thresholds.
    state = CheckState(now=0, success_before_passing=3, failures_before_critical=3)
    assert state.status is C
    assert state.record(P, "ok", 1.0)
    assert (state.status, state.output) == (P, "ok")


def test_failures_below_threshold_change_nothing_not_even_output() -> None:
    state = CheckState(now=0, initial_status=P, failures_before_critical=3)
    state.record(P, "fine", 1)
    assert feed(state, [C, C], t0=2) == [False, False]
    assert (state.status, state.output) == (P, "fine")
    assert state.record(C, "down", 5)
    assert (state.status, state.output) == (C, "down")


def test_consul_review_sequence_needs_fresh_successes_after_failures() -> None:
    # From the review of hashicorp/consul#5739: with both thresholds 2, the sequence
    # OK OK OK FAIL FAIL FAIL OK must not be passing (only one OK since the last FAIL).
    state = CheckState(now=0, success_before_passing=2, failures_before_critical=2)
    feed(state, [P, P, P, C, C, C, P])
    assert state.status is C
    state.record(P, "again", 10)
    assert state.status is P


def test_warning_counts_as_success_and_is_applied_as_warning() -> None:
    state = CheckState(now=0, initial_status=P, success_before_passing=2)
    state.record(C, "down", 1)
    assert state.status is C
    assert not state.record(W, "slow", 2)  # one success of two
    assert state.record(W, "slow", 3)
    assert (state.status, state.output) == (W, "slow")
    assert state.record(P, "ok", 4)  # the streak of successes goes on: applied at once


def test_a_single_failure_breaks_a_success_streak() -> None:
    state = CheckState(now=0, success_before_passing=2, failures_before_critical=3)
    feed(state, [C, P, C, P])  # first applies (critical), then no streak reaches 2
    assert state.status is C
    state.record(P, "ok", 9)
    assert state.status is P


@given(
    ts=st.integers(2, 5),
    tf=st.integers(2, 5),
    first=statuses,
    n=st.integers(1, 40),
)
def test_strict_flapping_never_changes_status_after_the_first_result(
    ts: int, tf: int, first: Status, n: int
) -> None:
    state = CheckState(now=0, success_before_passing=ts, failures_before_critical=tf)
    state.record(first, "first", 0)
    flap = [P, C] if first is C else [C, P]
    changes = feed(state, list(itertools.islice(itertools.cycle(flap), n)), t0=1)
    assert not any(changes)
    assert state.status is first


@given(
    ts=st.integers(1, 4),
    tf=st.integers(1, 4),
    noise=st.lists(statuses, max_size=20),
    final=statuses,
)
def test_enough_identical_results_always_win(
    ts: int, tf: int, noise: list[Status], final: Status
) -> None:
    state = CheckState(now=0, success_before_passing=ts, failures_before_critical=tf)
    feed(state, noise)
    feed(state, [final] * max(ts, tf), t0=100)
    assert state.status is final


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"success_before_passing": 0}, "success_before_passing"),
        ({"failures_before_critical": True}, "failures_before_critical"),
        ({"ttl_s": 0}, "ttl_s"),
        ({"deregister_critical_after_s": -1.0}, "deregister_critical_after_s"),
    ],
)
def test_bad_settings_are_config_errors(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        CheckState(now=0, **kwargs)  # type: ignore[arg-type]


def test_from_spec_takes_the_options() -> None:
    spec = HTTPCheck("http://127.0.0.1/", initial_status="warning", failures_before_critical=2)
    state = CheckState.from_spec(spec, now=5.0)
    assert state.status is W
    assert state.ttl_deadline is None
    assert state.critical_since is None
    ttl = CheckState.from_spec(TTLCheck(ttl_s=3.0, deregister_critical_after_s=7.0), now=5.0)
    assert ttl.ttl_deadline == 8.0
    assert ttl.critical_since == 5.0  # TTL checks start critical, like every Consul check
    assert ttl.next_deadline() == 8.0


# ---------------------------------------------------------------------------- TTL


def test_ttl_expires_to_critical_once_and_rearms_on_update() -> None:
    state = CheckState(now=10.0, ttl_s=5.0, initial_status=P)
    assert not state.expire(14.9)
    assert state.expire(15.0)
    assert (state.status, state.output) == (C, TTL_EXPIRED)
    assert state.ttl_deadline is None and state.next_deadline() is None
    assert not state.expire(100.0)  # disarmed
    assert state.ttl_update(W, "busy", 100.0)
    assert (state.status, state.output, state.ttl_deadline) == (W, "busy", 105.0)
    state.ttl_update(P, "", 103.0)  # an update re-arms from its own time
    assert state.ttl_deadline == 108.0


def test_ttl_expiry_keeps_the_last_note() -> None:
    state = CheckState(now=0.0, ttl_s=1.0)
    state.ttl_update(P, "all good", 0.5)
    state.expire(2.0)
    assert state.output == f"{TTL_EXPIRED} (last output before timeout follows): all good"


def test_ttl_updates_ignore_thresholds_like_consul() -> None:
    state = CheckState(now=0.0, ttl_s=1.0, success_before_passing=3, failures_before_critical=3)
    assert state.ttl_update(P, "", 0.1)
    assert state.ttl_update(C, "", 0.2)


def test_ttl_update_of_a_non_ttl_check_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="TTL"):
        CheckState(now=0).ttl_update(P, "", 1.0)


# ---------------------------------------------------------------------------- deregister


def test_deregister_after_continuous_critical_only() -> None:
    spec = CallableCheck(lambda: True, deregister_critical_after_s=10.0)
    state = CheckState.from_spec(spec, now=0.0)  # created critical: counts from creation
    assert state.next_deadline() == 10.0
    state.record(P, "up", 4.0)
    assert state.next_deadline() is None
    assert not state.deregister_due(50.0)
    state.record(C, "down", 60.0)
    state.record(C, "still down", 65.0)  # staying critical does not restart the clock
    assert state.critical_since == 60.0
    assert not state.deregister_due(69.9)
    assert state.deregister_due(70.0)


def test_warning_is_not_critical_for_deregister() -> None:
    state = CheckState(now=0.0, deregister_critical_after_s=1.0)
    state.record(W, "meh", 0.5)
    assert not state.deregister_due(100.0)


# ---------------------------------------------------------------------------- output cap


@given(st.text(max_size=6000), st.integers(100, 5000))
def test_cap_output_is_bounded_valid_utf8(text: str, limit: int) -> None:
    capped = cap_output(text, limit)
    data = capped.encode("utf-8")  # strict: lone surrogates were replaced
    assert len(data) <= limit
    if len(text.encode("utf-8", "replace")) <= limit:
        assert data == text.encode("utf-8", "replace")
    else:
        assert capped.endswith("bytes)")


def test_record_caps_long_output() -> None:
    state = CheckState(now=0)
    state.record(P, "x" * 100_000, 1.0)
    assert len(state.output.encode()) <= OUTPUT_MAX_BYTES
    assert state.output.startswith("xxxx")
    assert "of 100000 bytes" in state.output
    state.record(P, "bad \udcff byte", 2.0)
    assert state.output == "bad ? byte"


# ---------------------------------------------------------------------------- model


class Model:
    """Consul's rules stated over the whole history rather than with counters."""

    def __init__(
        self, now: float, initial: Status, ts: int, tf: int, ttl: float | None, dereg: float | None
    ) -> None:
        self.status, self.output = initial, ""
        self.ts, self.tf, self.ttl, self.dereg = ts, tf, ttl, dereg
        self.history: list[bool] = []  # True for a failure
        self.critical_since = now if initial is C else None
        self.ttl_deadline = now + ttl if ttl is not None else None
        self.note = ""

    def apply(self, status: Status, output: str, now: float) -> bool:
        self.output = output
        if status is self.status:
            return False
        self.status = status
        self.critical_since = now if status is C else None
        return True

    def record(self, result: Status, output: str, now: float) -> bool:
        failure = result is C
        self.history.append(failure)
        streak = len(list(itertools.takewhile(lambda f: f == failure, reversed(self.history))))
        never_opposite = all(f == failure for f in self.history)
        if never_opposite or streak >= (self.tf if failure else self.ts):
            return self.apply(result, output, now)
        return False

    def ttl_update(self, status: Status, note: str, now: float) -> bool:
        assert self.ttl is not None
        self.ttl_deadline = now + self.ttl
        self.note = note
        return self.apply(status, note, now)

    def expire(self, now: float) -> bool:
        if self.ttl_deadline is None or now < self.ttl_deadline:
            return False
        self.ttl_deadline = None
        suffix = f" (last output before timeout follows): {self.note}" if self.note else ""
        return self.apply(C, TTL_EXPIRED + suffix, now)

    def deadlines(self) -> list[float]:
        out = [] if self.ttl_deadline is None else [self.ttl_deadline]
        if self.critical_since is not None and self.dereg is not None:
            out.append(self.critical_since + self.dereg)
        return out


class CheckStateMachine(RuleBasedStateMachine):
    now = 0.0
    state: CheckState
    model: Model

    @initialize(
        initial=statuses,
        ts=st.integers(1, 4),
        tf=st.integers(1, 4),
        ttl=st.none() | st.sampled_from([0.5, 1.0, 3.0]),
        dereg=st.none() | st.sampled_from([0.5, 2.0, 5.0]),
    )
    def create(
        self, initial: Status, ts: int, tf: int, ttl: float | None, dereg: float | None
    ) -> None:
        self.now = 100.0
        kwargs = {
            "initial_status": initial,
            "success_before_passing": ts,
            "failures_before_critical": tf,
            "ttl_s": ttl,
            "deregister_critical_after_s": dereg,
        }
        self.state = CheckState(now=self.now, **kwargs)  # type: ignore[arg-type]
        self.model = Model(self.now, initial, ts, tf, ttl, dereg)

    @rule(dt=st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0, 2.5]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(result=statuses, output=st.sampled_from(["", "a", "b", "c"]))
    def record(self, result: Status, output: str) -> None:
        got = self.state.record(result, output, self.now)
        assert got == self.model.record(result, output, self.now)

    @precondition(lambda self: self.model.ttl is not None)
    @rule(status=statuses, note=st.sampled_from(["", "n1", "n2"]))
    def ttl_update(self, status: Status, note: str) -> None:
        got = self.state.ttl_update(status, note, self.now)
        assert got == self.model.ttl_update(status, note, self.now)

    @rule()
    def expire(self) -> None:
        assert self.state.expire(self.now) == self.model.expire(self.now)

    @invariant()
    def agrees(self) -> None:
        assert (self.state.status, self.state.output) == (self.model.status, self.model.output)
        assert self.state.critical_since == self.model.critical_since
        deadlines = self.model.deadlines()
        assert self.state.next_deadline() == (min(deadlines) if deadlines else None)
        since, after = self.model.critical_since, self.model.dereg
        due = since is not None and after is not None and self.now >= since + after
        assert self.state.deregister_due(self.now) == due


CheckStateMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40)
TestCheckState = CheckStateMachine.TestCase
