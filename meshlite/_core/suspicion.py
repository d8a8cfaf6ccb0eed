"""Lifeguard dynamic suspicion: accusations that shrink with independent confirmations.

Theory of operation
-------------------
SWIM (Das et al. 2002, §4.2) marks an unresponsive member *suspect* and declares it dead
after a fixed timeout unless it refutes.  Lifeguard (arXiv 1707.00788, §IV-B "Local
Health Aware Suspicion") makes that timeout dynamic: it starts long (``max_s``) so that a
healthy-but-slow member has time to hear the accusation and refute, and shrinks towards
``min_s`` as *independent* peers confirm the suspicion — several peers failing to reach a
member is much stronger evidence than one.  The shrink is logarithmic, as memberlist's
``remainingSuspicionTime`` (``suspicion.go``)::

    timeout(n) = max(min_s, max_s - log(n + 1) / log(k + 1) * (max_s - min_s))

where ``n`` counts confirmations from distinct senders (the accuser itself does not
count) and ``k`` is how many we expect.  memberlist's parameters (``state.go:
suspectNode``, ``util.go: suspicionTimeout``), kept here so operators recognise them:

* ``k = suspicion_mult - 2``: the nominal timeout is hit two probe intervals early,
  since we have no phase relationship with the confirming peers; ``k = 0`` when the
  cluster is too small to produce that many confirmers (``n_members - 2 < k``);
* ``min_s = suspicion_mult * max(1, log10(n_members)) * probe_interval_s``;
* ``max_s = suspicion_max_timeout_mult * min_s``.

A suspicion with ``k = 0`` starts at ``min_s`` (nobody will confirm, so waiting for
confirmations is pointless).
"""

from __future__ import annotations

import math

import attrs

__all__ = [
    "Suspicion",
    "remaining_suspicion_s",
    "suspicion_params",
    "suspicion_timeout_s",
]


def suspicion_timeout_s(suspicion_mult: int, n_members: int, probe_interval_s: float) -> float:
    """memberlist ``suspicionTimeout``: the *minimum* suspicion timeout for a cluster size.

    The ``max(1, ...)`` keeps clusters below ten members at one log unit instead of
    collapsing towards zero (``log10(1) == 0``).  memberlist truncates the node scale to
    thousandths (integer durations); so do we, to stay comparable.
    """
    node_scale = max(1.0, math.log10(max(1.0, float(n_members))))
    return suspicion_mult * (math.floor(node_scale * 1000.0) / 1000.0) * probe_interval_s


def remaining_suspicion_s(
    n_confirmations: int, k_expected: int, elapsed_s: float, min_s: float, max_s: float
) -> float:
    """How much longer to wait before declaring a suspect dead (may be negative).

    ``elapsed_s`` is the time since the suspicion started; a negative answer means the
    (shrunk) timeout has already passed.  Like memberlist the total timeout is floored to
    whole milliseconds, and never drops below ``min_s``.
    """
    if k_expected < 1:
        return min_s - elapsed_s
    frac = math.log(n_confirmations + 1.0) / math.log(k_expected + 1.0)
    raw_s = max_s - frac * (max_s - min_s)
    timeout_s = max(math.floor(1000.0 * raw_s) / 1000.0, min_s)
    return timeout_s - elapsed_s


def suspicion_params(
    suspicion_mult: int, max_timeout_mult: int, n_members: int, probe_interval_s: float
) -> tuple[int, float, float]:
    """``(k, min_s, max_s)`` for a new suspicion in a cluster of ``n_members``."""
    k = suspicion_mult - 2
    if n_members - 2 < k:
        k = 0
    min_s = suspicion_timeout_s(suspicion_mult, n_members, probe_interval_s)
    return max(k, 0), min_s, max_timeout_mult * min_s


@attrs.define
class Suspicion:
    """One suspected member's timer.  ``deadline_s`` is when it will be declared dead."""

    k: int
    min_s: float
    max_s: float
    start_s: float
    deadline_s: float
    confirmations: set[str]
    n: int = 0

    @classmethod
    def start(cls, accuser: str, k: int, min_s: float, max_s: float, now: float) -> Suspicion:
        """A fresh suspicion raised by ``accuser`` (who never counts as a confirmation)."""
        timeout_s = max_s if k >= 1 else min_s
        return cls(k, min_s, max_s, now, now + timeout_s, {accuser})

    def confirm(self, sender: str, now: float) -> bool:
        """Count ``sender``'s independent confirmation; ``True`` if it was new information.

        Duplicates, and anything beyond ``k`` confirmations, return ``False`` — which
        also caps the confirmer set at ``k + 1`` names whatever a hostile peer sends.
        """
        if self.n >= self.k or sender in self.confirmations:
            return False
        self.confirmations.add(sender)
        self.n += 1
        remaining_s = remaining_suspicion_s(
            self.n, self.k, now - self.start_s, self.min_s, self.max_s
        )
        self.deadline_s = now + max(remaining_s, 0.0)
        return True
