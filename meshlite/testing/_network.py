"""A seeded, faulty, simulated network.

Theory of operation
-------------------
:class:`SimNetwork` decides the fate of every message the simulated cores send; the event
loop (:class:`~meshlite.testing.Simulation`) carries the decision out.  Two kinds of
traffic exist, as in memberlist's transport: *datagrams* (UDP: probes, acks, gossip),
which may be lost, duplicated, delayed and reordered, and *streams* (TCP: push/pull, the
fallback ping), which are reliable and ordered but are cut by partitions and time out.

Every random choice comes from one ``random.Random(seed)`` and is drawn in event order,
so a run is a pure function of its seeds (FoundationDB's simulator; TigerBeetle's VOPR).
Faults, checked both when a message is sent and when it arrives:

* ``loss`` / ``duplicate`` / ``reorder``: per-datagram probabilities.  A reordered
  datagram is held back by an extra delay of up to ``reorder_delay_s``, so later packets
  overtake it.
* :meth:`SimNetwork.partition`: groups of node names that cannot reach each other;
  messages across groups are dropped (a stream across groups fails by timing out).
* :meth:`SimNetwork.clog`: FoundationDB's *clogging* — messages from ``a`` to ``b`` are
  held, not dropped, until :meth:`SimNetwork.unclog`, then delivered all at once.

Nodes are named by their simulation names; the network never sees addresses or bytes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

from meshlite.errors import ConfigError

__all__ = ["SimNetwork"]

Deliver = Callable[[Any], None]
Schedule = Callable[[float, Deliver, Any], None]

# A LAN round trip is a few hundred microseconds to a few milliseconds; memberlist's LAN
# profile (probe_timeout 500 ms) is tuned for that, so the default one-way delay sits there.
DEFAULT_DELAY_S = (0.0005, 0.005)
_REST = -1  # the partition group of every name not listed in a partition


def _probability(name: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"SimNetwork {name} must be a probability in [0, 1], got {p!r}")
    return float(p)


def _delay_range(delay_s: tuple[float, float]) -> tuple[float, float]:
    lo, hi = delay_s
    if not 0.0 <= lo <= hi:
        raise ConfigError(
            f"SimNetwork delay_s must be (lo, hi) with 0 <= lo <= hi, got {delay_s!r}"
        )
    return (float(lo), float(hi))


class SimNetwork:
    """Fault model and fault switches of the simulated network (see the module docstring).

    ``seed`` makes every loss/delay/duplication decision reproducible.  One network
    serves one simulation.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        loss: float = 0.0,
        delay_s: tuple[float, float] = DEFAULT_DELAY_S,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        reorder_delay_s: float = 0.05,
    ) -> None:
        self.seed = seed
        self._rng = random.Random(seed)
        self.loss = 0.0
        self.delay_s = DEFAULT_DELAY_S
        self.duplicate = 0.0
        self.reorder = 0.0
        self.reorder_delay_s = 0.0
        self.configure(
            loss=loss,
            delay_s=delay_s,
            duplicate=duplicate,
            reorder=reorder,
            reorder_delay_s=reorder_delay_s,
        )
        self._group: dict[str, int] = {}
        self._clogged: set[tuple[str, str]] = set()
        self._held: dict[tuple[str, str], list[tuple[Deliver, Any]]] = {}
        self._schedule: Schedule | None = None
        self._now: Callable[[], float] = lambda: 0.0
        self.stats: dict[str, int] = dict.fromkeys(
            ("sent", "lost", "duplicated", "reordered", "partitioned", "held", "released"), 0
        )

    # ------------------------------------------------------------------ configuration

    def configure(
        self,
        *,
        loss: float | None = None,
        delay_s: tuple[float, float] | None = None,
        duplicate: float | None = None,
        reorder: float | None = None,
        reorder_delay_s: float | None = None,
    ) -> None:
        """Change fault rates; takes effect for messages sent from now on."""
        if loss is not None:
            self.loss = _probability("loss", loss)
        if delay_s is not None:
            self.delay_s = _delay_range(delay_s)
        if duplicate is not None:
            self.duplicate = _probability("duplicate", duplicate)
        if reorder is not None:
            self.reorder = _probability("reorder", reorder)
        if reorder_delay_s is not None:
            if not reorder_delay_s >= 0.0:
                raise ConfigError(f"reorder_delay_s must be >= 0, got {reorder_delay_s!r}")
            self.reorder_delay_s = float(reorder_delay_s)

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Split the network: names in different groups cannot reach each other.

        Names listed in no group (including nodes added later) form one more group
        together.  Replaces any previous partition; :meth:`heal` removes it.
        """
        group: dict[str, int] = {}
        for i, members in enumerate(groups):
            for name in members:
                if name in group:
                    raise ConfigError(f"{name!r} is listed in two partition groups")
                group[name] = i
        self._group = group

    def heal(self) -> None:
        """Remove the partition and every clog: the network is whole again."""
        self._group = {}
        self.unclog()

    def reachable(self, a: str, b: str) -> bool:
        """Whether ``a`` and ``b`` are on the same side of the current partition."""
        group = self._group
        return not group or group.get(a, _REST) == group.get(b, _REST)

    def clog(self, a: str, b: str, *, both: bool = False, duration_s: float | None = None) -> None:
        """Hold messages from ``a`` to ``b`` (and back, if ``both``) until unclogged.

        With ``duration_s`` the clog lifts by itself that many simulated seconds from now.
        """
        pairs = [(a, b), (b, a)] if both else [(a, b)]
        self._clogged.update(pairs)
        if duration_s is not None:
            if self._schedule is None:
                raise ConfigError("clog(duration_s=...) needs the network attached to a simulation")
            for pair in pairs:
                self._schedule(self._now() + duration_s, self._unclog_pair, pair)

    def unclog(self, a: str | None = None, b: str | None = None, *, both: bool = False) -> None:
        """Lift the clog ``a -> b`` (and back, if ``both``); with no names, lift all clogs.

        Held messages are released at once, each with a fresh delay.
        """
        if a is None and b is None:
            pairs = list(self._held)  # dict order: deterministic, unlike the set
            self._clogged.clear()
        elif a is not None and b is not None:
            pairs = [(a, b), (b, a)] if both else [(a, b)]
        else:
            raise ConfigError("unclog() takes both names or none")
        for pair in pairs:
            self._unclog_pair(pair)

    def clogged(self, a: str, b: str) -> bool:
        return (a, b) in self._clogged

    # ------------------------------------------------------------------ used by the loop

    def _attach(self, schedule: Schedule, now: Callable[[], float]) -> None:
        if self._schedule is not None:
            raise ConfigError("a SimNetwork serves one simulation; create one per simulation")
        self._schedule = schedule
        self._now = now

    def _unclog_pair(self, pair: tuple[str, str]) -> None:
        self._clogged.discard(pair)
        held = self._held.pop(pair, None)
        if not held or self._schedule is None:
            return
        now = self._now()
        self.stats["released"] += len(held)
        for deliver, arg in held:
            self._schedule(now + self._delay(), deliver, arg)

    def _delay(self) -> float:
        lo, hi = self.delay_s
        return lo if lo == hi else self._rng.uniform(lo, hi)

    def _plan_datagram(self, src: str, dst: str) -> tuple[float, ...]:
        """Delivery delays for one datagram: ``()`` if lost, two entries if duplicated."""
        stats = self.stats
        stats["sent"] += 1
        if not self.reachable(src, dst):
            stats["partitioned"] += 1
            return ()
        rng = self._rng
        if self.loss and rng.random() < self.loss:
            stats["lost"] += 1
            return ()
        delay = self._delay()
        if self.reorder and rng.random() < self.reorder:
            stats["reordered"] += 1
            delay += rng.uniform(0.0, self.reorder_delay_s)
        if self.duplicate and rng.random() < self.duplicate:
            stats["duplicated"] += 1
            return (delay, self._delay())
        return (delay,)

    def _plan_stream(self, src: str, dst: str) -> float | None:
        """One leg of a stream: its delay, or None if it cannot get through now."""
        if not self.reachable(src, dst):
            self.stats["partitioned"] += 1
            return None
        return self._delay()

    def _admit(self, src: str, dst: str, deliver: Deliver, arg: Any) -> bool:
        """At arrival: True to deliver now; False if dropped or held by a clog."""
        if not self.reachable(src, dst):
            self.stats["partitioned"] += 1
            return False
        if self._clogged and (src, dst) in self._clogged:
            self.stats["held"] += 1
            self._held.setdefault((src, dst), []).append((deliver, arg))
            return False
        return True
