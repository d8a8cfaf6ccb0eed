"""Smoke of benchmarks/bench_discover.py: it runs end to end and reports every case.

Only the shape of the output is checked: benchmarks measure, tests never assert timings.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_discover.py"


@pytest.mark.timeout(120)
def test_bench_discover_smoke() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--smoke"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "20 services x 3 instances registered" in out.stdout
    for case in ("discover(name) ", "discover(name, tag=...)", "pick(name)", "HTTP health query"):
        assert case in out.stdout, out.stdout
