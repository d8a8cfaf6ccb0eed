"""The SWIM + Lifeguard core in the deterministic simulator: whole meshes, seeded faults.

Each test names the paper claim it checks.  Sizes: smoke by default (a few seeds, a
couple of hundred peers at most); ``MESHLITE_LONG=1`` adds seeds and the 1,000-peer run.
A failure prints ``replay with MESHLITE_SEED=<seed>``; set that variable to rerun exactly
that seed.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import attrs
import pytest
from replays import outputs_under_hash_seeds

from meshlite._core.config import SwimConfig
from meshlite._core.events import JoinRequested, MemberEventKind
from meshlite._core.swim import push_pull_scale_s
from meshlite.testing import SimCluster, SimNetwork, long_run, replay_hint, sim_seeds

DEAD, SUSPECT, LEFT = MemberEventKind.DEAD, MemberEventKind.SUSPECT, MemberEventKind.LEFT
LAN = SwimConfig.lan()
SEEDS = sim_seeds(3)
LONG = pytest.mark.skipif(not long_run(), reason="long profile: set MESHLITE_LONG=1")


def max_suspicion_s(n: int, config: SwimConfig = LAN) -> float:
    """Lifeguard's longest suspicion timeout for ``n`` members (memberlist's formula)."""
    min_s = config.suspicion_mult * max(1.0, math.log10(n)) * config.probe_interval_s
    return config.suspicion_max_timeout_mult * min_s


def summary(c: SimCluster) -> str:
    kinds = Counter(str(r.kind) for r in c.events)
    lagging = [n for n in c.live() if c.node(n).alive != set(c.live())][:5]
    return f"t={c.now:.1f}s events={dict(kinds)} lagging={lagging}"


def converge(c: SimCluster, timeout_s: float = 60.0) -> None:
    assert c.run_until(c.converged, timeout_s, poll_s=0.5), f"no convergence: {summary(c)}"


def assert_identical_views(c: SimCluster) -> None:
    """Authoritative check through every core's members(), not the event-built views."""
    live = set(c.live())
    for name in live:
        alive = {m.name for m in c.members_of(name) if m.status == "alive"}
        assert alive == live, f"{name} sees alive {sorted(alive ^ live)} differently"
    assert c.view_mismatches() == []


def deaths_of(c: SimCluster, names: set[str]) -> list[str]:
    return [f"{r.viewer}->{r.member}@{r.time_s:.1f}" for r in c.records(DEAD) if r.member in names]


# ------------------------------------------------------------------------- convergence


@pytest.mark.parametrize("seed", SEEDS)
def test_200_peers_converge_to_one_identical_view(seed: int) -> None:
    """SWIM §4: join + infection-style dissemination reach every member."""
    with replay_hint(seed):
        c = SimCluster(200, seed)
        converge(c, timeout_s=60)
        assert_identical_views(c)
        # A perfect network: nobody may even be suspected.
        assert not c.records(SUSPECT), c.records(SUSPECT)[:5]


@pytest.mark.slow
@pytest.mark.timeout(1800)
@LONG
@pytest.mark.parametrize("seed", sim_seeds(1, long_count=2, base=1000))
def test_1000_peers_converge_to_one_identical_view(seed: int) -> None:
    with replay_hint(seed):
        c = SimCluster(1000, seed)
        converge(c, timeout_s=120)
        assert_identical_views(c)
        assert not c.records(SUSPECT)


# ------------------------------------------------------------------------- failure detection


@pytest.mark.parametrize("seed", SEEDS)
def test_killing_ten_percent_is_detected_by_every_survivor(seed: int) -> None:
    """SWIM §3 completeness: every crash is eventually detected by every non-faulty member;
    and accuracy: no survivor is declared dead."""
    n = 200
    with replay_hint(seed):
        c = SimCluster(n, seed)
        converge(c)
        victims = set(random.Random(seed).sample(c.live(), n // 10))
        for v in sorted(victims):
            c.kill(v)
        survivors = set(c.live())

        def detected() -> bool:
            return all(
                c.node(s).view.get(v, "reaped") in ("dead", "reaped")
                for s in survivors
                for v in victims
            )

        timeout_s = max_suspicion_s(n) + 30 * LAN.probe_interval_s
        assert c.run_until(detected, timeout_s, poll_s=1.0), summary(c)
        seen = {(r.viewer, r.member) for r in c.records(DEAD)}
        missing = {(s, v) for s in survivors for v in victims} - seen
        assert not missing, f"{len(missing)} (survivor, victim) pairs never saw DEAD"
        assert deaths_of(c, survivors) == []
        converge(c, timeout_s=30)


@pytest.mark.parametrize("tcp_fallback", [True, False], ids=["tcp-fallback", "udp-only"])
@pytest.mark.parametrize("seed", SEEDS)
def test_five_percent_loss_causes_no_false_deaths(seed: int, tcp_fallback: bool) -> None:
    """Lifeguard §V: with indirect probes, nacks and refutation, 5% packet loss yields
    suspicions at most, never a death, over several simulated minutes."""
    n = 200 if long_run() else 64
    minutes = 10 if long_run() else 4
    config = SwimConfig(tcp_fallback=tcp_fallback)
    with replay_hint(seed):
        c = SimCluster(n, seed, config, SimNetwork(seed, loss=0.05))
        converge(c, timeout_s=120)
        c.run_for(60.0 * minutes)
        assert deaths_of(c, set(c.names())) == []
        converge(c, timeout_s=30)


# ------------------------------------------------------------------------- Lifeguard


WAKE_ORDERS = pytest.mark.parametrize(
    "timers_first", [False, True], ids=["io-first", "timers-first"]
)


@WAKE_ORDERS
@pytest.mark.parametrize("seed", SEEDS)
def test_stalled_peer_does_not_get_healthy_peers_declared_dead(
    seed: int, timers_first: bool
) -> None:
    """Lifeguard §II/§IV: a member whose event loop stalls wakes to a backlog of stale
    acks and expired timers (``timers-first``: its probe timeouts fire before it reads
    the acks that did arrive, so it accuses healthy peers); it must not get healthy
    members declared dead.  The stall (5 probe intervals) is shorter than the minimum
    suspicion timeout, so it must not be declared dead either, and the mesh must settle
    back to one view."""
    n = 50
    stall_s = 5 * LAN.probe_interval_s
    with replay_hint(seed):
        c = SimCluster(n, seed)
        converge(c)
        stalled = random.Random(seed).choice(c.live())
        c.stall(stalled, stall_s, timers_first=timers_first)
        c.run_for(stall_s + max_suspicion_s(n))
        healthy = set(c.live()) - {stalled}
        assert deaths_of(c, healthy) == []
        assert deaths_of(c, {stalled}) == []
        converge(c, timeout_s=30)


@WAKE_ORDERS
@pytest.mark.parametrize("seed", SEEDS)
def test_repeatedly_stalling_peer_never_gets_a_healthy_peer_declared_dead(
    seed: int, timers_first: bool
) -> None:
    """The Lifeguard paper's slow member: stalled 2 s out of every 3 s for two minutes.
    It may be suspected or even declared dead itself; no healthy member may."""
    n = 50
    with replay_hint(seed):
        c = SimCluster(n, seed)
        converge(c)
        slow = random.Random(seed).choice(c.live())
        for _ in range(40):
            c.stall(slow, 2.0, timers_first=timers_first)
            c.run_for(3.0)
        assert deaths_of(c, set(c.live()) - {slow}) == []
        converge(c, timeout_s=90)


# ------------------------------------------------------------------------- partitions


@pytest.mark.parametrize("seed", SEEDS)
def test_partition_heals_back_into_one_mesh(seed: int) -> None:
    """Each side declares the other dead; after the heal, gossip to the recently dead and
    push/pull let them refute and merge back into one view."""
    n = 40
    with replay_hint(seed):
        c = SimCluster(n, seed)
        converge(c)
        names = c.live()
        sides = [set(names[: n // 2]), set(names[n // 2 :])]
        c.network.partition(sides)

        def split() -> bool:
            return all(c.node(m).alive == side for side in sides for m in side)

        assert c.run_until(split, max_suspicion_s(n // 2) + 20, poll_s=0.5), summary(c)
        c.network.heal()
        # Usually gossip to the recently dead bridges the sides in seconds; when nothing
        # is left to gossip, periodic push/pull (scaled by cluster size) must.
        converge(c, timeout_s=3 * push_pull_scale_s(LAN.push_pull_interval_s, n))
        assert_identical_views(c)


def split_past_the_reap(seed: int, config: SwimConfig = LAN, n: int = 20) -> SimCluster:
    """A converged mesh cut in two halves for longer than ``gossip_to_the_dead_s``: each
    half has declared the other dead and reaped it; the network is healed on return."""
    c = SimCluster(n, seed, config)
    converge(c)
    names = c.live()
    a, b = set(names[: n // 2]), set(names[n // 2 :])
    c.network.partition([a, b])
    c.run_for(max_suspicion_s(n // 2, config) + 2 * config.gossip_to_the_dead_s)
    assert all(c.node(m).alive == a for m in a)
    assert all(c.node(m).alive == b for m in b)
    c.network.heal()
    return c


@pytest.mark.parametrize("seed", SEEDS)
def test_long_partition_heals_after_a_rejoin(seed: int) -> None:
    """Past ``gossip_to_the_dead_s`` the other side is reaped and forgotten (memberlist
    keeps no memory of it); one rejoin across the healed link, as a driver's retry-join
    does, merges the two meshes through push/pull.  Reconnect is off here, so the rejoin
    alone must do it."""
    with replay_hint(seed):
        c = split_past_the_reap(seed, attrs.evolve(LAN, reconnect_interval_s=0.0))
        names = c.live()
        c.sim.feed(names[0], JoinRequested((c.sim.addr_of(names[-1]),)))
        converge(c, timeout_s=60)
        assert_identical_views(c)


# ------------------------------------------------------------------------- leave / restart


@pytest.mark.parametrize("seed", SEEDS)
def test_graceful_leave_is_seen_as_left_never_dead(seed: int) -> None:
    n = 50
    with replay_hint(seed):
        c = SimCluster(n, seed)
        converge(c)
        leavers = set(random.Random(seed).sample(c.live(), 5))
        for name in sorted(leavers):
            c.leave(name)
        converge(c, timeout_s=30)
        assert deaths_of(c, leavers) == []
        left = {(r.viewer, r.member) for r in c.records(LEFT)}
        missing = {(s, m) for s in c.live() for m in leavers} - left
        assert not missing, sorted(missing)[:5]


@pytest.mark.parametrize("seed", SEEDS)
def test_restarted_peer_rejoins_with_a_fresh_incarnation(seed: int) -> None:
    n = 30
    with replay_hint(seed):
        c = SimCluster(n, seed)
        converge(c)
        victim = random.Random(seed).choice(c.live()[1:])
        c.kill(victim)
        assert c.run_until(lambda: c.status_of("node-0", victim) == "dead", 60, poll_s=0.5)
        c.restart(victim)
        converge(c, timeout_s=60)
        assert_identical_views(c)


# ------------------------------------------------------------------------- determinism


def chaos_run(seed: int, n: int = 30) -> tuple[str, int]:
    """Joins, loss, duplication, reordering, a crash, a stall and a partition."""
    net = SimNetwork(seed, loss=0.05, duplicate=0.02, reorder=0.05)
    c = SimCluster(n, seed, network=net, join_spread_s=2.0)
    c.run_for(10.0)
    c.kill("node-3")
    c.stall("node-5", 4.0)
    c.network.partition([[f"node-{i}" for i in range(n // 3)]])
    c.run_for(10.0)
    c.network.heal()
    c.leave("node-7")
    c.run_for(10.0)
    return c.trace_digest(), len(c.events)


@pytest.mark.parametrize("seed", SEEDS)
def test_same_seed_gives_an_identical_trace(seed: int) -> None:
    with replay_hint(seed):
        first = chaos_run(seed)
        assert chaos_run(seed) == first
        assert chaos_run(seed + 1000)[0] != first[0]


def test_trace_does_not_depend_on_the_hash_seed() -> None:
    """A seed printed by CI must replay on a laptop: PYTHONHASHSEED (set iteration order)
    must not leak into the run."""
    code = "from tests.test_sim_swim import chaos_run; print(chaos_run(7, 20)[0])"
    digests = outputs_under_hash_seeds(code, ("0", "1", "12345"))
    assert len(digests) == 1, digests


@pytest.mark.parametrize("seed", SEEDS)
def test_long_partition_heals_by_itself_through_reconnect(seed: int) -> None:
    """Serf's reconnect: past ``gossip_to_the_dead_s`` both sides have reaped each other,
    yet each still remembers the failed members and retries one every
    ``reconnect_interval_s``, so the mesh merges again with no rejoin from outside."""
    with replay_hint(seed):
        c = split_past_the_reap(seed)
        # One interval for an attempt to fall due, a few more for Serf's 1 - failed/alive
        # skip (half the mesh failed: each peer tries with probability ~1).
        converge(c, timeout_s=3 * LAN.reconnect_interval_s)
        assert_identical_views(c)


def test_graceful_leavers_are_not_reconnected() -> None:
    """Members that left said goodbye: nobody retries them (only failures are)."""
    with replay_hint(SEEDS[0]):
        c = SimCluster(6, SEEDS[0])
        converge(c)
        leaver = c.live()[0]
        c.leave(leaver)
        c.run_for(LAN.gossip_to_the_dead_s + 3 * LAN.reconnect_interval_s)
        assert all(c.node(n).core.stats.get("reconnects", 0) == 0 for n in c.live())
