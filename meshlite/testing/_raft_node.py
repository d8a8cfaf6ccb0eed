"""One simulated Raft server: a core, its "disk", and a toy state machine.

Theory of operation
-------------------
:class:`SimStorage` is the in-memory twin of ``meshlite._raft_storage.RaftStorage``: the
same rules (entries saved at an existing index replace it and everything after; a
snapshot the stored log disagrees with discards the whole log; ``compact`` trims what a
snapshot covers), without sqlite, so thousands of seeds run in seconds.  What it holds
is exactly what survives a crash: :meth:`SimServer.crash` drops the core and the state
machine, :meth:`SimServer.start` rebuilds both from storage.

:meth:`SimServer.process` is a faithful driver loop (etcd-io/raft ``README.md``'s "usage"
section): for each Ready, persist (hard state, snapshot, entries), only then send the
messages, then apply the snapshot and committed entries, then ``advance``.  With timed
saves, :meth:`SimServer.begin` first does what may precede the save (a leader's sends,
committed entries already durable), as ``meshlite._raft_node`` does.  The state
machine is a digest chain over the applied entries, so two servers' images agree
exactly when they applied the same sequence; its snapshot is ``[index, digest]``.
Subclasses put a real state machine beside the chain by overriding four hooks
(``reset_state_machine``, ``apply_entry``, ``image``, ``restore_image``):
``raft_kv_sim.py`` runs a ``KVStore`` there and snapshots ``[index, digest, kv image]``.
Every change is shown to a :class:`~meshlite.testing._raft_checks.SafetyChecker`.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

from meshlite._core.raft import (
    Entry,
    HardState,
    Message,
    RaftConfig,
    RaftCore,
    ReadState,
    Ready,
    Role,
    Snapshot,
)
from meshlite.testing._raft_checks import SafetyChecker

__all__ = ["SimServer", "SimStorage"]

Send = Callable[[Message], None]
OnApplied = Callable[["SimServer", Entry], None]
OnRead = Callable[["SimServer", ReadState], None]


class SimStorage:
    """What one server has persisted: hard state, latest snapshot, entries after it."""

    def __init__(self) -> None:
        self.hard_state = HardState(0, None, 0)
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.saves = 0

    @property
    def snap_index(self) -> int:
        return 0 if self.snapshot is None else self.snapshot.index

    def term(self, index: int) -> int | None:
        if self.snapshot is not None and index == self.snapshot.index:
            return self.snapshot.term
        if index == 0:
            return 0
        offset = index - (self.entries[0].index if self.entries else self.snap_index + 1)
        return self.entries[offset].term if 0 <= offset < len(self.entries) else None

    def save(self, hs: HardState | None, entries: Sequence[Entry], snap: Snapshot | None) -> None:
        self.saves += 1
        if snap is not None:
            keep = self.term(snap.index) == snap.term
            self.entries = [e for e in self.entries if e.index > snap.index] if keep else []
            self.snapshot = snap
        if entries:
            first = entries[0].index
            base = self.entries[0].index if self.entries else self.snap_index + 1
            assert self.snap_index < first <= base + len(self.entries), "storage: entries gap"
            del self.entries[first - base :]
            self.entries.extend(entries)
        if hs is not None:
            self.hard_state = hs

    def compact(self, upto: int) -> None:
        assert upto <= self.snap_index, "storage: compact beyond the snapshot"
        self.entries = [e for e in self.entries if e.index > upto]

    def load(self) -> tuple[HardState, Snapshot | None, list[Entry]]:
        return self.hard_state, self.snapshot, list(self.entries)


def _digest(prev: bytes, entry: Entry) -> bytes:
    item = msgpack.packb([prev, entry.index, entry.term, int(entry.kind), entry.data])
    return hashlib.blake2b(item, digest_size=16).digest()


class SimServer:
    """A core, its storage and its state machine, driven like a real driver would."""

    def __init__(self, name: str, config: RaftConfig, checker: SafetyChecker) -> None:
        self.name = name
        self.config = config
        self.checker = checker
        self.storage = SimStorage()
        self.core: RaftCore | None = None
        self.incarnation = 0
        self.sm_index = 0
        self.sm_digest = b""
        self.sm_result: Any = None  # what apply_entry answered for the last entry
        self.compact_every = 0  # 0: never take snapshots
        self.saving: Ready | None = None  # a Ready being persisted (asynchronous mode)
        self._seen_commit = 0
        self._led_term = 0

    @property
    def alive(self) -> bool:
        return self.core is not None

    def live(self) -> RaftCore:
        assert self.core is not None, f"{self.name} is down"
        return self.core

    def start(self, rng: random.Random) -> RaftCore:
        """Boot (or reboot) from what storage holds."""
        hs, snap, entries = self.storage.load()
        core = RaftCore(self.name, self.config, rng, hs, snap, entries)
        self.core = core
        self.incarnation += 1
        self.sm_index, self.sm_digest = 0, b""
        self.reset_state_machine()
        if snap is not None:
            index, digest = self.restore_image(snap.data)
            self.sm_index, self.sm_digest = index, digest
            self.checker.on_restore(self.name, snap, index, digest)
        self._seen_commit = core.log.snap_index
        self._track_commit(core)
        return core

    def crash(self) -> None:
        """Lose everything but storage (a Ready being persisted is lost with it)."""
        self.core = None
        self.saving = None

    def check_leader(self, core: RaftCore) -> None:
        if core.role is Role.LEADER and self._led_term != core.term:
            self._led_term = core.term
            self.checker.on_leader(self.name, core)

    def process(self, send: Send, on_applied: OnApplied, on_read: OnRead) -> None:
        """Handle Readys until the core has no more work (synchronous persistence)."""
        core = self.core
        if core is None:
            return
        for _ in range(1000):
            self.check_leader(core)
            if not core.has_ready():
                return
            self.handle(core, core.ready(), send, on_applied, on_read)
        raise AssertionError(f"{self.name}: Ready loop does not settle")

    def begin(self, rd: Ready, send: Send, on_applied: OnApplied) -> None:
        """What a driver may do before ``rd`` is persisted, as ``meshlite._raft_node``
        does: a leader sends (``messages_first``), and committed entries already on our
        disk are applied (``durable_committed``).  Then :meth:`handle` with ``begun``."""
        if rd.messages_first:
            for msg in rd.messages:
                send(msg)
        for entry in rd.committed_entries[: rd.durable_committed]:
            self._apply(entry, on_applied)

    def handle(
        self,
        core: RaftCore,
        rd: Ready,
        send: Send,
        on_applied: OnApplied,
        on_read: OnRead,
        *,
        begun: bool = False,
    ) -> None:
        """Persist, send, apply, advance: one Ready, in that order (less what
        :meth:`begin` did already, if ``begun``)."""
        self.storage.save(rd.hard_state, rd.entries, rd.snapshot)
        if rd.entries:
            prev = self.storage.term(rd.entries[0].index - 1)
            self.checker.on_persist(self.name, prev, rd.entries)
        self._track_commit(core)
        if not (begun and rd.messages_first):
            for msg in rd.messages:  # only now: what they promise is durable
                send(msg)
        if rd.snapshot is not None:
            index, digest = self.restore_image(rd.snapshot.data)
            self.checker.on_restore(self.name, rd.snapshot, index, digest)
            self.sm_index, self.sm_digest = index, digest
        for entry in rd.committed_entries[rd.durable_committed if begun else 0 :]:
            self._apply(entry, on_applied)
        for rs in rd.read_states:
            on_read(self, rs)
        core.advance(rd)
        if self.compact_every and self.sm_index - core.log.snap_index >= self.compact_every:
            snap = core.compact(self.sm_index, self.image())
            self.storage.save(None, (), snap)
            self.storage.compact(snap.index)

    def _apply(self, entry: Entry, on_applied: OnApplied) -> None:
        digest = _digest(self.sm_digest, entry)
        self.checker.on_apply(self.name, entry, self.sm_index, digest)
        self.sm_index, self.sm_digest = entry.index, digest
        self.sm_result = self.apply_entry(entry)
        on_applied(self, entry)

    # -- the state machine (subclasses replace the digest chain's toy with a real one) ----

    def reset_state_machine(self) -> None:
        """Start from the empty state (a boot; a snapshot may follow)."""

    def apply_entry(self, entry: Entry) -> Any:
        """Apply a committed ``entry``; its result becomes ``sm_result`` (toy: none)."""
        return None

    def image(self) -> bytes:
        """The state machine's snapshot at ``sm_index``: ``[index, digest, ...]``."""
        return msgpack.packb([self.sm_index, self.sm_digest])

    def restore_image(self, data: bytes) -> tuple[int, bytes]:
        """Load what :meth:`image` made; its ``(index, digest)``."""
        index, digest, *_ = msgpack.unpackb(data)
        return index, digest

    def _track_commit(self, core: RaftCore) -> None:
        if core.log.committed > self._seen_commit:
            self.checker.on_commit(self.name, core, self._seen_commit)
            self._seen_commit = core.log.committed
