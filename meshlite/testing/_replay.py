"""Seeds: choosing them, and printing them when a simulated run fails.

Theory of operation
-------------------
A simulated run is a pure function of its seed, so a failure is only useful if its seed
is printed and can be fed back (TigerBeetle's VOPR prints the seed; FoundationDB's
simulator takes ``-s SEED``).  Tests take their seeds from :func:`sim_seeds`, which
honours ``MESHLITE_SEED`` (replay one seed) and ``MESHLITE_LONG=1`` (many seeds), and
wrap their assertions in :func:`replay_hint`, which adds "replay with MESHLITE_SEED=..."
to whatever exception escapes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from meshlite.errors import ConfigError

__all__ = ["env_seed", "long_run", "replay_hint", "sim_seeds"]

SEED_ENV = "MESHLITE_SEED"
LONG_ENV = "MESHLITE_LONG"


def env_seed() -> int | None:
    """The seed in ``MESHLITE_SEED``, or None when unset."""
    text = os.environ.get(SEED_ENV, "").strip()
    if not text:
        return None
    try:
        return int(text, 0)
    except ValueError:
        raise ConfigError(f"{SEED_ENV}={text!r} is not an integer seed") from None


def long_run() -> bool:
    """Whether the long profile is on (``MESHLITE_LONG=1``)."""
    return os.environ.get(LONG_ENV, "").strip() not in ("", "0")


def sim_seeds(count: int = 3, *, long_count: int = 20, base: int = 0) -> list[int]:
    """Seeds to parametrize a simulation test over.

    ``[MESHLITE_SEED]`` when that is set (replay); else ``count`` seeds, or ``long_count``
    under ``MESHLITE_LONG=1``.  ``base`` lets two tests use different seed ranges.
    """
    seed = env_seed()
    if seed is not None:
        return [seed]
    n = long_count if long_run() else count
    return [base + i for i in range(n)]


@contextmanager
def replay_hint(seed: int) -> Iterator[None]:
    """Add "replay with MESHLITE_SEED=<seed>" to any exception raised inside the block."""
    try:
        yield
    except BaseException as exc:
        note = f"replay with {SEED_ENV}={seed}"
        if note not in getattr(exc, "__notes__", ()):
            exc.add_note(note)
        raise
