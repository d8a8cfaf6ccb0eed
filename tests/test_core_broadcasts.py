"""The transmit-limited queue: limits, invalidation, budget, priority, bounds."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from meshlite._core.broadcasts import (
    MIN_QUEUE_DEPTH,
    RecentSet,
    TransmitLimitedQueue,
    retransmit_limit,
)


def test_retransmit_limit_matches_memberlist() -> None:
    # memberlist util_test.go TestRetransmitLimit
    assert retransmit_limit(3, 0) == 0
    assert retransmit_limit(3, 1) == 3
    assert retransmit_limit(3, 99) == 6
    assert retransmit_limit(4, 1000) == 16


def test_each_broadcast_is_sent_limit_times_then_dropped() -> None:
    q = TransmitLimitedQueue(retransmit_mult=2, num_nodes=lambda: 5)  # limit 2
    q.queue("a", b"aaaa")
    assert q.get_broadcasts(0, 100) == [b"aaaa"]
    assert q.get_broadcasts(0, 100) == [b"aaaa"]
    assert q.get_broadcasts(0, 100) == [] and len(q) == 0


def test_a_newer_broadcast_with_the_same_key_replaces_the_old() -> None:
    q = TransmitLimitedQueue(2, lambda: 5)
    q.queue("node:b", b"old")
    q.get_broadcasts(0, 100)
    q.queue("node:b", b"newer")
    assert len(q) == 1 and q.transmits("node:b") == 0
    assert q.get_broadcasts(0, 100) == [b"newer"]


def test_least_transmitted_then_largest_then_newest_first() -> None:
    q = TransmitLimitedQueue(10, lambda: 5)
    q.queue("old", b"x" * 10)
    q.get_broadcasts(0, 10)  # "old" now has 1 transmit
    q.queue("small", b"s" * 3)
    q.queue("big", b"b" * 6)
    q.queue("big2", b"c" * 6)
    assert q.get_broadcasts(0, 15) == [b"c" * 6, b"b" * 6, b"s" * 3]
    assert q.get_broadcasts(0, 10) == [b"x" * 10]


def test_budget_counts_the_per_message_overhead_and_skips_what_does_not_fit() -> None:
    q = TransmitLimitedQueue(10, lambda: 5)
    q.queue("a", b"a" * 8)
    q.queue("b", b"b" * 4)
    assert q.get_broadcasts(2, 9) == [b"b" * 4]  # 8 + 2 > 9, but 4 + 2 fits
    assert q.get_broadcasts(2, 0) == []


def test_queue_is_capped_dropping_the_most_transmitted_first() -> None:
    n = [1]
    q = TransmitLimitedQueue(100, lambda: n[0])
    for i in range(MIN_QUEUE_DEPTH):
        q.queue(f"k{i}", b"v")
    q.get_broadcasts(0, 1)  # k{MIN-1} (newest) now has one transmit
    q.queue("extra", b"v")
    assert len(q) == MIN_QUEUE_DEPTH and f"k{MIN_QUEUE_DEPTH - 1}" not in q and "extra" in q
    n[0] = MIN_QUEUE_DEPTH  # a bigger cluster allows a deeper queue: 2 * n
    q.queue("more", b"v")
    assert len(q) == MIN_QUEUE_DEPTH + 1


def test_recent_set_forgets_the_oldest() -> None:
    r = RecentSet(3)
    assert [r.add(k) for k in "abca"] == [True, True, True, False]
    assert r.add("d") and "a" not in r and "b" in r and len(r) == 3


# ------------------------------------------------------------------------- model


@dataclasses.dataclass
class _Model:
    data: bytes
    transmits: int
    order: int

    def rank(self) -> tuple[int, int, int]:
        return (self.transmits, -len(self.data), -self.order)


class QueueMachine(RuleBasedStateMachine):
    """The queue against a dict of ``key -> (data, transmits, order)``."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 3
        self.q = TransmitLimitedQueue(2, lambda: self.n)
        self.model: dict[str, _Model] = {}
        self.order = 0

    @rule(key=st.sampled_from("abcdefgh"), size=st.integers(1, 40))
    def queue(self, key: str, size: int) -> None:
        self.order += 1
        data = key.encode() * size
        self.q.queue(key, data)
        self.model[key] = _Model(data, 0, self.order)

    @rule(n=st.integers(0, 2000))
    def resize(self, n: int) -> None:
        self.n = n

    @rule(overhead=st.integers(0, 5), budget=st.integers(-5, 120))
    def get(self, overhead: int, budget: int) -> None:
        limit = retransmit_limit(2, self.n)
        out = self.q.get_broadcasts(overhead, budget)
        assert sum(len(d) + overhead for d in out) <= max(budget, 0)
        by_data = {m.data: k for k, m in self.model.items()}
        picked = [by_data[d] for d in out]
        assert len(set(picked)) == len(picked)
        # Greedy in priority order: whatever was skipped did not fit at its turn.
        used = 0
        for key in sorted(self.model, key=lambda k: self.model[k].rank()):
            free = budget - used - overhead
            size = len(self.model[key].data)
            if key in picked:
                assert size <= free
                used += size + overhead
            else:
                assert free <= 0 or size > free
        for key in picked:
            self.model[key].transmits += 1
            if self.model[key].transmits >= limit:
                del self.model[key]

    @invariant()
    def same_contents(self) -> None:
        assert len(self.q) == len(self.model) == len(self.q._ranked)
        for key, m in self.model.items():
            assert self.q.transmits(key) == m.transmits


TestQueue = QueueMachine.TestCase
TestQueue.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_clusters_transmit_nothing_or_a_little(n: int) -> None:
    q = TransmitLimitedQueue(4, lambda: n)
    q.queue("k", b"v")
    sent = [q.get_broadcasts(0, 10) for _ in range(6)]
    assert sum(len(s) for s in sent) == (1 if n == 0 else 4)
