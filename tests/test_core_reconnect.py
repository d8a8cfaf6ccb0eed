"""Serf-style reconnect bookkeeping: bounded, expiring, probabilistic."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from meshlite._core.reconnect import MAX_FAILED, Reconnector

A = ("10.0.0.1", 7946)
B = ("10.0.0.2", 7946)


def test_nothing_failed_means_no_attempt_and_the_next_one_is_scheduled() -> None:
    r = Reconnector(interval_s=30, timeout_s=3600, now=0)
    assert r.next_attempt == 30
    assert r.attempt(30, n_alive=5, rng=random.Random(1)) is None
    assert r.next_attempt == 60


def test_a_failed_member_is_retried_until_it_recovers() -> None:
    r = Reconnector(interval_s=30, timeout_s=3600, now=0)
    r.failed("a", A, now=1)
    # with one alive peer (ourselves) and one failed, the probability is 1
    assert r.attempt(30, n_alive=1, rng=random.Random(1)) == A
    r.forget("a")
    assert r.attempt(60, n_alive=1, rng=random.Random(1)) is None


def test_failures_expire_after_the_timeout() -> None:
    r = Reconnector(interval_s=30, timeout_s=100, now=0)
    r.failed("a", A, now=0)
    r.failed("b", B, now=50)
    assert r.attempt(120, n_alive=1, rng=random.Random(3)) == B  # "a" expired at 100
    assert len(r) == 1
    assert r.attempt(151, n_alive=1, rng=random.Random(3)) is None
    assert len(r) == 0


def test_attempts_are_rarer_in_a_large_healthy_mesh() -> None:
    r = Reconnector(interval_s=1, timeout_s=1e9, now=0)
    r.failed("a", A, now=0)
    rng = random.Random(7)
    tries = sum(r.attempt(t, n_alive=100, rng=rng) is not None for t in range(1, 2001))
    assert 5 <= tries <= 50  # about 1 in 100


@given(st.lists(st.integers(0, 5000), max_size=3000))
def test_the_failed_list_is_bounded(names: list[int]) -> None:
    r = Reconnector(interval_s=1, timeout_s=1e9, now=0)
    for t, n in enumerate(names):
        r.failed(f"n{n}", A, now=t)
    assert len(r) <= MAX_FAILED
    assert len(r) == min(len(set(names)), MAX_FAILED)
