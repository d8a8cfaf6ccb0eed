"""A Raft-log writer process for the SIGKILL tests, and the model both sides replay.

``python tests/raft_storage_writer.py PATH SEED durable|normal``

Opens the store at PATH, restores what it holds, prints ``ready``, then saves forever (up
to ``MAX_OPS``): appends of 1-16 entries, conflicting rewrites of the tail under a new
term, snapshots (inside the log, or beyond it), compactions.  Before each operation it
prints the intent as one JSON line; after ``save``/``compact`` returns it prints ``ack``.
Entry and snapshot payloads are a function of (index, term), so the parent rebuilds the
exact expected contents from the intents alone.  The parent SIGKILLs it at a random moment.
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any

import attrs

from meshlite._core.raft.types import EMPTY_HARD_STATE, Entry, EntryKind, HardState, Snapshot
from meshlite._raft_storage import RaftStorage, Write

MAX_OPS = 200_000  # a backstop: the parent kills us long before
VOTERS = ("a", "b", "c")


class RejectedError(Exception):
    """The model refuses a write the store must refuse too."""


def payload(index: int, term: int) -> bytes:
    """Deterministic bytes of varied size (a few hundred bytes to ~3 KiB)."""
    size = 100 + (index * 7919 + term * 104729) % 3000
    return random.Random(index * 1_000_003 + term).randbytes(size)


def entry(index: int, term: int) -> Entry:
    kinds = (EntryKind.NORMAL, EntryKind.NORMAL, EntryKind.CONFIG, EntryKind.NOOP)
    return Entry(index=index, term=term, kind=kinds[index % 4], data=payload(index, term))


def snapshot(index: int, term: int) -> Snapshot:
    return Snapshot(index=index, term=term, voters=VOTERS, data=payload(-index, term))


@attrs.define
class Model:
    """What a Raft store must hold, as plain dicts: the rules in their simplest form."""

    hard_state: HardState = EMPTY_HARD_STATE
    snap: Snapshot | None = None
    log: dict[int, Entry] = attrs.Factory(dict)  # may hold entries the snapshot covers

    @classmethod
    def loaded(cls, hs: HardState, snap: Snapshot | None, entries: list[Entry]) -> Model:
        return cls(hs, snap, {e.index: e for e in entries})

    def covered(self) -> int:
        return 0 if self.snap is None else self.snap.index

    def last(self) -> int:
        return max([self.covered(), *self.log])

    def copy(self) -> Model:
        return Model(self.hard_state, self.snap, dict(self.log))

    def load(self) -> tuple[HardState, Snapshot | None, list[Entry]]:
        after = self.covered()
        return self.hard_state, self.snap, [self.log[i] for i in sorted(self.log) if i > after]

    def apply(self, write: Write) -> None:
        """Apply in place; raise :class:`RejectedError` (leaving a partial state) if invalid."""
        if write.snapshot is not None:
            self._snapshot(write.snapshot)
        if write.entries:
            first = write.entries[0].index
            indexes = [e.index for e in write.entries]
            if indexes != list(range(first, first + len(indexes))):
                raise RejectedError("not consecutive")
            if not self.covered() < first <= self.last() + 1:
                raise RejectedError("does not fit")
            for index in [i for i in self.log if i >= first]:
                del self.log[index]
            self.log.update((e.index, e) for e in write.entries)
        if write.hard_state is not None:
            self.hard_state = write.hard_state

    def _snapshot(self, snap: Snapshot) -> None:
        if self.snap is not None and snap.index <= self.snap.index:
            if (snap.index, snap.term) != (self.snap.index, self.snap.term):
                raise RejectedError("older snapshot")
            return
        at = self.log.get(snap.index)
        if at is None or at.term != snap.term:
            self.log.clear()
        self.snap = snap

    def compact(self, upto: int) -> None:
        if upto > self.covered():
            raise RejectedError("compaction past the snapshot")
        for index in [i for i in self.log if i <= upto]:
            del self.log[index]


# -- intents: one JSON line per operation ---------------------------------------------


def intent_of(op: Write | int) -> dict[str, Any]:
    if isinstance(op, int):
        return {"compact": op}
    hs, snap, entries = op.hard_state, op.snapshot, op.entries
    return {
        "hs": None if hs is None else [hs.term, hs.vote, hs.commit],
        "snap": None if snap is None else [snap.index, snap.term],
        "entries": [[e.index, e.term] for e in entries],
    }


def op_of(intent: dict[str, Any]) -> Write | int:
    if "compact" in intent:
        return int(intent["compact"])
    hs = None if intent["hs"] is None else HardState(*intent["hs"])
    snap = None if intent["snap"] is None else snapshot(*intent["snap"])
    return Write(hs, tuple(entry(i, t) for i, t in intent["entries"]), snap)


def apply_op(model: Model, op: Write | int) -> None:
    if isinstance(op, int):
        model.compact(op)
    else:
        model.apply(op)


def next_op(rng: random.Random, model: Model) -> Write | int:
    """A plausible Raft workload: mostly appends, sometimes conflicts and snapshots."""
    term, last, covered = max(1, model.hard_state.term), model.last(), model.covered()
    roll = rng.random()
    snap = None
    if roll < 0.75:
        first, count = last + 1, rng.randint(1, 16)
    elif roll < 0.87:  # a new leader overwrites our uncommitted tail
        term += 1
        first, count = max(covered + 1, last - rng.randint(0, 5)), rng.randint(1, 8)
    elif roll < 0.94 and last > covered:  # a local snapshot the log agrees with
        index = rng.randint(covered + 1, last)
        return Write(None, (), snapshot(index, model.log[index].term))
    elif roll < 0.97:
        return rng.randint(0, covered)
    else:  # a leader's snapshot beyond our log: it replaces the log
        term += 1
        snap = snapshot(last + rng.randint(1, 5), term)
        first, count = snap.index + 1, rng.randint(0, 4)
    hs = HardState(term=term, vote=VOTERS[term % 3], commit=max(covered, first - 1))
    return Write(hs, tuple(entry(first + k, term) for k in range(count)), snap)


def main(path: str, seed: int, durable: bool) -> None:
    store = RaftStorage.open(path, durable=durable)
    model = Model.loaded(*store.load())
    rng = random.Random(seed)
    print("ready", flush=True)
    for _ in range(MAX_OPS):
        op = next_op(rng, model)
        print(json.dumps(intent_of(op)), flush=True)
        if isinstance(op, int):
            store.compact(op)
        else:
            store.save_many([op])
        apply_op(model, op)
        print("ack", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "durable")
