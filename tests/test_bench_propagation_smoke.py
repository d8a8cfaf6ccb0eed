"""Smoke of benchmarks/bench_service_propagation.py: five peer processes, one repeat.

The smoke registers a service on one peer, fails and recovers its callable check (0.5 s
interval), and deregisters it; each phase must reach all five peers' ``watch()``, and the
table, the cross-check lines and the JSON must have their shape.  Timings are only
reported, never asserted (benchmarks measure; tests check behaviour).  About 10-15 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_service_propagation.py"
PHASES = ("register", "fail", "recover", "deregister")
# The smoke's phases are bounded (start-up ~20 s, 30 s a phase, in the worst case); this
# outer bound is for a harness that hangs.
TIMEOUT_S = 120


@pytest.mark.timeout(TIMEOUT_S + 30)
def test_bench_propagation_smoke(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert "5 peers (processes), LAN profile" in out.stdout
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| ")]
    assert [r[0].strip() for r in rows[1:]] == list(PHASES), out.stdout
    for row in rows[1:]:
        assert row[1].strip() == "1/1", out.stdout  # every peer saw the phase's change
    assert "watch yielded > 0.1 s after a discover() poll" in out.stdout
    assert "user_delivered per peer:" in out.stdout

    (result,) = tmp_path.glob("service_propagation-*.json")
    payload = json.loads(result.read_text())
    assert "error" not in payload, payload["error"]
    assert payload["exited"] == {}
    assert [r["phase"] for r in payload["runs"]] == list(PHASES)
    for run in payload["runs"]:
        assert run["seen_by"] == run["peers"] == 5, run
        assert run["missing"] == {}, run
        assert run["last_s"] >= run["p50_s"] >= run["first_s"] >= 0, run
    assert set(payload["stats"]) == {f"m{i:02d}" for i in range(5)}
    assert set(payload["summary"]) == set(PHASES)
    logs = Path(payload["logs"])
    assert sorted(p.name for p in logs.glob("*.log")) == [f"m{i:02d}.log" for i in range(5)]
