"""schemathesis against the agent's own ``/v1/openapi.json``: no 5xx for any generated input.

A real ``meshlite agent --dev`` and schemathesis's CLI both run inside a network namespace
that has nothing but ``lo``: the fuzzer registers services with HTTP and TCP checks aimed at
whatever addresses it makes up, and from in there they reach nothing (network hygiene).

Settings (``tests/schemathesis/schemathesis.toml``): ``?wait`` is pinned to 50 ms, or every
generated ``?index=`` would hold its request for the default five minutes; and
``/v1/agent/health/service/*`` may answer 429 and 503, Consul's documented way of saying
"warning" and "critical" (with a body), which is not a server error.  ``PUT
/v1/agent/leave`` is left out: it makes the agent leave and exit, ending the run.

CI spends ``BUDGET_S`` fuzzing (thousands of requests); ``MESHLITE_LONG=1`` spends ten
minutes.  A failure prints schemathesis's report with a ``curl`` line to reproduce it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from netns import LineProcess, require_isolated

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "schemathesis" / "schemathesis.toml"
BUDGET_S = 600 if os.environ.get("MESHLITE_LONG") else 45
PORT = 8500


def test_no_generated_request_gets_a_server_error(tmp_path: Path) -> None:
    st = Path(sys.executable).parent / "st"
    assert st.exists(), f"schemathesis's CLI is missing at {st}: install '.[test]'"
    with require_isolated() as host:
        agent = LineProcess(
            host,
            [sys.executable, "-m", "meshlite.cli", "agent", "--dev", "--name", "fuzz",
             "--http", f"127.0.0.1:{PORT}"],
        )  # fmt: skip
        try:
            assert agent.wait_for(lambda s: "HTTP API listening" in s, 30), agent.output()
            args = [str(st), "--no-color", "--config-file", str(CONFIG), "run",
                    f"http://127.0.0.1:{PORT}/v1/openapi.json",
                    "--checks", "not_a_server_error", "--exclude-path", "/v1/agent/leave",
                    "--phases", "examples,fuzzing,stateful", "--workers", "2",
                    "--max-time", str(BUDGET_S)]  # fmt: skip
            run = subprocess.run(  # in tmp_path: schemathesis keeps a crash cache in its cwd
                host.command(args),
                capture_output=True,
                text=True,
                timeout=BUDGET_S + 180,
                cwd=tmp_path,
            )
            report = run.stdout + run.stderr
            assert run.returncode == 0, report[-8000:]
            assert " passed" in report and "Server error" not in report, report[-8000:]
            assert agent.proc.poll() is None, "the agent died: " + agent.output()[-3000:]
        finally:
            agent.kill()
