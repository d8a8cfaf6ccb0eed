"""The atheris harness (benchmarks/fuzz_atheris.py): every target runs, briefly, clean.

Each target runs in its own process (libFuzzer exits the process when done) for at most
10,000 inputs or about two seconds, whichever comes first; the test reads libFuzzer's
closing lines, so it fails if a target finds something, fails to start, or runs nothing.
A planted bug checks that a finding is reported as one.  The long runs and their figures
are in docs/fuzzing.md.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "fuzz_atheris.py"
TARGETS = [
    "wire_packet",
    "wire_message",
    "catalog_record",
    "catalog_state",
    "kv_command",
    "kv_snapshot",
    "raft_message",
    "raft_voters",
    "rpc_call",
    "rpc_reply",
    "stream_length",
    "channel_header",
    "dns_query",
    "udp_datagram",
    "tcp_stream",
    "raft_channel",
    "rpc_mux",
]
DONE = re.compile(r"^#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)/", re.MULTILINE)
EXECUTED = re.compile(r"^stat::number_of_executed_units: (\d+)", re.MULTILINE)
FINDINGS = ("Uncaught Python exception", "ERROR: libFuzzer", "ALARM:", "Test unit written to")


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_targets_are_the_ones_listed(tmp_path: Path) -> None:
    proc = run([str(SCRIPT), "--list"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [line.split()[0] for line in proc.stdout.splitlines()] == TARGETS


@pytest.mark.parametrize("target", TARGETS)
def test_target_runs_clean(target: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    args = [str(SCRIPT), target, "--max-time-s=1", f"--corpus={corpus}", "-runs=10000"]
    proc = run(args, tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert not [f for f in FINDINGS if f in out], out[-4000:]
    done, executed = DONE.findall(out), EXECUTED.findall(out)
    assert done, out[-4000:]
    assert executed, out[-4000:]
    execs, cov, _ft, corp = map(int, done[-1])
    assert execs == int(executed[-1]) >= 1000
    assert cov > 0
    assert corp >= 1
    assert any((corpus / target).iterdir())  # the seeds, and what the fuzzer kept
    assert not any((corpus / f"{target}-artifacts").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]  # nothing written elsewhere


PLANTED = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("fuzz_atheris", sys.argv[1])
fuzz = sys.modules["fuzz_atheris"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fuzz)
real = fuzz.TARGETS["channel_header"]
def planted(data: bytes) -> None:
    if data == b"PLANTED":
        raise KeyError("a planted bug")
    real.run(data)
fuzz.TARGETS["channel_header"] = fuzz.Target(planted, real.seeds, real.about)
sys.argv = [sys.argv[1], *sys.argv[2:]]
fuzz.main()
"""


def test_a_finding_fails_the_run_and_keeps_the_input(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "channel_header").mkdir(parents=True)
    (corpus / "channel_header" / "planted").write_bytes(b"PLANTED")
    wrapper = tmp_path / "planted.py"
    wrapper.write_text(PLANTED)
    args = [str(wrapper), str(SCRIPT), "channel_header", "--max-time-s=5", f"--corpus={corpus}"]
    proc = run(args, tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-4000:]
    assert "Uncaught Python exception" in out
    assert "a planted bug" in out
    crashes = list((corpus / "channel_header-artifacts").iterdir())
    assert [c.read_bytes() for c in crashes] == [b"PLANTED"]
