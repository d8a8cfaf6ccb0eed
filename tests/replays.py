"""Shared by the simulation tests: a seed must replay whatever the string hashing.

A seed printed by CI must replay on a laptop, so ``PYTHONHASHSEED`` (which changes set and
dict-of-str iteration orders) must not leak into a simulated run.  :func:`outputs_under_hash_seeds`
runs the same snippet in fresh interpreters with different hash seeds and returns what each
printed; a test asserts they are all one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 120.0


def _path() -> str:
    """tests/ on the path too, as pytest has it: the snippet may import test modules."""
    return os.pathsep.join(p for p in (str(ROOT / "tests"), os.environ.get("PYTHONPATH")) if p)


def outputs_under_hash_seeds(code: str, hash_seeds: Sequence[str] = ("1", "2")) -> set[str]:
    """The distinct stdouts of ``python -c code`` under each ``PYTHONHASHSEED``."""
    outputs = set()
    for hash_seed in hash_seeds:
        done = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": _path()},
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr
        outputs.add(done.stdout.strip())
    return outputs
