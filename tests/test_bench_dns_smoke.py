"""Smoke of benchmarks/bench_dns.py: it runs end to end against a real agent and reports.

Only the shape of the output is checked: benchmarks measure, tests never assert timings.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_dns.py"


@pytest.mark.timeout(180)
def test_bench_dns_smoke() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--smoke"],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "DNS SRV lookup over UDP, 3 instances" in out.stdout
    for line in ("queries/s", "latency p50", "latency p99", "Answerer.respond", "canned UDP echo"):
        assert line in out.stdout, out.stdout
