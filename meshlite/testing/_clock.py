"""Simulated monotonic time.

Theory of operation
-------------------
The sans-I/O cores never read a clock: every ``handle(inp, now)`` is told the time.  In the
simulator that time comes from one :class:`SimClock` that only the event loop moves, and
only forward, jumping straight from one scheduled event to the next (discrete-event
simulation, as in FoundationDB's simulator).  A thousand peers idle for an hour of
simulated time therefore cost nothing but the events they actually produce.
"""

from __future__ import annotations

from meshlite.errors import ConfigError

__all__ = ["SimClock"]


class SimClock:
    """Monotonic simulated seconds, starting at ``start_s``.

    Read :attr:`now`; only the simulation advances it (:meth:`advance_to`), so everything
    a test observes between two steps happens at one instant.
    """

    __slots__ = ("_now",)

    def __init__(self, start_s: float = 0.0) -> None:
        if not start_s >= 0.0:
            raise ConfigError(f"SimClock start_s must be >= 0, got {start_s!r}")
        self._now = float(start_s)

    @property
    def now(self) -> float:
        """The current simulated time in seconds."""
        return self._now

    def advance_to(self, t: float) -> None:
        """Move time forward to ``t``; going backwards is a bug in the caller."""
        if t < self._now:
            raise ConfigError(f"SimClock cannot go backwards: now={self._now!r}, asked {t!r}")
        self._now = t

    def __call__(self) -> float:
        """So a clock can stand in wherever a ``time.monotonic``-like callable is expected."""
        return self._now

    def __repr__(self) -> str:
        return f"SimClock(now={self._now:.6f})"
