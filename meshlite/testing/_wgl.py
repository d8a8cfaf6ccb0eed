"""The Wing & Gong / Lowe search for one sub-history (see ``linearizability.py``).

Theory of operation
-------------------
Operations are numbered 0..n-1 and known here only by their times, whether they are
*pure*, and a ``step(state, i) -> (legal, state_after)`` function, so this module knows
nothing of keys or registers.  The events form a doubly linked list over nodes 0 (the
head), then ``2i+1`` (operation i's invocation) and ``2i+2`` (its completion), sorted by
time with invocations first on ties; ``-1`` ends the list.  Lifting an operation
unlinks both of its nodes and unlifting relinks them in reverse order (Knuth's dancing
links), which is what makes backtracking cheap (Lowe 2017, Porcupine's ``checker.go``).

The search keeps the current state, the set of linearized operations (a bit set in a
Python ``int``), a stack of choices and a memo of every (set, state) reached.  At each
new configuration it first looks for a legal pure candidate (a forced choice: see the
module doc of ``linearizability.py``); if the configuration after it was already
explored, the configuration itself is dead and the search backtracks at once.
Otherwise it scans the candidates — invocations before the first completion in the
list — in order, as Wing & Gong do.  Backtracking pops the last choice and keeps
popping while the popped choices were forced.
"""

from __future__ import annotations

import enum
import itertools
import math
import time
from collections.abc import Callable, Hashable, Sequence

__all__ = ["Budget", "Verdict", "search"]

_CLOCK_EVERY = 4096  # steps between two looks at the wall clock
_NONE, _DEAD = 0, -2  # what the forced-choice pass can find besides a node


class Verdict(enum.Enum):
    OK = "ok"
    ILLEGAL = "illegal"
    UNKNOWN = "unknown"  # the budget ran out first


class Budget:
    """Steps and wall time shared by every sub-history of one check."""

    def __init__(self, max_steps: int, timeout_s: float | None) -> None:
        self.left = max_steps
        self.used = 0
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def spend(self, n: int) -> bool:
        """Take ``n`` steps; ``False`` once out of steps or time."""
        self.left -= n
        self.used += n
        if self.left < 0:
            return False
        return self.deadline is None or time.monotonic() < self.deadline


Step = Callable[[Hashable, int], tuple[bool, Hashable]]


class _Search:
    def __init__(
        self,
        calls: Sequence[float],
        returns: Sequence[float | None],
        pure: Sequence[bool],
        init: Hashable,
        step: Step,
    ) -> None:
        order = sorted(
            (t, kind, node)
            for i, (c, r) in enumerate(zip(calls, returns, strict=True))
            for t, kind, node in ((c, 0, 2 * i + 1), (math.inf if r is None else r, 1, 2 * i + 2))
        )
        self.nxt = [-1] * (2 * len(calls) + 1)
        self.prv = [-1] * (2 * len(calls) + 1)
        for a, b in itertools.pairwise([0] + [node for _, _, node in order]):
            self.nxt[a], self.prv[b] = b, a
        self.pending = [r is None for r in returns]
        self.pure = pure
        self.step = step
        self.state = init
        self.linearized = 0
        self.seen: set[tuple[int, Hashable]] = set()
        self.stack: list[tuple[int, Hashable]] = []  # (invocation node, state before)
        self.longest: list[int] = []

    def forced(self) -> int:
        """A legal pure candidate's node, ``_DEAD`` if its successor was explored, or
        ``_NONE``."""
        node = self.nxt[0]
        while node > 0 and node % 2 == 1:  # invocations up to the first completion
            i = (node - 1) // 2
            if self.pure[i] and self.step(self.state, i)[0]:
                return node if (self.linearized | 1 << i, self.state) not in self.seen else _DEAD
            node = self.nxt[node]
        return _NONE

    def try_linearize(self, node: int) -> bool:
        """Linearize the operation invoked at ``node`` if legal and new; lift it."""
        i = (node - 1) // 2
        ok, after = self.step(self.state, i)
        key = (self.linearized | 1 << i, after)
        if not ok or key in self.seen:
            return False
        self.seen.add(key)
        self.stack.append((node, self.state))
        self.state, self.linearized = after, key[0]
        for n in (node, node + 1):  # unlink the invocation and its completion
            self.nxt[self.prv[n]] = self.nxt[n]
            if self.nxt[n] != -1:
                self.prv[self.nxt[n]] = self.prv[n]
        return True

    def backtrack(self) -> int:
        """Undo the last choice, and past every forced one: the node to scan on from,
        or ``-1`` when there is nothing left to undo (no linearization)."""
        if len(self.stack) > len(self.longest):
            self.longest = [(n - 1) // 2 for n, _ in self.stack]
        forced = True
        while forced:
            if not self.stack:
                return -1
            node, self.state = self.stack.pop()
            self.linearized &= ~(1 << (node - 1) // 2)
            for n in (node + 1, node):  # relink in reverse order
                self.nxt[self.prv[n]] = n
                if self.nxt[n] != -1:
                    self.prv[self.nxt[n]] = n
            forced = self.pure[(node - 1) // 2]
        return self.nxt[node]

    def run(self, budget: Budget) -> Verdict:
        node, fresh, steps = self.nxt[0], True, 0
        while self.nxt[0] != -1:
            steps += 1
            if steps % _CLOCK_EVERY == 0 and not budget.spend(_CLOCK_EVERY):
                return Verdict.UNKNOWN
            if fresh:  # a new configuration: a forced choice first, if there is one
                fresh, choice = False, self.forced()
                node = self.nxt[0] if choice == _NONE else choice
            else:
                choice = _NONE
            if choice != _DEAD and node % 2 == 1:
                if self.try_linearize(node):
                    fresh = True
                else:
                    node = self.nxt[node]
                continue
            if choice != _DEAD and self.pending[(node - 1) // 2]:
                break  # every completed operation is linearized; the rest need not be
            node = self.backtrack()
            if node == -1:
                budget.spend(steps % _CLOCK_EVERY)
                return Verdict.ILLEGAL
        budget.spend(steps % _CLOCK_EVERY)
        self.longest = [(n - 1) // 2 for n, _ in self.stack]
        return Verdict.OK


def search(
    calls: Sequence[float],
    returns: Sequence[float | None],
    pure: Sequence[bool],
    init: Hashable,
    step: Step,
    budget: Budget,
) -> tuple[Verdict, list[int]]:
    """Search one sub-history: the verdict, and the longest linearization found
    (complete when the verdict is OK)."""
    s = _Search(calls, returns, pure, init, step)
    verdict = s.run(budget)
    return verdict, s.longest
