"""A linearizability checker for histories of key/value operations (Wing & Gong, Lowe).

Theory of operation
-------------------
A history is linearizable (Herlihy & Wing 1990) if every operation can be given a
single instant between its invocation and its completion such that, taken in the
order of those instants, the operations are a legal sequential run of the model —
here a register per key with read, write and compare-and-swap.  Linearizability is
*local* (Herlihy & Wing, Theorem 1; Porcupine calls it P-compositionality): a history
of independent keys is linearizable iff each key's sub-history is, so each key is
checked alone, which turns one exponential search into many small ones.  (A
multi-key transaction couples keys; record it per key only if that is what you mean.)

Per key, the search (``_wgl.py``) is the Wing & Gong algorithm with Lowe's memoization, as
Porcupine implements it (``checker.go``): the invocation and completion events, sorted
by time (invocations first on ties, so touching intervals count as concurrent), form
a doubly linked list.  Scanning from the front, each invocation is a candidate to
linearize next: if the model accepts it from the current state, and the pair
(*set of operations linearized so far*, *resulting state*) was never reached before,
it is lifted out of the list (with its completion) and pushed on a stack, and the scan
restarts.  Reaching a completion event means that operation had to be linearized
already and none of the candidates before it worked: pop the stack (undo the last
choice) and try the next candidate after it.  An empty stack there means no
linearization exists.  The memo set (a bit set as a Python ``int``, plus the state)
is what keeps the search from retrying equivalent orders, which would otherwise make
it factorial.

One pruning goes beyond Porcupine.  A *pure* operation — one that completed and leaves
any state as it found it: a read, a CAS that answered ``False`` — is a forced choice
when it is legal: whenever some linearization of the remaining operations exists, one
exists that starts with it (it is a candidate, so it may go first in real time; it is
legal in the current state, and wherever it goes it changes nothing for the rest).
So the search takes a legal pure candidate before any other, without branching; and
when it backtracks over one, the configuration before it has no linearization either,
so it backtracks past it at once.  In read-heavy histories this removes most of the
branching.

An operation that never completed (the client crashed or timed out) may or may not
have taken effect.  Its completion is placed at +infinity with an unknown result: it
may be linearized anywhere after its invocation, or never.  So the search succeeds as
soon as the scan reaches such a completion: every completed operation is in the
stack by then (their completions come earlier and would have stopped the scan).  An
incomplete read has no effect and is dropped before the search.

Incomplete writes are what make the search blow up: each stays a candidate forever,
so the search may try every subset of them.  Leaving any of them out is always
allowed (an incomplete operation may never take effect), so a linearization found
without some of them is a linearization of the whole history.  For the register model
the check therefore first searches without the incomplete writes and CAS whose value
no other operation references (no read saw it, no CAS expected it): such a write can
only matter by making some CAS fail, which is rare.  Only if that search finds no
linearization is the full history searched (Knossos and Porcupine always search the
full one; with a few dozen unacknowledged writes on a key that can take minutes).

The search is exponential in the worst case, so it takes a budget (steps and wall
time) and answers ``unknown`` instead of hanging; a key found illegal makes the whole
history illegal whatever the budget did to other keys (keys are searched smallest
first, so the cheap ones are settled before a large one can exhaust the budget).
What costs is concurrency per key — operations in flight on one key at once, and
every incomplete operation counts as in flight forever after its invocation — not
length: thousands of operations with ten in flight take well under a second.

Recording a KV store (``History`` does the bookkeeping, Jepsen-style): write unique
values, so that a value names the write that made it; then Consul's ``cas=<index>``
put, issued after reading value ``v`` at that index, is ``cas(expected=v)``,
``cas=0`` is ``cas(expected=None)``, and a delete is a write of ``None`` (on keys no
lock touches: an acquire or release moves the index without changing the value).  An
operation refused before it could reach the log is removed (``fail``); one whose
outcome is unknown (timeout, crashed client, lost leader) is left incomplete.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, Protocol

import attrs

from meshlite.errors import ConfigError
from meshlite.testing._wgl import Budget, Verdict, search

__all__ = [
    "REGISTER",
    "CheckResult",
    "History",
    "Model",
    "Operation",
    "RegisterModel",
    "Verdict",
    "cas",
    "check",
    "read",
    "write",
]

KINDS = ("read", "write", "cas")
# A step is one candidate scanned or one backtrack; Python does about 10^6 a second, so
# the default budget bounds a hopeless key to seconds while far exceeding what the
# histories of a simulation run (hundreds of operations per key) need.
DEFAULT_MAX_STEPS = 5_000_000


@attrs.frozen
class Operation:
    """One operation on ``key``: invoked at ``call_s``, completed at ``return_s``.

    ``kind`` is ``read`` (``result`` = the value seen, ``None`` for a missing key),
    ``write`` (``value`` written; ``None`` deletes) or ``cas`` (``expected`` ->
    ``value``, ``result`` = whether it swapped; ``expected=None`` is create-only).
    ``return_s is None``: never completed, so it may or may not have taken effect.
    """

    key: str
    kind: str
    call_s: float
    return_s: float | None = None
    value: Hashable = None
    expected: Hashable = None
    result: Hashable = None
    client: Hashable = None


def read(key: str, result: Hashable, call_s: float, return_s: float | None) -> Operation:
    return Operation(key, "read", call_s, return_s, result=result)


def write(key: str, value: Hashable, call_s: float, return_s: float | None) -> Operation:
    return Operation(key, "write", call_s, return_s, value=value)


def cas(
    key: str, expected: Hashable, new: Hashable, ok: bool | None, call_s: float, ret: float | None
) -> Operation:
    return Operation(key, "cas", call_s, ret, value=new, expected=expected, result=ok)


class Model(Protocol):
    """A sequential specification: ``step`` says if ``op`` may run in ``state``, and
    the state after; an incomplete ``op`` (``return_s is None``) has an unknown result.
    ``pure`` enables the forced-choice pruning (module doc)."""

    def init(self) -> Hashable: ...

    def step(self, state: Any, op: Operation) -> tuple[bool, Hashable]: ...

    def pure(self, op: Operation) -> bool:
        """True only if ``op`` can change no state at all (``False`` is always safe)."""
        ...


class RegisterModel:
    """One register per key, starting absent (``None``)."""

    def init(self) -> Hashable:
        return None

    def step(self, state: Any, op: Operation) -> tuple[bool, Hashable]:
        done = op.return_s is not None
        if op.kind == "write":
            return True, op.value
        if op.kind == "read":
            return (not done or op.result == state), state
        if state == op.expected:
            return (not done or op.result is True), op.value
        return (not done or op.result is False), state

    def pure(self, op: Operation) -> bool:
        done = op.return_s is not None
        return done and (op.kind == "read" or (op.kind == "cas" and op.result is False))


REGISTER = RegisterModel()


@attrs.frozen
class CheckResult:
    """The verdict, per key and overall; for an illegal key, the longest linearizable
    prefix the search found (what a debugger wants to look at first)."""

    verdict: Verdict
    per_key: Mapping[str, Verdict]
    failed_key: str | None = None
    longest: tuple[Operation, ...] = ()
    steps: int = 0

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK

    def explain(self) -> str:
        if self.failed_key is None:
            return f"{self.verdict.value} ({len(self.per_key)} keys, {self.steps} steps)"
        lines = [f"key {self.failed_key!r} is not linearizable; longest linearizable prefix:"]
        lines += [f"  {op}" for op in self.longest] or ["  (none)"]
        return "\n".join(lines)


def _unreferenced_writes_left_out(ops: list[Operation]) -> list[Operation]:
    """``ops`` without the incomplete writes and CAS whose value nothing references."""
    seen = {op.result for op in ops if op.kind == "read"}
    seen.update(op.expected for op in ops if op.kind == "cas")
    return [op for op in ops if op.return_s is not None or op.kind == "read" or op.value in seen]


def _check_key(ops: list[Operation], model: Model, budget: Budget) -> tuple[Verdict, list[int]]:
    if isinstance(model, RegisterModel):
        fewer = _unreferenced_writes_left_out(ops)
        if len(fewer) < len(ops) and _search(fewer, model, budget)[0] is Verdict.OK:
            return Verdict.OK, []
    return _search(ops, model, budget)


def _search(ops: list[Operation], model: Model, budget: Budget) -> tuple[Verdict, list[int]]:
    if budget.left <= 0:
        return Verdict.UNKNOWN, []
    return search(
        [op.call_s for op in ops],
        [op.return_s for op in ops],
        [model.pure(op) for op in ops],
        model.init(),
        lambda state, i: model.step(state, ops[i]),
        budget,
    )


def _validate(op: Operation, model: Model | None = None) -> None:
    if isinstance(model, RegisterModel) and op.kind not in KINDS:
        raise ConfigError(f"operation kind must be one of {KINDS}, not {op.kind!r}")
    if not math.isfinite(op.call_s) or (
        op.return_s is not None and not op.call_s <= op.return_s < math.inf
    ):
        raise ConfigError(f"an operation must complete after it starts, finitely: {op}")


def check(
    history: Iterable[Operation],
    model: Model = REGISTER,
    *,
    max_steps: int = DEFAULT_MAX_STEPS,
    timeout_s: float | None = None,
) -> CheckResult:
    """Check ``history`` key by key (see the module doc); never runs past the budget."""
    by_key: dict[str, list[Operation]] = {}
    for op in history:
        _validate(op, model)
        if op.kind == "read" and op.return_s is None:
            continue  # an incomplete read changes nothing and constrains nothing
        by_key.setdefault(op.key, []).append(op)
    budget = Budget(max_steps, timeout_s)
    per_key: dict[str, Verdict] = {}
    failed: tuple[str, list[int]] | None = None
    # Small keys first: they cost little, and an illegal one settles the verdict even
    # if a large key then exhausts the budget.
    for key in sorted(by_key, key=lambda k: (len(by_key[k]), k)):
        verdict, longest = _check_key(by_key[key], model, budget)
        per_key[key] = verdict
        if verdict is Verdict.ILLEGAL and failed is None:
            failed = (key, longest)
    if failed is not None:
        key, longest = failed
        ops = tuple(by_key[key][i] for i in longest)
        return CheckResult(Verdict.ILLEGAL, per_key, key, ops, budget.used)
    verdict = Verdict.UNKNOWN if Verdict.UNKNOWN in per_key.values() else Verdict.OK
    return CheckResult(verdict, per_key, steps=budget.used)


class History:
    """Records operations as a test runs them (Jepsen's invoke / ok / fail / info).

    ``h = hist.invoke("read", key, now_s=t)`` when a client starts an operation;
    ``hist.complete(h, now_s=t2, result=...)`` when it answers;
    ``hist.fail(h)`` when it surely did not happen (refused before reaching the log);
    nothing at all when the outcome is unknown (timeout, crash): it stays incomplete.
    """

    def __init__(self) -> None:
        self._ops: dict[int, Operation] = {}
        self._next = 0

    def invoke(
        self,
        kind: str,
        key: str,
        *,
        now_s: float,
        value: Hashable = None,
        expected: Hashable = None,
        client: Hashable = None,
    ) -> int:
        op = Operation(key, kind, now_s, None, value, expected, None, client)
        _validate(op)
        handle, self._next = self._next, self._next + 1
        self._ops[handle] = op
        return handle

    def complete(self, handle: int, *, now_s: float, result: Hashable = None) -> None:
        op = attrs.evolve(self._ops[handle], return_s=now_s, result=result)
        _validate(op)
        self._ops[handle] = op

    def fail(self, handle: int) -> None:
        del self._ops[handle]

    def operations(self) -> list[Operation]:
        return list(self._ops.values())

    def check(self, model: Model = REGISTER, **budget: Any) -> CheckResult:
        return check(self.operations(), model, **budget)
