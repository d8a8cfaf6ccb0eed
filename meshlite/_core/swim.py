"""SWIM + Lifeguard membership core (sans-I/O).  INTERFACE STUB — being implemented.

The contract every driver relies on:

    core = SwimCore(name, addr, config, rng, now, meta=None, local_state=None)
    effects = core.handle(inp, now)      # inp: meshlite._core.events.Input
    core.next_deadline() -> float        # call handle(TimerFired(), t) once now >= t
    core.members() -> list[Member]       # every known member incl. self, sorted by name
    core.member(name) -> Member | None
    core.stats -> dict[str, int]         # counters: drops by reason, probes, suspicions...
    core.pending_broadcasts() -> int     # leave waits for this to reach 0 (or a timeout)
    core.health_score -> int             # Lifeguard local health (0 = healthy)

``local_state`` is a zero-argument callable returning opaque bytes sent in every push/pull
(the service catalog's full state, issue 3); received states come out as
``UserStateMerged`` effects.
"""

from __future__ import annotations
