"""Smoke of benchmarks/bench_checks.py: it runs and prints its result lines.

Only the shape of the output is checked: benchmarks measure, tests never assert timings.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_checks.py"


@pytest.mark.parametrize("args", [[], ["--kind", "async", "--backend", "trio"]])
@pytest.mark.timeout(120)
def test_bench_checks_smoke(args: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "checks=100 " in out.stdout
    for line in ("baseline (idle loop)", "with checks", "net cost of the checks", "CPU per run"):
        assert line in out.stdout, out.stdout
