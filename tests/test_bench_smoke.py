"""Smoke of the membership benchmark (benchmarks/bench_membership_vs_serf.py) for meshlite.

Five ``meshlite agent`` processes on loopback, LAN timing, a 10-second quiet window, one
SIGKILL: the harness must see the newcomer join everywhere, the victim declared dead
everywhere, and no other member declared dead.  Numbers are only reported, never asserted
against a budget (benchmarks measure; tests check behaviour).  About 30 s.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "bench_membership_vs_serf.py"
# The smoke's own phases are bounded (join 60 s, detection 120 s in the worst case); this
# is the outer bound for a harness that hangs.
TIMEOUT_S = 240


@pytest.mark.skipif(
    shutil.which("meshlite", path=str(Path(sys.executable).parent)) is None,
    reason="the meshlite script is not installed beside this Python",
)
@pytest.mark.timeout(TIMEOUT_S + 30)
def test_membership_bench_smoke_meshlite(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--smoke",
            "--systems",
            "meshlite",
            "--out-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| 5 | meshlite |" in out.stdout
    (result,) = tmp_path.glob("membership_vs_serf-*.json")
    payload = json.loads(result.read_text())
    (run,) = payload["runs"]
    assert "error" not in run
    assert run["warm_converged"], run
    assert run["join_seen_by"] == 4, run
    assert run["join_s"] is not None, run
    assert run["detect_seen_by"] == 4, run
    assert run["detect_s"] is not None, run
    assert run["false_failures_total"] == 0, run["false_failed_members"]
    assert run["exited"] == {}, run
    assert run["cpu_s_per_member_min"] is not None
    assert payload["summary"]["5"]["meshlite"]["runs"] == 1
    assert (tmp_path / "logs").is_dir()
