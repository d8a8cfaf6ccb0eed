"""Smokes of the issue-4 benchmarks: each runs end to end with tiny parameters.

* ``bench_kv_writes.py`` for etcd (skipped when Debian's ``etcd-server`` is not installed)
  and for meshlite: 3 servers, 4 writers, a 1-second window; every put succeeds.
* ``bench_failover.py``: one SIGKILL of the leader; writes come back and no acknowledged
  write is missing.
* ``bench_kv_local_reads.py``: every case is reported.
* ``ab_kv_writes.py``: base (a worktree of HEAD) and head each run once; the worktree goes.

Only the shape of the results is checked: benchmarks measure, tests never assert timings.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
# Outer bounds for a harness that hangs; each script bounds its own waits (cluster
# start-up 60-90 s at worst) and normally finishes in 5-20 s.
TIMEOUT_S = 180

needs_meshlite = pytest.mark.skipif(
    shutil.which("meshlite", path=str(Path(sys.executable).parent)) is None,
    reason="the meshlite script is not installed beside this Python",
)


def _run(script: str, *argv: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, str(BENCH / script), *argv],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def _writes(system: str, tmp_path: Path) -> dict[str, Any]:
    out = _run(
        "bench_kv_writes.py",
        *("--systems", system, "--writers", "4", "--duration-s", "1", "--warmup-s", "0.3"),
        *("--repeats", "1", "--out-dir", str(tmp_path)),
    )
    assert f"| 4 | {system} |" in out.stdout, out.stdout
    (result,) = tmp_path.glob("kv_writes-*.json")
    (run,) = json.loads(result.read_text())["runs"]
    return dict(run)


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server is not installed")
@pytest.mark.timeout(TIMEOUT_S + 30)
def test_kv_writes_smoke_etcd(tmp_path: Path) -> None:
    run = _writes("etcd", tmp_path)
    assert run["ops"] > 0 and run["errors"] == 0, run
    assert run["server_cores"] > 0, run


@needs_meshlite
@pytest.mark.timeout(TIMEOUT_S + 30)
def test_kv_writes_smoke_meshlite(tmp_path: Path) -> None:
    run = _writes("meshlite", tmp_path)
    assert run["ops"] > 0 and run["errors"] == 0, run
    assert run["server_cores"] > 0, run


@needs_meshlite
@pytest.mark.timeout(TIMEOUT_S + 30)
def test_failover_smoke(tmp_path: Path) -> None:
    out = _run(
        "bench_failover.py", "--rounds", "1", "--settle-s", "0.5", "--out-dir", str(tmp_path)
    )
    (result,) = tmp_path.glob("failover-*.json")
    payload = json.loads(result.read_text())
    (round_,) = payload["rounds"]
    assert round_["writes_back_s"] is not None, out.stdout
    assert round_["leader_known_s"] is not None, out.stdout
    assert payload["missing_acked"] == 0, out.stdout
    assert "| writes succeed again |" in out.stdout


@pytest.mark.timeout(TIMEOUT_S + 30)
def test_kv_local_reads_smoke() -> None:
    out = _run("bench_kv_local_reads.py", "--quick")
    for case in ("dict[key]", "kv.local(key)", 'consistency="stale"', "(default)", "noop"):
        assert case in out.stdout, out.stdout


@needs_meshlite
@pytest.mark.skipif(
    shutil.which("git") is None or not (BENCH.parent / ".git").exists(),
    reason="needs git and a git checkout (the A/B checks out the base revision)",
)
@pytest.mark.timeout(TIMEOUT_S + 30)
def test_ab_kv_writes_smoke() -> None:
    """Both versions run (the base from a worktree, removed afterwards) and are tabled."""
    before = subprocess.run(
        ["git", "-C", str(BENCH.parent), "worktree", "list"], capture_output=True, text=True
    ).stdout
    out = _run(
        "ab_kv_writes.py",
        *("--base", "HEAD", "--writers", "2", "--repeats", "1"),
        *("--duration-s", "1", "--warmup-s", "0.3"),
    )
    rows = [
        line.split("|")[2].strip() for line in out.stdout.splitlines() if line.startswith("| 2 |")
    ]
    assert rows == ["base", "head", "head/base"], out.stdout
    after = subprocess.run(
        ["git", "-C", str(BENCH.parent), "worktree", "list"], capture_output=True, text=True
    ).stdout
    assert after == before  # the worktree is gone
