"""Smoke of benchmarks/bench_thread_hop.py: both ways run, on both backends, and the table
has a row each and the ratio row (numbers are reported, never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_thread_hop.py"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_bench_thread_hop_smoke(backend: str) -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--hops", "200", "--repeats", "1", "--backend", backend],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows[1:]] == [
        "anyio.to_thread",
        "SerialThread",
        "SerialThread / anyio",
    ]


def test_bench_thread_hop_refuses_bad_arguments() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--hops", "0"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "--hops" in done.stderr
