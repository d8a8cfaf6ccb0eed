"""RaftLog and Progress: the pieces the core is built from (etcd-io/raft log_test.go,
tracker/progress_test.go, in spirit)."""

from __future__ import annotations

import pytest

from meshlite._core.raft import Entry, EntryKind, Snapshot, encode_voters
from meshlite._core.raft.log import RaftLog
from meshlite._core.raft.progress import Inflights, Progress, ProgressState, quorum_index


def ents(start: int, terms: list[int]) -> list[Entry]:
    return [Entry(start + i, t, EntryKind.NORMAL, b"%d" % (start + i)) for i, t in enumerate(terms)]


def log_of(terms: list[int]) -> RaftLog:
    return RaftLog(None, ents(1, terms))


def terms_of(log: RaftLog) -> list[int | None]:
    return [log.term(i) for i in range(1, log.last_index + 1)]


def test_maybe_append_rejects_a_mismatched_prev() -> None:
    log = log_of([1, 1, 2])
    assert log.maybe_append(3, 1, 3, ents(4, [3])) is None  # entry 3 has term 2
    assert log.maybe_append(4, 2, 3, ents(5, [3])) is None  # no entry 4
    assert terms_of(log) == [1, 1, 2]


def test_maybe_append_truncates_only_at_a_real_conflict() -> None:
    log = log_of([1, 1, 2, 2])
    # A duplicate of entries we have: nothing is truncated, even though it is shorter.
    assert log.maybe_append(1, 1, 0, ents(2, [1])) == 2
    assert terms_of(log) == [1, 1, 2, 2]
    # A conflict at 3: everything from 3 is replaced.
    assert log.maybe_append(2, 1, 0, ents(3, [3])) == 3
    assert terms_of(log) == [1, 1, 3]
    assert log.stable == 2  # the replaced entry must be persisted again


def test_maybe_append_commits_no_further_than_the_last_new_entry() -> None:
    log = log_of([1, 1, 1, 1])
    assert log.maybe_append(1, 1, 10, ents(2, [1])) == 2
    assert log.committed == 2  # leader commit 10, but only 2 is known to match


def test_maybe_append_never_rewrites_a_committed_entry() -> None:
    log = log_of([1, 1, 1])
    log.commit_to(3)
    assert log.maybe_append(1, 1, 3, ents(2, [2])) is None
    assert terms_of(log) == [1, 1, 1]


@pytest.mark.parametrize(
    ("index", "term", "expected"),
    [
        (6, 3, (6, 3)),  # the probe matches
        (6, 2, (3, 2)),  # skip the whole term 3
        (6, 1, (1, 1)),
        (6, 0, (0, 0)),
        (9, 3, (6, 3)),  # beyond the end: start from the last entry
    ],
)
def test_find_conflict_by_term(index: int, term: int, expected: tuple[int, int]) -> None:
    assert log_of([1, 2, 2, 3, 3, 3]).find_conflict_by_term(index, term) == expected


def test_up_to_date_compares_last_term_then_last_index() -> None:
    log = log_of([1, 2, 2])
    assert log.is_up_to_date(3, 2)
    assert log.is_up_to_date(1, 3)  # higher last term wins even if shorter
    assert not log.is_up_to_date(2, 2)
    assert not log.is_up_to_date(9, 1)


def test_maybe_commit_only_commits_an_entry_of_the_given_term() -> None:
    log = log_of([1, 2, 3])
    assert not log.maybe_commit(2, 3)  # entry 2 is of term 2 (thesis §3.6.2)
    assert log.maybe_commit(3, 3)
    assert log.committed == 3


def test_entries_respects_count_and_bytes_but_returns_at_least_one() -> None:
    log = RaftLog(None, [Entry(i, 1, EntryKind.NORMAL, b"x" * 100) for i in range(1, 11)])
    assert len(log.entries(1, 10, 3, 10**6)) == 3
    assert len(log.entries(1, 10, 100, 250)) == 2  # 116 bytes each with overhead
    assert len(log.entries(1, 10, 100, 1)) == 1
    assert log.entries(11, 10, 5, 100) == []


def test_voters_follow_config_entries_and_roll_back_on_truncation() -> None:
    conf = [
        Entry(1, 1, EntryKind.CONFIG, encode_voters(("a", "b", "c"))),
        Entry(2, 1, EntryKind.NORMAL, b""),
        Entry(3, 1, EntryKind.CONFIG, encode_voters(("a", "b", "c", "d"))),
    ]
    log = RaftLog(None, conf)
    assert log.voters() == ("a", "b", "c", "d")  # effective when appended (§4.1)
    assert log.voters_at(2) == ("a", "b", "c")
    assert log.last_config_index() == 3
    assert log.maybe_append(2, 1, 0, ents(3, [2])) == 3  # the change is truncated away
    assert log.voters() == ("a", "b", "c")


def test_compact_and_restore() -> None:
    log = log_of([1, 1, 2, 2, 2])
    log.commit_to(5)
    log.applied_to(4)
    snap = Snapshot(4, 2, ("a",), b"image")
    log.compact(snap)
    assert (log.first_index, log.last_index, log.term(4), log.term(3)) == (5, 5, 2, None)
    assert log.find_conflict_by_term(3, 1) == (3, 0)  # compacted: unknown term
    newer = Snapshot(9, 3, ("a", "b"), b"newer")
    log.restore(newer)
    assert (log.last_index, log.committed, log.pending_snapshot) == (9, 9, newer)
    assert log.voters() == ("a", "b")
    assert log.next_committed() == []


def test_progress_probe_replicate_snapshot() -> None:
    pr = Progress(next_index=11, max_inflight=2)
    assert pr.state is ProgressState.PROBE and not pr.is_paused()
    pr.sent(12)
    assert pr.is_paused()  # one probe at a time
    assert not pr.maybe_decr_to(5, 0)  # a rejection of another probe: stale
    assert pr.maybe_decr_to(10, 6)  # our probe at 10 rejected, follower has up to 6
    assert pr.next == 7 and not pr.is_paused()
    assert pr.maybe_update(6)
    pr.become_replicate()
    pr.sent(8)
    pr.sent(9)
    assert pr.next == 10 and pr.is_paused()  # window of 2 full
    pr.inflights.free_le(8)
    assert not pr.is_paused()
    assert not pr.maybe_decr_to(6, 0)  # at or below match: stale
    assert pr.maybe_decr_to(9, 0) and pr.next == 7
    pr.become_snapshot(20)
    assert pr.is_paused()
    pr.snapshot_timed_out()
    assert pr.state is ProgressState.PROBE and pr.next == 7


def test_inflights_window() -> None:
    window = Inflights(3)
    for i in (5, 9, 12):
        window.add(i)
    assert window.full()
    window.free_le(9)
    assert len(window) == 1
    window.free_first_one()
    assert len(window) == 0


@pytest.mark.parametrize(
    ("matches", "expected"),
    [([5], 5), ([5, 3], 3), ([5, 3, 1], 3), ([9, 1, 1, 9], 1), ([7, 7, 2, 1, 8], 7), ([], 0)],
)
def test_quorum_index(matches: list[int], expected: int) -> None:
    assert quorum_index(matches) == expected
