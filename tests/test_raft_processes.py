"""Raft servers as real processes: SIGKILL the leader, restart it, kill -9 a follower.

Three ``meshlite agent --server --bootstrap-expect 3 --data-dir ...`` processes and a
client process (``kv_writer.py``) writing one key after another.  The leader is killed
with SIGKILL: a new one is elected and writes resume; the killed server restarts from
its data dir and catches up.  Then a follower is killed with SIGKILL in the middle of
the writes and restarted.  At the end every server's sqlite file passes
``PRAGMA integrity_check`` and its committed state holds every acknowledged write.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from netns import LineProcess
from test_services_processes import spawn

import meshlite
from meshlite._core.kv import KVStore
from meshlite._core.raft import EntryKind
from meshlite._raft_server import RAFT_DB_NAME
from meshlite._raft_storage import RaftStorage
from meshlite.testing import free_ports

HERE = Path(__file__).resolve().parent
DEADLINE_S = 30.0
NAMES = ["s0", "s1", "s2"]


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.key = meshlite.generate_key()
        self.ports = dict(zip(NAMES, free_ports(3), strict=True))
        self.dirs = {n: tmp / n for n in NAMES}
        self.procs: dict[str, LineProcess] = {}

    def start(self, name: str, extra: Sequence[str] = ()) -> None:
        args = [sys.executable, "-m", "meshlite.cli", "agent", "--name", name, *extra]
        args += ["--bind", f"127.0.0.1:{self.ports[name]}", "--profile", "local"]
        args += ["--key", self.key, "--server", "--bootstrap-expect", "3"]
        args += ["--data-dir", str(self.dirs[name])]
        for other in NAMES:
            if other != name:
                args += ["--join", f"127.0.0.1:{self.ports[other]}"]
        self.procs[name] = spawn(args)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.proc.send_signal(signal.SIGKILL)
        proc.proc.wait(DEADLINE_S)

    def close(self) -> None:
        for proc in self.procs.values():
            proc.kill()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


def acks(writer: LineProcess) -> list[int]:
    return [int(line.split()[1]) for line in writer.lines if line.startswith("ack ")]


def wait_acks(writer: LineProcess, at_least: int, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while len(acks(writer)) < at_least:
        assert time.monotonic() < deadline, writer.output()[-3000:]
        assert writer.proc.poll() is None, writer.output()[-3000:]
        time.sleep(0.05)


def leader(writer: LineProcess) -> str:
    lines = [line for line in writer.lines if line.startswith("leader ")]
    assert lines, writer.output()[-2000:]
    return lines[-1].split()[1]


def committed_state(data_dir: Path) -> KVStore:
    """What a server's storage holds as committed, rebuilt as the server would."""
    path = data_dir / RAFT_DB_NAME
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    storage = RaftStorage.open(str(path))
    try:
        hard_state, snap, entries = storage.load()
    finally:
        storage.close()
    store = KVStore() if snap is None else KVStore.restore(snap.data)
    for entry in entries:
        committed = store.last_index < entry.index <= hard_state.commit
        if committed and entry.kind is EntryKind.NORMAL:
            store.apply_entry(entry.index, entry.data)
    return store


def test_leader_sigkill_restart_and_follower_kill9_lose_no_acknowledged_write(
    cluster: Cluster,
) -> None:
    for name in NAMES:
        cluster.start(name)
    seed = f"127.0.0.1:{cluster.ports['s0']}"
    writer = spawn([sys.executable, str(HERE / "kv_writer.py"), "writer", seed, cluster.key])
    try:
        wait_acks(writer, 30)
        old = leader(writer)
        before = len(acks(writer))
        killed_at = time.monotonic()
        cluster.kill(old)
        wait_acks(writer, before + 1)
        resumed_s = time.monotonic() - killed_at
        wait_acks(writer, before + 30)
        assert leader(writer) != old, writer.output()[-2000:]
        print(f"writes resumed {resumed_s:.2f}s after SIGKILL of leader {old}")

        cluster.start(old)  # back from its data dir; catches up from the leader
        wait_acks(writer, len(acks(writer)) + 30)

        follower = next(n for n in NAMES if n != leader(writer))
        cluster.kill(follower)  # kill -9 in the middle of the writes
        wait_acks(writer, len(acks(writer)) + 20)
        cluster.start(follower)
        wait_acks(writer, len(acks(writer)) + 30)

        assert writer.stop(DEADLINE_S) == 0, writer.output()[-3000:]
        final_line = writer.wait_for(lambda s: s.startswith("final "), DEADLINE_S)
        assert final_line is not None, writer.output()[-3000:]
        final = set(json.loads(final_line.split(" ", 1)[1]))
        acked = {f"k/{i:06d}" for i in acks(writer)}
        assert acked <= final, sorted(acked - final)[:10]
        time.sleep(2.0)  # let the restarted follower apply and persist the last commit
    finally:
        writer.kill()
        cluster.close()
    for name in NAMES:
        store = committed_state(cluster.dirs[name])
        have = {e.key for e in store.list("k/")}
        assert acked <= have, (name, sorted(acked - have)[:10])
        for key in sorted(acked)[:50]:
            entry = store.get(key)
            assert entry is not None and entry.value == str(int(key[2:])).encode()


def intervals(proc: LineProcess, name: str) -> list[tuple[float, float | None]]:
    out: list[tuple[float, float | None]] = []
    for line in list(proc.lines):
        parts = line.split()
        if parts[:2] == ["enter", name]:
            out.append((float(parts[2]), None))
        elif parts[:2] == ["exit", name]:
            assert out and out[-1][1] is None and parts[3] == "held=True", proc.output()[-2000:]
            out[-1] = (out[-1][0], float(parts[2]))
    return out


def test_two_processes_racing_for_a_lock_never_hold_it_together(cluster: Cluster) -> None:
    """Two contenders alternate; the holder is SIGKILLed mid-hold; no two holds overlap."""
    args = [sys.executable, "-m", "meshlite.cli", "agent", "--name", "s0", "--server"]
    args += ["--bind", f"127.0.0.1:{cluster.ports['s0']}", "--profile", "local"]
    args += ["--key", cluster.key, "--bootstrap-expect", "1"]
    cluster.procs["s0"] = spawn(args)
    seed = f"127.0.0.1:{cluster.ports['s0']}"
    a, b = (
        spawn([sys.executable, str(HERE / "lock_client.py"), n, seed, cluster.key])
        for n in ("a", "b")
    )
    try:
        for proc in (a, b):
            assert proc.wait_for(lambda s: s == "ready", DEADLINE_S), proc.output()[-2000:]
        deadline = time.monotonic() + DEADLINE_S
        while min(len(intervals(a, "a")), len(intervals(b, "b"))) < 3:
            assert time.monotonic() < deadline, a.output()[-1500:] + b.output()[-1500:]
            time.sleep(0.05)
        # Kill a while it holds the lock (its latest interval is open).
        while not (intervals(a, "a") and intervals(a, "a")[-1][1] is None):
            assert time.monotonic() < deadline + DEADLINE_S, a.output()[-1500:]
            time.sleep(0.01)
        a.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        a.proc.wait(DEADLINE_S)
        held_before = len(intervals(b, "b"))
        assert b.wait_for(
            lambda s: s.startswith("enter b") and len(intervals(b, "b")) > held_before + 1,
            DEADLINE_S,
        ), b.output()[-2000:]
    finally:
        b.stop(DEADLINE_S)
        a.kill()
        b.kill()
    holds = [(s, e if e is not None else killed_at) for s, e in intervals(a, "a")]
    holds += [(s, e) for s, e in intervals(b, "b") if e is not None]
    holds.sort()
    for (s1, e1), (s2, _e2) in itertools.pairwise(holds):
        assert e1 <= s2, f"two holders at once: {s1}-{e1} and {s2}"
    assert len(holds) >= 7


def served_by(url: str, not_by: str | None = None) -> str:
    """The node answering ``url`` (``/v1/agent/self``), once one other than ``not_by`` does."""
    deadline = time.monotonic() + DEADLINE_S
    last: object = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/v1/agent/self", timeout=2.0)
            name = str(r.json()["Config"]["NodeName"])
            if name != not_by:
                return name
            last = name
        except (httpx.HTTPError, ValueError) as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"no answer from another server at {url}: {last!r}")


def test_the_http_api_bound_by_the_leader_moves_with_leadership(cluster: Cluster) -> None:
    """Three servers share one --http address with --http-on-leader: the leader serves it;
    SIGKILL the leader and the address answers again, from the new leader."""
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    for name in NAMES:
        cluster.start(name, ["--http", f"127.0.0.1:{port}", "--http-on-leader"])
    first = served_by(url)
    # Whoever serves is the leader, by its own account and the others'.
    assert httpx.get(f"{url}/v1/status/leader").json() == f"127.0.0.1:{cluster.ports[first]}"
    r = httpx.put(f"{url}/v1/kv/moved", content=b"with the leader")
    assert r.status_code == 200 and r.json() is True, r.text
    cluster.kill(first)
    killed_at = time.monotonic()
    second = served_by(url, not_by=first)
    moved_s = time.monotonic() - killed_at
    assert second in NAMES and second != first
    leader = httpx.get(f"{url}/v1/status/leader").json()
    assert leader == f"127.0.0.1:{cluster.ports[second]}"
    assert httpx.get(f"{url}/v1/kv/moved?raw").content == b"with the leader"
    assert moved_s < DEADLINE_S
    # The follower that is left never bound the address: it logged no HTTP listener.
    (third,) = set(NAMES) - {first, second}
    assert "HTTP API listening" not in cluster.procs[third].output()
