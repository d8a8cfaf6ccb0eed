"""Lifeguard: dynamic suspicion timeouts and local health awareness."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshlite._core.awareness import Awareness, failed_probe_delta
from meshlite._core.suspicion import (
    Suspicion,
    remaining_suspicion_s,
    suspicion_params,
    suspicion_timeout_s,
)
from meshlite.errors import ConfigError

# ------------------------------------------------------------------------- suspicion


@pytest.mark.parametrize(
    ("n", "k", "elapsed_s", "expected_s"),
    [  # memberlist suspicion_test.go TestSuspicion_remainingSuspicionTime (min 2 s, max 30 s)
        (0, 3, 0.0, 30.0),
        (1, 3, 2.0, 14.0),
        (2, 3, 3.0, 4.81),
        (3, 3, 4.0, -2.0),
        (4, 3, 5.0, -3.0),
        (5, 3, 10.0, -8.0),
    ],
)
def test_remaining_suspicion_matches_memberlist(
    n: int, k: int, elapsed_s: float, expected_s: float
) -> None:
    assert remaining_suspicion_s(n, k, elapsed_s, 2.0, 30.0) == pytest.approx(expected_s)


_durations = st.floats(0.001, 1000.0, allow_nan=False)


@given(
    k=st.integers(0, 20),
    n=st.integers(0, 30),
    elapsed_s=st.floats(0.0, 100.0),
    lo=_durations,
    factor=st.floats(1.0, 10.0),
)
def test_remaining_suspicion_is_bounded_and_monotone(
    k: int, n: int, elapsed_s: float, lo: float, factor: float
) -> None:
    hi = lo * factor
    total = remaining_suspicion_s(n, k, elapsed_s, lo, hi) + elapsed_s
    assert lo - 1e-9 <= total <= hi + 1e-9
    more = remaining_suspicion_s(n + 1, k, elapsed_s, lo, hi) + elapsed_s
    assert more <= total + 1e-9
    if n >= k:
        assert total == pytest.approx(lo)


def test_suspicion_timeout_matches_memberlist() -> None:
    # memberlist util_test.go TestSuspicionTimeout: suspicionTimeout(3, n, 1s) / 3
    expected = {5: 1.0, 10: 1.0, 50: 1.698, 100: 2.0, 500: 2.698, 1000: 3.0}
    for n, want in expected.items():
        assert suspicion_timeout_s(3, n, 1.0) / 3 == pytest.approx(want)
    assert suspicion_timeout_s(4, 0, 1.0) == 4.0  # never below one log unit


def test_suspicion_params() -> None:
    assert suspicion_params(4, 6, 10, 1.0) == (2, 4.0, 24.0)
    assert suspicion_params(4, 6, 3, 1.0)[0] == 0  # too few peers to confirm: k = 0
    assert suspicion_params(1, 6, 100, 1.0)[0] == 0


def test_confirmations_shrink_the_timer_from_distinct_senders_only() -> None:
    s = Suspicion.start("accuser", k=3, min_s=2.0, max_s=30.0, now=100.0)
    assert s.deadline_s == 130.0
    assert not s.confirm("accuser", 101.0)  # the accuser does not confirm itself
    assert s.confirm("b", 102.0) and s.deadline_s == pytest.approx(116.0)
    assert not s.confirm("b", 102.5)
    assert s.confirm("c", 103.0) and s.deadline_s == pytest.approx(107.81)
    assert s.confirm("d", 104.0) and s.deadline_s == pytest.approx(104.0)  # past min: now
    assert not s.confirm("e", 104.0)  # k reached: no more confirmations
    assert s.confirmations == {"accuser", "b", "c", "d"}


def test_suspicion_without_expected_confirmations_starts_at_min() -> None:
    s = Suspicion.start("a", k=0, min_s=2.0, max_s=30.0, now=0.0)
    assert s.deadline_s == 2.0 and not s.confirm("b", 1.0)


# ------------------------------------------------------------------------- awareness


def test_awareness_matches_memberlist() -> None:
    # memberlist awareness_test.go TestAwareness
    cases = [
        (0, 0, 1.0), (-1, 0, 1.0), (-10, 0, 1.0), (1, 1, 2.0), (-1, 0, 1.0), (10, 7, 8.0),
        (-1, 6, 7.0), (-1, 5, 6.0), (-1, 4, 5.0), (-1, 3, 4.0), (-1, 2, 3.0), (-1, 1, 2.0),
        (-1, 0, 1.0), (-1, 0, 1.0),
    ]  # fmt: skip
    a = Awareness(8)
    for delta, score, timeout_s in cases:
        assert a.apply_delta(delta) == score
        assert a.score == score and a.scale_timeout(1.0) == timeout_s


def test_failed_probe_delta_counts_silent_relays() -> None:
    assert failed_probe_delta(0, 0) == 1  # no relays: the failure itself counts
    assert failed_probe_delta(3, 3) == 0  # every relay nacked: not our fault
    assert failed_probe_delta(3, 1) == 2
    assert failed_probe_delta(3, 5) == 0


def test_awareness_rejects_a_bad_multiplier() -> None:
    with pytest.raises(ConfigError, match="awareness_max_multiplier"):
        Awareness(0)
