"""Lifeguard local health awareness: how much should this peer distrust itself?

Theory of operation
-------------------
Lifeguard (Dadgar et al., arXiv 1707.00788, §IV-A "Local Health Aware Probe") observes
that most false positives in SWIM come from a *slow prober*, not from a dead probe
target: a peer starved of CPU or network misses acks and then accuses healthy members.
Each peer therefore keeps a saturating health score, ``0`` (healthy) up to
``awareness_max_multiplier - 1``, and multiplies its probe interval and probe timeout
by ``score + 1`` (:meth:`Awareness.scale_timeout`).  A struggling peer slows down and
waits longer before it accuses anybody.

The deltas are memberlist's (``awareness.go``, ``state.go: probeNode/refute``):

* ``-1`` for a probe answered in time (or answered only over the TCP fallback);
* ``+1`` for a failed probe when no relay could send a nack;
* ``+(expected_nacks - nacks)`` for a failed probe sent through nack-capable relays:
  relays that could not even answer "I could not reach the target either" point at us
  (:func:`failed_probe_delta`);
* ``+1`` whenever we must refute a suspicion or death of ourselves — somebody could not
  reach us, which is evidence that we are the problem.
"""

from __future__ import annotations

from meshlite.errors import ConfigError

__all__ = ["Awareness", "failed_probe_delta"]


class Awareness:
    """A saturating counter in ``[0, max_multiplier - 1]``."""

    __slots__ = ("_max", "_score")

    def __init__(self, max_multiplier: int) -> None:
        if max_multiplier < 1:
            raise ConfigError(f"awareness_max_multiplier must be >= 1, got {max_multiplier!r}")
        self._max = max_multiplier
        self._score = 0

    @property
    def score(self) -> int:
        """0 is healthy; each step up scales timeouts by one more base unit."""
        return self._score

    def apply_delta(self, delta: int) -> int:
        """Add ``delta`` (either sign), clamp to ``[0, max - 1]``; return the new score."""
        self._score = min(max(self._score + delta, 0), self._max - 1)
        return self._score

    def scale_timeout(self, timeout_s: float) -> float:
        """``timeout_s * (score + 1)``: memberlist's ``ScaleTimeout``."""
        return timeout_s * (self._score + 1)


def failed_probe_delta(expected_nacks: int, nacks: int) -> int:
    """The health penalty for a probe that got no ack (memberlist ``probeNode``).

    With nack-capable relays, every relay that stayed silent counts against us; without
    any relay, the failure itself counts once.
    """
    if expected_nacks > 0:
        return max(expected_nacks - nacks, 0)
    return 1
