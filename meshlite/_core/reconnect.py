"""Reconnecting to failed members: how two halves of a long partition find each other again.

Theory of operation
-------------------
memberlist forgets a dead member after ``gossip_to_the_dead_s``.  If a partition lasts
longer than that, each side has forgotten the other, gossip has nobody to carry news
across, and push/pull only ever picks live members — the halves would never merge.  Serf
solves this above memberlist (``serf.go``, ``handleReconnect``): it remembers *failed*
members (dead, not left) for ``reconnect_timeout_s`` and every ``reconnect_interval_s``
tries to join one of them at random.  A join is a push/pull, so one successful attempt
across the healed link merges both views, and gossip does the rest.

Serf skips an attempt with probability ``1 - failed/alive`` so that a large mesh with one
failed member does not send it a join from every peer every interval; we do the same.
Members that *left* gracefully are never retried: they said goodbye.

The list is bounded (``MAX_FAILED``): beyond it the oldest failure is forgotten first.
"""

from __future__ import annotations

import random

from meshlite._core.wire import Addr

__all__ = ["MAX_FAILED", "Reconnector"]

# A mesh that loses more than 1,024 members at once has a bigger problem than reconnects;
# the cap keeps a flood of fabricated deaths from growing memory.
MAX_FAILED = 1024


class Reconnector:
    """Failed members to retry, and when the next attempt is due."""

    def __init__(self, interval_s: float, timeout_s: float, now: float) -> None:
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._failed: dict[str, tuple[Addr, float]] = {}  # name -> (addr, failed at)
        self.next_attempt = now + interval_s

    def __len__(self) -> int:
        return len(self._failed)

    def failed(self, name: str, addr: Addr, now: float) -> None:
        self._failed.pop(name, None)
        self._failed[name] = (addr, now)  # insertion order = age order
        if len(self._failed) > MAX_FAILED:
            del self._failed[next(iter(self._failed))]

    def forget(self, name: str) -> None:
        """The member is alive again, or left for good."""
        self._failed.pop(name, None)

    def attempt(self, now: float, n_alive: int, rng: random.Random) -> Addr | None:
        """Called at ``next_attempt``: the address to push/pull with, or ``None``."""
        self.next_attempt = now + self.interval_s
        for name, (_addr, since) in list(self._failed.items()):
            if now - since <= self.timeout_s:
                break
            del self._failed[name]
        if not self._failed:
            return None
        if rng.random() > len(self._failed) / max(1, n_alive):
            return None
        name = rng.choice(list(self._failed))
        return self._failed[name][0]
