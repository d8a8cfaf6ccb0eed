"""The protocol-level SWIM model (``benchmarks/swim_model.py``) that extends the scale plot to
10,000+ peers: it must agree with the real core where both run, and keep its invariants.

The agreement test runs the real core in the simulator at N = 100 (a few seeds) beside the
model (more seeds) and compares medians, so a change to the core's dissemination or
failure detection that the model does not follow fails here.  Everything is seeded: the
outcome is deterministic.  About 20 s, half of it the real core.
"""

from __future__ import annotations

import importlib.util
import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlite._core.broadcasts import retransmit_limit
from meshlite._core.config import SwimConfig
from meshlite._core.suspicion import remaining_suspicion_s, suspicion_params

# numpy comes with the bench extra (matplotlib); the model is vectorised with it.
np = pytest.importorskip("numpy", reason="the SWIM model needs numpy: pip install -e '.[bench]'")
BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
LAN = SwimConfig.lan()


def _load(name: str) -> ModuleType:
    """Import a module from benchmarks/ (not a package) without touching sys.path."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # bench_swim_model imports swim_model by this name
    spec.loader.exec_module(module)
    return module


model = _load("swim_model")
bench = _load("bench_swim_model")


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


# ----------------------------------------------------------------------------- vs the core


def test_model_agrees_with_the_real_core_at_100_peers() -> None:
    core = [bench.core_run(100, 1000 + s, LAN) for s in range(4)]
    runs = bench.model_runs(100, 15, LAN)
    # Dissemination is a few gossip rounds (noisy: 4 core seeds); detection is dominated
    # by the suspicion timeout (tight).
    tolerance = {"join_all_s": 0.3, "user_all_s": 0.3, "detect_first_s": 0.15, "detect_all_s": 0.15}
    report = {k: (median(runs, k), median(core, k)) for k in tolerance}
    for key, (got, want) in report.items():
        assert abs(got - want) <= tolerance[key] * want, f"{key}: model/core {report}"


# ----------------------------------------------------------------------------- formulas


@given(n=st.integers(1, 10**6), confirmations=st.integers(0, 5))
@settings(max_examples=200, deadline=None)
def test_formulas_are_the_cores(n: int, confirmations: int) -> None:
    assert model.retransmit_limit(LAN.retransmit_mult, n) == retransmit_limit(
        LAN.retransmit_mult, n
    )
    k, min_s, max_s = model.suspicion_min_max(LAN, n)
    assert (k, min_s, max_s) == suspicion_params(
        LAN.suspicion_mult, LAN.suspicion_max_timeout_mult, n, LAN.probe_interval_s
    )
    c = min(confirmations, k)
    (timeout,) = model.suspicion_timeout(np.array([c]), k, min_s, max_s)
    assert math.isclose(timeout, remaining_suspicion_s(c, k, 0.0, min_s, max_s), abs_tol=1e-9)


# ----------------------------------------------------------------------------- invariants


@given(n=st.integers(10, 400), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=15, deadline=None)
def test_news_starts_at_its_source_and_reaches_everyone_in_order(n: int, seed: int) -> None:
    user = model.run_user(n, seed, keep_times=True)
    times = user.times
    origin = int(np.flatnonzero(times == 0.0)[0])
    others = np.delete(times, origin)
    assert (others > 0.0).all(), "somebody had the record before its owner published it"
    assert user.first_s == others.min() and (user.all_s == others.max() or user.all_s == math.inf)
    limit = model.retransmit_limit(LAN.retransmit_mult, n)
    assert user.datagrams <= n * limit, "a peer sent the news more than retransmit_limit times"
    join = model.run_join(n, seed, keep_times=True)
    assert (join.times >= 0.0).all()
    assert join.reached == join.targets or join.all_s == math.inf


@given(n=st.integers(10, 400), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=15, deadline=None)
def test_detection_is_never_earlier_than_a_probe_plus_the_minimum_suspicion(
    n: int, seed: int
) -> None:
    det = model.run_detection(n, seed)
    _k, min_s, _max_s = model.suspicion_min_max(LAN, n)
    assert det.reached == det.targets
    assert det.extra["suspect_first_s"] >= LAN.probe_interval_s  # a whole failed probe
    assert det.first_s >= LAN.probe_interval_s + min_s - 1e-9
    assert det.first_s >= LAN.probe_timeout_s + min_s  # the brief's weaker bound
    assert det.all_s >= det.first_s


def test_times_grow_with_n() -> None:
    seeds = range(7)

    def med(fn: Callable[[int, int], Any], n: int) -> float:
        return statistics.median(float(fn(n, s).all_s) for s in seeds)

    for fn in (model.run_join, model.run_user, model.run_detection):
        small, mid, big = (med(fn, n) for n in (30, 300, 3000))
        assert small < mid < big, (fn.__name__, small, mid, big)


def test_same_seed_same_run_and_tick_phases_matter() -> None:
    a, b = model.run_detection(300, 7), model.run_detection(300, 7)
    assert (a.first_s, a.all_s, a.datagrams) == (b.first_s, b.all_s, b.datagrams)
    # Lock-step rounds (news goes on only next round) are much slower than peers ticking
    # at their own phases, as the core's do: the model must keep the phases.
    phased = statistics.median(model.run_join(300, s).all_s for s in range(9))
    lockstep = statistics.median(model.run_join(300, s, slots_per_round=1).all_s for s in range(9))
    assert lockstep > 1.4 * phased
