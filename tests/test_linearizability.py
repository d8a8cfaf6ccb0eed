"""The linearizability checker, checked: known good and known bad histories, generated ones."""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Hashable

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlite.errors import ConfigError
from meshlite.testing.linearizability import (
    REGISTER,
    History,
    Operation,
    Verdict,
    cas,
    check,
    read,
    write,
)

K = "k"


# ----------------------------------------------------------------------------- by hand


def test_sequential_history_is_linearizable() -> None:
    h = [write(K, 1, 0, 1), read(K, 1, 2, 3), cas(K, 1, 2, True, 4, 5), read(K, 2, 6, 7)]
    r = check(h)
    assert r.ok and r.per_key == {K: Verdict.OK}


def test_empty_history_and_initial_read() -> None:
    assert check([]).ok
    assert check([read(K, None, 0, 1)]).ok


def test_concurrent_read_may_see_old_or_new() -> None:
    for seen in (None, 1):
        assert check([write(K, 1, 0, 10), read(K, seen, 2, 3)]).ok


def test_porcupine_readme_examples() -> None:
    """Porcupine's two register examples (its README), with 0 as the initial value."""
    good = [write(K, 0, -2, -1), write(K, 100, 0, 100), read(K, 100, 25, 75), read(K, 0, 30, 60)]
    assert check(good).ok
    bad = [write(K, 0, -2, -1), write(K, 200, 0, 100), read(K, 200, 10, 30), read(K, 0, 40, 90)]
    r = check(bad)
    assert r.verdict is Verdict.ILLEGAL and r.failed_key == K


def test_stale_read_after_a_completed_write_is_illegal() -> None:
    assert not check([write(K, 1, 0, 1), read(K, None, 2, 3)]).ok


def test_two_cas_from_the_same_value_cannot_both_win() -> None:
    base = [write(K, 0, 0, 1)]
    both = [cas(K, 0, 1, True, 2, 5), cas(K, 0, 2, True, 2, 5)]
    assert check(base + both).verdict is Verdict.ILLEGAL
    one = [cas(K, 0, 1, True, 2, 5), cas(K, 0, 2, False, 2, 5)]
    assert check(base + one).ok
    # A failed CAS must have seen another value: alone after the write, it cannot fail.
    assert not check([*base, cas(K, 0, 1, False, 2, 3)]).ok


def test_create_only_cas() -> None:
    assert check([cas(K, None, 1, True, 0, 1), cas(K, None, 2, False, 2, 3)]).ok
    assert not check([cas(K, None, 1, True, 0, 1), cas(K, None, 2, True, 2, 3)]).ok


def test_a_value_never_written_is_illegal() -> None:
    assert not check([write(K, 1, 0, 1), read(K, 7, 0.5, 3)]).ok


def test_lost_acknowledged_write_is_illegal() -> None:
    h = [write(K, 1, 0, 1), write(K, 2, 0.5, 1.5), read(K, 2, 2, 3), read(K, 1, 4, 5)]
    r = check(h)
    assert r.verdict is Verdict.ILLEGAL
    assert len(r.longest) == 3 and "not linearizable" in r.explain()


def test_incomplete_operations_may_or_may_not_have_happened() -> None:
    crashed = write(K, 1, 2, None)
    assert check([write(K, 0, 0, 1), crashed, read(K, 1, 5, 6)]).ok
    assert check([write(K, 0, 0, 1), crashed, read(K, 0, 5, 6)]).ok
    # ... but once seen it stays, and it cannot take effect before it was invoked.
    assert not check([write(K, 0, 0, 1), crashed, read(K, 1, 5, 6), read(K, 0, 7, 8)]).ok
    assert not check([write(K, 0, 0, 1), read(K, 1, 1.5, 1.8), crashed]).ok


def test_incomplete_cas_takes_effect_only_if_it_could() -> None:
    base = [write(K, 0, 0, 1), cas(K, 0, 1, None, 2, None)]
    assert check([*base, read(K, 1, 3, 4)]).ok
    assert not check([*base, read(K, 1, 3, 4), read(K, 0, 5, 6)]).ok
    other = [write(K, 5, 0, 1), cas(K, 0, 1, None, 2, None), read(K, 1, 3, 4)]
    assert not check(other).ok
    # It may fail when invoked and succeed later: it is no forced no-op.
    late = [cas(K, 2, 1, None, 0, None), write(K, 2, 1, 2), read(K, 1, 3, 4)]
    assert check(late).ok


def test_keys_are_checked_independently() -> None:
    """As one register this is illegal (y's read sees x's value); as two keys it is fine."""
    h = [write("x", 1, 0, 1), write("y", 2, 2, 3), read("x", 1, 4, 5), read("y", 2, 4, 5)]
    r = check(h)
    assert r.ok and set(r.per_key) == {"x", "y"}
    bad = [*h, read("y", None, 6, 7)]
    r = check(bad)
    assert r.failed_key == "y" and r.per_key["x"] is Verdict.OK


def _hopeless(n: int) -> list[Operation]:
    """n concurrent writes, then a read of a value none wrote: the search must try
    every subset-and-last-writer pair before it can say illegal."""
    return [write(K, i, 0, 50) for i in range(n)] + [read(K, "never", 100, 101)]


def test_step_budget_answers_unknown() -> None:
    assert check(_hopeless(6)).verdict is Verdict.ILLEGAL
    r = check(_hopeless(22), max_steps=50_000)
    assert r.verdict is Verdict.UNKNOWN and r.per_key == {K: Verdict.UNKNOWN}


def test_time_budget_answers_unknown() -> None:
    t0 = time.monotonic()
    r = check(_hopeless(22), max_steps=10**12, timeout_s=0.2)
    assert r.verdict is Verdict.UNKNOWN
    assert time.monotonic() - t0 < 5.0


def test_an_illegal_key_wins_over_an_unknown_one() -> None:
    h = [*_hopeless(22), write("z", 1, 0, 1), read("z", 2, 2, 3)]
    h = [attrs.evolve(op, key="a") if op.key == K else op for op in h]
    r = check(h, max_steps=50_000)
    assert r.verdict is Verdict.ILLEGAL and r.failed_key == "z"


def test_misuse_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        check([Operation(K, "append", 0, 1)])
    with pytest.raises(ConfigError):
        check([write(K, 1, 5, 4)])
    with pytest.raises(ConfigError):
        check([write(K, 1, float("nan"), None)])


def test_history_recorder() -> None:
    hist = History()
    w = hist.invoke("write", K, now_s=0, value=1)
    r = hist.invoke("read", K, now_s=0.5)
    lost = hist.invoke("write", K, now_s=0.6, value=9)
    gone = hist.invoke("write", K, now_s=0.7, value=8)
    hist.complete(w, now_s=1)
    hist.complete(r, now_s=2, result=1)
    hist.fail(gone)
    assert len(hist.operations()) == 3
    assert hist.operations()[2].return_s is None and lost == 2
    assert hist.check().ok
    c = hist.invoke("cas", K, now_s=3, expected=1, value=2)
    hist.complete(c, now_s=4, result=False)
    assert hist.check().ok  # the crashed write of 9 may have come first
    stale = hist.invoke("read", K, now_s=5)
    hist.complete(stale, now_s=6, result=None)
    assert not hist.check().ok


def test_a_long_history_checks_fast() -> None:
    """2,000 operations on 4 keys, about 20 in flight at any time, some crashed."""
    rng = random.Random(4)
    ops = _sequential_history(rng, 2000, [f"k{i}" for i in range(4)], spread=10.0)
    t0 = time.monotonic()
    r = check(ops, timeout_s=60)
    assert r.ok, r.explain()
    assert time.monotonic() - t0 < 30


# ----------------------------------------------------------------------------- generated


def _sequential_history(
    rng: random.Random, n: int, keys: list[str], spread: float, crash_p: float = 0.1
) -> list[Operation]:
    """Run n operations one at a time on real registers, each at instant i, then widen
    every interval around its instant at random: linearizable by construction."""
    state: dict[str, Hashable] = {}
    ops: list[Operation] = []
    for i in range(n):
        key = rng.choice(keys)
        t = float(i)
        call_s, ret_s = t - rng.uniform(0, spread), t + rng.uniform(0, spread)
        kind = rng.choice(["read", "write", "cas"])
        crashed = kind != "read" and rng.random() < crash_p
        took_effect = not crashed or rng.random() < 0.5
        cur = state.get(key)
        if kind == "read":
            ops.append(read(key, cur, call_s, ret_s))
        elif kind == "write":
            ops.append(write(key, ("w", i), call_s, None if crashed else ret_s))
            if took_effect:
                state[key] = ("w", i)
        else:
            expected = cur if rng.random() < 0.6 else rng.choice([None, ("w", rng.randrange(n))])
            swapped = cur == expected
            ok = None if crashed else swapped
            ops.append(cas(key, expected, ("c", i), ok, call_s, None if crashed else ret_s))
            if swapped and took_effect:
                state[key] = ("c", i)
    return ops


@st.composite
def histories(draw: st.DrawFn) -> list[Operation]:
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(1, 40))
    spread = draw(st.sampled_from([0.0, 0.5, 2.0, 6.0]))
    nkeys = draw(st.integers(1, 3))
    return _sequential_history(random.Random(seed), n, ["x", "y", "z"][:nkeys], spread)


@settings(max_examples=300, deadline=None)
@given(histories())
def test_generated_sequential_histories_pass(ops: list[Operation]) -> None:
    r = check(ops, timeout_s=30)
    assert r.ok, r.explain()


def _corrupt(ops: list[Operation], data: st.DataObject) -> list[Operation]:
    """Change one completed read so that no linearization can explain it: a value that
    was never written, or one written only by an operation invoked after the read ended."""
    reads = [i for i, op in enumerate(ops) if op.kind == "read"]
    i = data.draw(st.sampled_from(reads))
    r = ops[i]
    assert r.return_s is not None
    future = [
        op.value for op in ops if op.key == r.key and op.kind != "read" and op.call_s > r.return_s
    ]
    bad: Hashable = data.draw(st.sampled_from([("never", 0), *future]))
    out = list(ops)
    out[i] = attrs.evolve(r, result=bad)
    return out


@settings(max_examples=300, deadline=None)
@given(histories(), st.data())
def test_one_corrupted_read_fails(ops: list[Operation], data: st.DataObject) -> None:
    if not any(op.kind == "read" for op in ops):
        ops = [*ops, read("x", None, -10.0, -9.0)]
    bad = _corrupt(ops, data)
    r = check(bad, timeout_s=30)
    assert r.verdict is Verdict.ILLEGAL, bad


# ----------------------------------------------------------------------------- brute force


def _brute_force(ops: list[Operation]) -> bool:
    """Linearizable by definition: some order of the completed operations plus some of
    the incomplete ones respects real time and runs legally on a register."""
    done = [op for op in ops if op.return_s is not None]
    maybe = [op for op in ops if op.return_s is None and op.kind != "read"]
    for k in range(len(maybe) + 1):
        for extra in itertools.combinations(maybe, k):
            for order in itertools.permutations(done + list(extra)):
                if _legal(order):
                    return True
    return False


def _legal(order: tuple[Operation, ...]) -> bool:
    for a, b in itertools.combinations(order, 2):  # a before b: b must not end before a starts
        if b.return_s is not None and b.return_s < a.call_s:
            return False
    state: Hashable = None
    for op in order:
        ok, state = REGISTER.step(state, op)
        if not ok:
            return False
    return True


@st.composite
def small_random_histories(draw: st.DrawFn) -> list[Operation]:
    """Arbitrary results (not from a real run), so that both verdicts are common."""
    ops = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["read", "write", "cas"]))
        call_s = draw(st.integers(0, 8))
        ret = draw(st.one_of(st.none(), st.integers(call_s, 10)))
        if kind == "read" and ret is None:
            ret = call_s + 1
        value, expected = draw(st.sampled_from([1, 2])), draw(st.sampled_from([None, 1, 2]))
        result = {
            "read": draw(st.sampled_from([None, 1, 2])),
            "cas": None if ret is None else draw(st.booleans()),
            "write": None,
        }[kind]
        ops.append(Operation(K, kind, call_s, ret, value, expected, result))
    return ops


@settings(max_examples=600, deadline=None)
@given(small_random_histories())
def test_the_search_agrees_with_brute_force(ops: list[Operation]) -> None:
    assert check(ops).ok == _brute_force(ops), ops
