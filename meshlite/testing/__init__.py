"""Deterministic simulation for meshlite (public, like ``trio.testing``).

Run a whole mesh of sans-I/O cores in one thread, on a simulated clock and a seeded,
faulty network, so that a run is a pure function of its seed and a failing seed replays
exactly (FoundationDB's simulator, TigerBeetle's VOPR)::

    from meshlite.testing import SimCluster, SimNetwork

    cluster = SimCluster(200, seed=7, network=SimNetwork(7, loss=0.05))
    assert cluster.run_until(cluster.converged, timeout_s=60)
    cluster.kill("node-3")
    assert cluster.run_until(lambda: cluster.status_of("node-0", "node-3") == "dead", 60)

See ``docs/testing.md`` for the full guide.
"""

from __future__ import annotations

from meshlite.testing._clock import SimClock
from meshlite.testing._engine import SimCore, Simulation, SimulationError
from meshlite.testing._network import SimNetwork
from meshlite.testing._ports import free_port, free_ports, port_free
from meshlite.testing._replay import env_seed, long_run, replay_hint, sim_seeds
from meshlite.testing._swim import MemberRecord, SimCluster, SwimLike, SwimNode, sim_addr

__all__ = [
    "MemberRecord",
    "SimClock",
    "SimCluster",
    "SimCore",
    "SimNetwork",
    "Simulation",
    "SimulationError",
    "SwimLike",
    "SwimNode",
    "env_seed",
    "free_port",
    "free_ports",
    "long_run",
    "port_free",
    "replay_hint",
    "sim_addr",
    "sim_seeds",
]
