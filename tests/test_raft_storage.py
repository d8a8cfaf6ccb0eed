"""The sqlite Raft store (meshlite/_raft_storage.py) and its group committer, for real.

Round trips, truncation on conflict, snapshots and compaction; a hypothesis state machine
against the dict model in ``raft_storage_writer.Model`` (with reopens); bad files give
clear errors; group commit on both anyio backends; and writer processes SIGKILLed at
random moments, after which the file is intact and holds every acknowledged save.
``MESHLITE_LONG=1`` runs more kill rounds and more hypothesis examples.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from raft_storage_writer import Model, RejectedError, apply_op, entry, op_of, snapshot

from meshlite._core.raft.types import Entry, EntryKind, HardState
from meshlite._raft_group_commit import GroupCommitter
from meshlite._raft_storage import RaftStorage, RaftStorageError, Write
from meshlite.errors import ConfigError
from meshlite.testing import env_seed, long_run, replay_hint

WRITER = str(Path(__file__).with_name("raft_storage_writer.py"))
EMPTY = HardState(term=0, vote=None, commit=0)


def run(first: int, last: int, term: int) -> list[Entry]:
    return [entry(i, term) for i in range(first, last + 1)]


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RaftStorage]:
    path = tmp_path / "raft.db" if request.param == "file" else None
    s = RaftStorage.open(path)
    yield s
    s.close()


# -- round trips and the log's rules ----------------------------------------------------


def test_fresh_store_loads_empty(store: RaftStorage) -> None:
    assert store.load() == (EMPTY, None, [])
    stats = store.stats()
    assert (stats.first_index, stats.last_index, stats.snapshot_index) == (1, 0, 0)


def test_round_trip_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    hs = HardState(term=3, vote="b", commit=2)
    entries = [
        *run(1, 5, 3),
        Entry(6, 3, EntryKind.NOOP, b""),
        Entry(7, 3, EntryKind.CONFIG, b"\0"),
    ]
    with_store = RaftStorage.open(path)
    with_store.save(hs, entries)
    assert with_store.load() == (hs, None, entries)
    with_store.close()
    again = RaftStorage.open(str(path))
    assert again.load() == (hs, None, entries)
    again.save(HardState(term=4, vote=None, commit=7))  # hard state alone
    assert again.load() == (HardState(term=4, vote=None, commit=7), None, entries)
    again.close()


def test_hard_state_none_keeps_the_stored_one(store: RaftStorage) -> None:
    hs = HardState(term=2, vote="a", commit=0)
    store.save(hs, run(1, 2, 2))
    store.save(None, run(3, 3, 2))
    assert store.load() == (hs, None, run(1, 3, 2))


def test_conflicting_entries_truncate_the_tail(store: RaftStorage) -> None:
    store.save(HardState(1, "a", 0), run(1, 6, 1))
    store.save(HardState(2, "b", 2), run(3, 4, 2))
    assert store.load()[2] == [*run(1, 2, 1), *run(3, 4, 2)]
    assert store.stats().entries_truncated == 4  # 3..6 replaced or dropped
    store.save(None, run(5, 5, 2))  # appending right after the new tail is fine
    assert [e.index for e in store.load()[2]] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ([entry(6, 1)], "do not fit"),  # a gap after 1..4
        ([entry(0, 1)], "do not fit"),  # indexes start at 1
        ([entry(4, 1), entry(6, 1)], "consecutive"),
    ],
)
def test_misfit_entries_raise_and_write_nothing(
    store: RaftStorage, bad: list[Entry], why: str
) -> None:
    store.save(HardState(1, None, 0), run(1, 3, 1))
    before = store.load()
    good = Write(HardState(9, "z", 3), tuple(run(4, 4, 1)))
    with pytest.raises(ConfigError, match=why):
        store.save_many([good, Write(None, tuple(bad))])  # the good one rolls back too
    assert store.load() == before
    assert store.stats().commits == 1


def test_snapshot_beyond_the_log_replaces_it(store: RaftStorage) -> None:
    store.save(HardState(1, "a", 3), run(1, 5, 1))
    snap = snapshot(10, 2)
    store.save(HardState(2, "b", 10), run(11, 12, 2), snap)
    assert store.load() == (HardState(2, "b", 10), snap, run(11, 12, 2))
    with pytest.raises(ConfigError, match="do not fit"):
        store.save(None, run(10, 10, 2))  # covered by the snapshot
    with pytest.raises(ConfigError, match="do not fit"):
        store.save(None, run(14, 14, 2))  # a gap


def test_snapshot_disagreeing_with_the_log_replaces_it(store: RaftStorage) -> None:
    store.save(HardState(1, "a", 0), run(1, 5, 1))
    snap = snapshot(3, 2)  # index 3 holds term 1 here: our log is not the leader's
    store.save(None, [], snap)
    assert store.load() == (HardState(1, "a", 0), snap, [])


def test_local_snapshot_keeps_the_log_until_compacted(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    store = RaftStorage.open(path)
    store.save(HardState(1, "a", 8), run(1, 10, 1))
    snap = snapshot(7, 1)
    store.save(None, [], snap)
    assert store.load() == (HardState(1, "a", 8), snap, run(8, 10, 1))
    store.save(None, [], snap)  # the same snapshot again is a no-op ...
    with pytest.raises(ConfigError, match="not newer"):
        store.save(None, [], snapshot(5, 1))  # ... an older one is refused
    store.compact(5)
    store.close()
    assert stored_indexes(path) == list(range(6, 11))  # compaction really deletes
    store = RaftStorage.open(path)
    store.compact(7)
    assert store.load() == (HardState(1, "a", 8), snap, run(8, 10, 1))
    assert store.stats().first_index == 8
    store.save(None, [], snap)  # re-saving after compaction must not wipe the log
    assert store.load()[2] == run(8, 10, 1)
    store.close()


def stored_indexes(path: Path) -> list[int]:
    """Entry indexes physically in a closed store's file."""
    with sqlite3.connect(path) as conn:
        found = [r[0] for r in conn.execute("SELECT idx FROM entries ORDER BY idx")]
    conn.close()
    return found


def test_compact_past_the_snapshot_is_refused(store: RaftStorage) -> None:
    store.save(HardState(1, None, 0), run(1, 4, 1))
    store.compact(0)
    with pytest.raises(ConfigError, match="save a snapshot first"):
        store.compact(2)
    assert store.load()[2] == run(1, 4, 1)


def test_stats_count_commits_and_bytes(tmp_path: Path) -> None:
    durable = RaftStorage.open(tmp_path / "a.db")
    relaxed = RaftStorage.open(tmp_path / "b.db", durable=False)
    for s in (durable, relaxed):
        s.save_many([Write(None, tuple(run(1, 3, 1))), Write(None, tuple(run(4, 4, 1)))])
        s.save(HardState(1, None, 4))
    a, b = durable.stats(), relaxed.stats()
    assert (a.saves, a.commits, a.syncs, a.entries_written) == (3, 2, 2, 4)
    assert (b.commits, b.syncs) == (2, 0)  # NORMAL: no sync per commit
    assert a.bytes_written == sum(len(e.data) for e in run(1, 4, 1))
    assert a.file_bytes > a.bytes_written
    assert (a.first_index, a.last_index) == (1, 4)
    durable.close()
    relaxed.close()


def test_a_commit_index_is_written_without_a_sync(tmp_path: Path) -> None:
    """save_commit: etcd's MustSync false — written (a reopen reads it), not synced, and
    the store syncs every other save again afterwards."""
    store = RaftStorage.open(tmp_path / "a.db")
    store.save(HardState(2, "b", 0), run(1, 3, 2))
    store.save_commit(HardState(2, "b", 3))
    after = store.stats()
    assert (after.commits, after.syncs) == (2, 1)
    (mode,) = store._live().execute("PRAGMA synchronous").fetchone()
    assert mode == 2  # FULL again
    store.save(None, run(4, 4, 2))
    assert store.stats().syncs == 2
    store.close()
    hs, _snap, entries = RaftStorage.open(tmp_path / "a.db").load()
    assert hs == HardState(2, "b", 3) and len(entries) == 4


# -- bad files and misuse -----------------------------------------------------------------


def test_random_bytes_are_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    path.write_bytes(random.Random(1).randbytes(8192))
    with pytest.raises(ConfigError, match="not a sqlite database") as info:
        RaftStorage.open(path)
    assert str(path) in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    conn.close()
    with pytest.raises(ConfigError, match="something else"):
        RaftStorage.open(path)


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    RaftStorage.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(ConfigError, match="schema version '7'"):
        RaftStorage.open(path)


def test_corrupt_pages_are_found_at_open(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    store = RaftStorage.open(path, durable=False)
    for first in range(1, 400, 40):
        store.save(HardState(1, None, 0), run(first, first + 39, 1))
    store.close()  # checkpoints: everything is in the main file now
    data = bytearray(path.read_bytes())
    assert len(data) > 40 * 4096
    data[8 * 4096 : 12 * 4096] = random.Random(2).randbytes(4 * 4096)  # smash four pages
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"corrupt|malformed") as info:
        RaftStorage.open(path)
    assert str(path) in str(info.value)


def test_second_opener_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    first = RaftStorage.open(path)
    with pytest.raises(ConfigError, match="in use by another process"):
        RaftStorage.open(path)
    first.close()
    RaftStorage.open(path).close()  # the lock goes with close()


def test_missing_directory_and_closed_store(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot open"):
        RaftStorage.open(tmp_path / "nope" / "raft.db")
    store = RaftStorage.open(None)
    store.close()
    store.close()
    with pytest.raises(ConfigError, match="closed"):
        store.load()


def test_unknown_entry_kind_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    store = RaftStorage.open(path)
    store.save(None, run(1, 1, 1))
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE entries SET kind = 99")
    conn.close()
    store = RaftStorage.open(path)
    with pytest.raises(RaftStorageError, match="unknown kind 99"):
        store.load()
    store.close()


def test_a_full_disk_fails_the_save_and_keeps_the_store(tmp_path: Path) -> None:
    store = RaftStorage.open(tmp_path / "raft.db")
    store.save(HardState(1, "a", 0), run(1, 3, 1))
    before, stats = store.load(), store.stats()
    conn = store._conn
    assert conn is not None
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count={pages}")  # sqlite's own SQLITE_FULL, for real
    big = [Entry(4, 1, EntryKind.NORMAL, bytes(64 * 1024))]
    with pytest.raises(RaftStorageError, match="save failed: database or disk is full"):
        store.save(HardState(2, "b", 3), big)
    assert store.load() == before
    assert store.stats() == stats  # counters move only with a commit
    conn.execute("PRAGMA max_page_count=1073741823")
    store.save(HardState(2, "b", 3), big)
    assert store.load()[2][-1] == big[0]
    store.close()


# -- the model test -----------------------------------------------------------------------


class StoreMachine(RuleBasedStateMachine):
    """Random saves, batches, snapshots, compactions, misuse and reopens vs. ``Model``."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="raft-storage-")
        self.path = os.path.join(self.dir, "raft.db")
        self.store = RaftStorage.open(self.path, durable=False)
        self.model = Model()

    def draw_write(self, data: st.DataObject, model: Model) -> Write:
        covered, last = model.covered(), model.last()
        term = data.draw(st.integers(1, 4), label="term")
        hs = data.draw(
            st.none()
            | st.builds(
                HardState, st.integers(0, 9), st.sampled_from([None, "a", "b"]), st.integers(0, 20)
            )
        )
        snap = None
        if data.draw(st.integers(0, 5), label="snapshot?") == 0:
            index = data.draw(st.integers(max(1, covered), last + 3), label="snap index")
            agree = model.log.get(index)
            snap_term = agree.term if agree is not None and data.draw(st.booleans()) else term
            snap = snapshot(index, snap_term)
            covered, last = max(covered, index), max(last, index)
        first = data.draw(st.integers(max(0, covered - 1), last + 2), label="first")
        count = data.draw(st.integers(0, 5), label="count")
        return Write(hs, tuple(entry(first + k, term) for k in range(count)), snap)

    @rule(data=st.data(), size=st.integers(1, 3))
    def save(self, data: st.DataObject, size: int) -> None:
        scratch = self.model.copy()
        writes = []
        try:
            for _ in range(size):
                writes.append(self.draw_write(data, scratch))
                scratch.apply(writes[-1])
        except RejectedError:
            with pytest.raises(ConfigError):
                self.store.save_many(writes)
            return  # nothing of the batch may stick: the invariant checks it
        self.store.save_many(writes)
        self.model = scratch

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        upto = data.draw(st.integers(0, self.model.covered() + 1))
        try:
            self.model.compact(upto)
        except RejectedError:
            with pytest.raises(ConfigError):
                self.store.compact(upto)
            return
        self.store.compact(upto)

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = RaftStorage.open(self.path, durable=False)

    @invariant()
    def loads_what_the_model_holds(self) -> None:
        assert self.store.load() == self.model.load()
        stats = self.store.stats()
        assert stats.snapshot_index == self.model.covered()
        assert stats.last_index == self.model.last()

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(
    max_examples=300 if long_run() else 40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- group commit -------------------------------------------------------------------------


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
async def test_group_commit_shares_transactions(tmp_path: Path) -> None:
    store = RaftStorage.open(tmp_path / "raft.db")
    committer = GroupCommitter(store)
    next_index = iter(range(1, 1000))

    async def writer(n: int) -> None:
        for _ in range(n):
            # take the index and queue the save with no await between: order is kept
            await committer.save(None, [entry(next(next_index), 1)])

    async with anyio.create_task_group() as tg:
        for _ in range(16):
            tg.start_soon(writer, 4)
    assert store.load()[2] == run(1, 64, 1)
    stats = store.stats()
    assert (committer.saves, stats.saves) == (64, 64)
    assert stats.commits == committer.flushes < 64 // 2  # groups, not one commit each
    store.close()


async def queue_while_locked(committer: GroupCommitter, saves: list[list[Entry]]) -> list[str]:
    """Queue ``saves`` while the flusher lock is held, so they flush as one group."""
    outcomes: list[str] = []

    async def save(entries: list[Entry]) -> None:
        try:
            await committer.save(None, entries)
            outcomes.append("ok")
        except ConfigError:
            outcomes.append("error")

    async with anyio.create_task_group() as tg:
        async with committer._lock:
            for entries in saves:
                tg.start_soon(save, entries)
            for _ in range(1000):
                if len(committer._queue) == len(saves):
                    break
                await anyio.lowlevel.checkpoint()
            assert len(committer._queue) == len(saves)
    return outcomes


@pytest.mark.anyio
async def test_group_commit_error_reaches_every_waiter(tmp_path: Path) -> None:
    store = RaftStorage.open(tmp_path / "raft.db")
    committer = GroupCommitter(store)
    await committer.save(HardState(1, None, 0), run(1, 2, 1))
    outcomes = await queue_while_locked(committer, [run(3, 3, 1), run(9, 9, 1), run(4, 4, 1)])
    assert outcomes == ["error"] * 3  # one transaction: the gap at 9 spoils all three
    assert store.load()[2] == run(1, 2, 1)
    assert await queue_while_locked(committer, [run(3, 3, 1)]) == ["ok"]
    assert committer.flushes == store.stats().commits + 1  # the failed group committed nothing
    store.close()


@pytest.mark.anyio
async def test_group_commit_drops_a_save_cancelled_before_its_flush(tmp_path: Path) -> None:
    store = RaftStorage.open(tmp_path / "raft.db")
    committer = GroupCommitter(store)
    locked, release = anyio.Event(), anyio.Event()

    async def hold() -> None:  # stands in for a flush in progress: the next save queues
        async with committer._lock:
            locked.set()
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await locked.wait()
        with anyio.move_on_after(0.01):
            await committer.save(None, run(1, 1, 1))
        assert committer._queue == []
        release.set()
    await committer.save(None, run(1, 1, 2))
    assert store.load()[2] == run(1, 1, 2)
    assert (committer.saves, store.stats().entries_truncated) == (1, 0)
    store.close()


# -- SIGKILL ------------------------------------------------------------------------------

KILL_ROUNDS = 40 if long_run() else 5
READY_TIMEOUT_S = 30.0


def wait_for_ready(log: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        if log.read_text().startswith("ready\n"):
            return
        time.sleep(0.01)
    raise AssertionError(f"writer never became ready (exit {proc.poll()})")


def replay(start: Model, lines: list[str]) -> tuple[Model, Model | None, int]:
    """The acknowledged state, the state with the unacknowledged last op, the ack count."""
    acked, pending, acks = start.copy(), None, 0
    for line in lines:
        if line == "ack":
            assert pending is not None
            acked, pending, acks = pending, None, acks + 1
        else:
            pending = acked.copy()
            apply_op(pending, op_of(json.loads(line)))
    return acked, pending, acks


def kill_round(path: Path, work: Path, model: Model, seed: int, mode: str) -> tuple[Model, int]:
    log, err = work / f"out-{seed}.txt", work / f"err-{seed}.txt"
    with log.open("wb") as out, err.open("wb") as errf:
        proc = subprocess.Popen(
            [sys.executable, WRITER, str(path), str(seed), mode], stdout=out, stderr=errf
        )
    try:
        wait_for_ready(log, proc)
        time.sleep(random.Random(seed).uniform(0.02, 0.4))
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err.read_text()
    text = log.read_text()
    lines = text.split("\n")[1:-1]  # skip "ready"; a torn last line never counts
    acked, pending, acks = replay(model, lines)
    store = RaftStorage.open(path)
    got = store.load()
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()
    if got == acked.load():
        return acked, acks
    assert pending is not None, f"seed {seed}: lost acknowledged writes ({acks} acks)"
    assert got == pending.load(), f"seed {seed}: neither the acked nor the pending state"
    return pending, acks


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["durable", "normal"])
def test_sigkilled_writer_keeps_every_acknowledged_save(tmp_path: Path, mode: str) -> None:
    """Round r runs the workload of seed base + r; kill times vary with the machine."""
    path, model, total = tmp_path / "raft.db", Model(), 0
    base = env_seed()
    base = 1000 if base is None else base
    with replay_hint(base):
        for round_no in range(KILL_ROUNDS):
            model, acks = kill_round(path, tmp_path, model, base + round_no, mode)
            total += acks
    assert total > KILL_ROUNDS, f"too few saves acknowledged to mean anything ({total})"
