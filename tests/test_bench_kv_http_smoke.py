"""Smoke of benchmarks/bench_kv_http.py: both systems end to end with tiny parameters.

Skipped when Debian's ``etcd-server`` is not installed.  Only the shape of the results is
checked (every cell measured, no failed request, wake-ups recorded): benchmarks measure,
tests never assert timings.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_kv_http.py"
TIMEOUT_S = 180  # the run itself takes 10-20 s; start-ups are bounded at 60 s each


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server is not installed")
@pytest.mark.timeout(TIMEOUT_S + 20)
def test_bench_kv_http_smoke(tmp_path: Path) -> None:
    out_json = tmp_path / "kv_http.json"
    out = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--json", str(out_json)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "meshlite/etcd" in out.stdout and "etcd Version" in out.stdout
    results = json.loads(out_json.read_text())
    cells = results["cells"]
    assert {(c["op"], c["concurrency"]) for c in cells} == {
        (op, conc) for op in ("put", "get", "mix") for conc in (1, 4)
    }
    for cell in cells:
        for system in ("meshlite", "etcd"):
            assert cell[system]["ops_per_s"] > 0 and cell[system]["errors"] == 0, cell
    assert len(results["wakeup_ms"]["meshlite"]) == len(results["wakeup_ms"]["etcd"]) == 3
    assert "meshlite blocking query (GET ?index) woken by a PUT" in out.stdout
