"""Durable Raft storage (meshlite/_raft_storage.py): saves/s and entries/s, median of repeats.

    python benchmarks/bench_raft_storage.py [--repeats 5] [--saves 300] [--entry-bytes 256]
                                            [--dirs /tmp,REPO] [--strace]

Each save is one transaction (and, durable, one sync of the WAL) carrying 1, 16 or 256
entries, on a fresh store in each directory (``REPO`` = a scratch dir inside this
checkout, removed afterwards).  Columns: durable (``synchronous=FULL``, what servers
use), ``synchronous=NORMAL`` (no sync per commit: safe against process crashes only)
and in memory, with FULL/NORMAL as a ratio.  Then group commit: 16 tasks each awaiting
one-entry saves through ``GroupCommitter`` vs one task doing the same saves in turn.
``--strace`` counts fsync/fdatasync calls per save under strace (the evidence that FULL
syncs once per commit and NORMAL does not).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from meshlite._core.raft.types import Entry, EntryKind, HardState
from meshlite._raft_group_commit import GroupCommitter
from meshlite._raft_storage import RaftStorage

ROOT = Path(__file__).resolve().parent.parent
BATCHES = (1, 16, 256)
WRITERS = 16  # concurrent writers for the group-commit case (the load shape)


def entries_from(first: int, count: int, payload: bytes) -> list[Entry]:
    return [Entry(first + k, 1, EntryKind.NORMAL, payload) for k in range(count)]


def saves_per_s(store: RaftStorage, batch: int, saves: int, payload: bytes) -> float:
    """One sample: ``saves`` saves of ``batch`` entries each, appended to ``store``.

    The entries are built before the clock starts: a driver hands storage ready-made ones.
    """
    first = store.stats().last_index + 1
    hs = HardState(term=1, vote="a", commit=0)
    work = [entries_from(first + k * batch, batch, payload) for k in range(saves)]
    start = time.perf_counter()
    for entries in work:
        store.save(hs, entries)
    return saves / (time.perf_counter() - start)


def median_rate(path: Path | None, durable: bool, batch: int, args: argparse.Namespace) -> float:
    store = RaftStorage.open(path, durable=durable)
    payload = bytes(args.entry_bytes)
    saves = max(10, args.saves // (1 + batch // 64))  # keep 256-entry samples short
    try:
        return statistics.median(
            saves_per_s(store, batch, saves, payload) for _ in range(args.repeats)
        )
    finally:
        store.close()


def fs_type(directory: Path) -> str:
    """The filesystem type of ``directory``, from /proc/mounts (longest mount prefix)."""
    best, kind = "", "?"
    with open("/proc/mounts") as mounts:
        for line in mounts:
            _, mountpoint, fstype, *_ = line.split()
            if str(directory).startswith(mountpoint) and len(mountpoint) > len(best):
                best, kind = mountpoint, fstype
    return f"{kind} on {best}"


def bench_dir(label: str, directory: Path, args: argparse.Namespace) -> None:
    print(f"\n{label}: {directory} ({fs_type(directory)})")
    print(
        f"{'entries/save':>12} {'FULL saves/s':>13} {'entries/s':>11}"
        f" {'NORMAL saves/s':>15} {'memory saves/s':>15} {'NORMAL/FULL':>12}"
    )
    for batch in BATCHES:
        full = median_rate(directory / f"full-{batch}.db", True, batch, args)
        normal = median_rate(directory / f"normal-{batch}.db", False, batch, args)
        memory = median_rate(None, True, batch, args)
        print(
            f"{batch:>12} {full:>13,.0f} {full * batch:>11,.0f}"
            f" {normal:>15,.0f} {memory:>15,.0f} {normal / full:>11.1f}x"
        )


async def group_commit_rate(path: Path, saves: int, writers: int) -> tuple[float, float]:
    """(saves/s, saves per transaction) for ``writers`` tasks sharing ``saves`` saves."""
    store = RaftStorage.open(path)
    committer = GroupCommitter(store)
    counter = iter(range(1, saves + 1))
    hs = HardState(term=1, vote="a", commit=0)

    async def writer() -> None:
        for index in counter:  # the index is taken and the save queued with no await between
            await committer.save(hs, entries_from(index, 1, bytes(256)))

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(writers):
            tg.start_soon(writer)
    elapsed = time.perf_counter() - start
    store.close()
    return saves / elapsed, committer.saves / committer.flushes


def bench_group_commit(directory: Path, args: argparse.Namespace) -> None:
    print(f"\ngroup commit, one-entry saves, durable, {directory}:")
    for writers in (1, WRITERS):
        rates, groups = [], []
        for repeat in range(args.repeats):
            path = directory / f"group-{writers}-{repeat}.db"
            rate, group = anyio.run(group_commit_rate, path, args.saves, writers)
            rates.append(rate)
            groups.append(group)
        print(
            f"  {writers:>2} writer(s): {statistics.median(rates):>9,.0f} saves/s,"
            f" {statistics.median(groups):5.1f} saves per transaction (fsync)"
        )


def count_syncs(directory: Path, durable: bool, saves: int) -> int:
    """fsync + fdatasync calls of a child doing ``saves`` one-entry saves, per strace."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import bench_raft_storage as b;"
        " from pathlib import Path;"
        " s = b.RaftStorage.open(Path(sys.argv[2]), durable=sys.argv[3] == '1');"
        " [s.save(None, b.entries_from(i, 1, b'x')) for i in range(1, int(sys.argv[4]) + 1)];"
        " s.close()"
    )
    path = directory / f"strace-{int(durable)}-{saves}.db"
    cmd = [
        "strace",
        "-f",
        "-c",
        "-e",
        "trace=fsync,fdatasync",
        sys.executable,
        "-c",
        code,
        str(Path(__file__).parent),
        str(path),
        str(int(durable)),
        str(saves),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    return sum(
        int(m)
        for m in re.findall(
            r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?f(?:data)?sync$", out, re.M
        )
    )


def bench_strace(directory: Path) -> None:
    if shutil.which("strace") is None:
        print("\nstrace not installed: skipping the sync count")
        return
    print("\nsyncs per save (strace, fsync+fdatasync, 400 saves minus a 0-save baseline):")
    for durable, name in ((True, "FULL"), (False, "NORMAL")):
        base = count_syncs(directory, durable, 0)
        many = count_syncs(directory, durable, 400)
        print(f"  {name:>6}: {(many - base) / 400:.2f} per save ({many} vs {base} at open/close)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--saves", type=int, default=300, help="saves per sample")
    parser.add_argument("--entry-bytes", type=int, default=256)
    parser.add_argument("--dirs", default="/tmp,REPO", help="comma-separated; REPO = this checkout")
    parser.add_argument("--strace", action="store_true")
    args = parser.parse_args()
    print(f"{args.entry_bytes}-byte entries, median of {args.repeats} samples")
    for name in args.dirs.split(","):
        parent = ROOT if name == "REPO" else Path(name)
        scratch = Path(tempfile.mkdtemp(prefix=".bench-raft-storage-", dir=parent))
        try:
            bench_dir("repo dir" if name == "REPO" else name, scratch, args)
            bench_group_commit(scratch, args)
            if args.strace:
                bench_strace(scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
