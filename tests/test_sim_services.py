"""The service catalog on a simulated mesh: registrations, health changes and node deaths
reach every peer's ``discover()``, over a lossy network.

Each peer has a real ``Directory`` (the sans-I/O half of ``Mesh.discover``) fed exactly as
the mesh feeds it: SWIM user broadcasts, push/pull states and membership events.  The
default run is 200 peers (two seeds) and 1,000 peers (one seed, about two minutes), all
with 5% packet loss; ``MESHLITE_LONG=1`` runs more seeds of each.
"""

from __future__ import annotations

import pytest

from meshlite._core.catalog import Record
from meshlite._core.directory import Directory
from meshlite._core.events import MemberEvent, UserMessage, UserStateMerged
from meshlite._health import Status
from meshlite.testing import SimCluster, SimNetwork, replay_hint, sim_seeds


class Catalogs:
    """A ``Directory`` per simulated peer, wired to its SWIM core like ``Mesh`` wires it."""

    def __init__(self, n: int, seed: int, loss: float) -> None:
        self.dirs: dict[str, Directory] = {}
        self.drops = 0
        self.c = SimCluster(
            n,
            seed,
            network=SimNetwork(seed, loss=loss),
            local_state=lambda name: self._new(name).local_state,
            record_events=False,
        )
        self.c.add_effect_hook(self._effect)
        self.c.add_member_hook(self._member)

    def _new(self, name: str) -> Directory:
        self.dirs[name] = Directory(name, first_version=1)
        return self.dirs[name]

    def _effect(self, name: str, eff: object, now: float) -> None:
        d = self.dirs[name]
        if isinstance(eff, UserMessage):
            _, fixes, relays = d.on_broadcast(eff.payload, now)
        elif isinstance(eff, UserStateMerged):
            _, fixes, relays = d.on_state(eff.state, now, relay=not eff.join)
        else:
            return
        for broadcast in fixes + relays:
            self.c.sim.feed(name, broadcast)

    def _member(self, name: str, event: MemberEvent, _now: float) -> None:
        self.dirs[name].on_member(event)

    def publish(self, node: str, port: int, status: Status = Status.PASSING) -> None:
        record = Record(node, "web-1", 0, "web", "10.0.0.1", port, ("v1",), {}, str(status))
        _names, broadcast = self.dirs[node].publish(record, self.c.now)
        self.c.sim.feed(node, broadcast)

    def everyone_sees(self, want: set[tuple[str, int, str]], passing_only: bool) -> bool:
        return all(
            {(i.node, i.port, i.status) for i in self.dirs[n].discover("web", None, passing_only)}
            == want
            for n in self.c.live()
        )


def run_scenario(n: int, seed: int) -> None:
    with replay_hint(seed):
        cats = Catalogs(n, seed, loss=0.05)
        c = cats.c
        assert c.run_until(c.converged, 150, poll_s=1.0), "membership did not converge"
        for name in c.live():  # every core's own table, not just the event-built views
            alive = {m.name for m in c.members_of(name) if m.status == "alive"}
            assert alive == set(c.live()), f"{name} sees a different mesh"

        owner = "node-7"
        cats.publish(owner, 8080)
        up = {(owner, 8080, "passing")}
        start = c.now
        assert c.run_until(lambda: cats.everyone_sees(up, True), 30, poll_s=0.2), "no spread"
        spread_s = c.now - start

        # A health change: out of the passing results everywhere, still listed as critical.
        cats.publish(owner, 8080, Status.CRITICAL)
        down = {(owner, 8080, "critical")}
        assert c.run_until(
            lambda: cats.everyone_sees(set(), True) and cats.everyone_sees(down, False),
            30,
            poll_s=0.2,
        ), "health change did not spread"

        # A late joiner learns the catalog through push/pull on join.
        cats.publish(owner, 8080)
        late = c.add_node()
        assert c.run_until(lambda: cats.everyone_sees(up, True), 60, poll_s=0.5)
        assert late in c.live()

        # The owner crashes: every survivor drops its instances once SWIM declares it dead.
        c.kill(owner)
        assert c.run_until(lambda: cats.everyone_sees(set(), False), 120, poll_s=1.0), (
            "a dead node's instances stayed in discovery"
        )
        assert sum(d.drops for d in cats.dirs.values()) == 0
        print(f"n={n}: registration reached all {n} peers in {spread_s:.2f} simulated s")


@pytest.mark.parametrize("seed", sim_seeds(2))
def test_catalog_changes_reach_every_peer_of_200_over_a_lossy_network(seed: int) -> None:
    run_scenario(200, seed)


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("seed", sim_seeds(1, long_count=3, base=1000))
def test_catalog_changes_reach_every_peer_of_1000_over_a_lossy_network(seed: int) -> None:
    """Also issue 2's 1,000-peer convergence to one identical view, with 5% loss."""
    run_scenario(1000, seed)


def partition_heal_gap(seed: int) -> tuple[float, float]:
    """One peer is cut off long enough for the rest to reap it (and forget its services),
    then the network heals: (simulated seconds until every peer sees it alive again, until
    every peer also discovers its service again)."""
    cats = Catalogs(20, seed, loss=0.0)
    c = cats.c
    assert c.run_until(c.converged, 60, poll_s=1.0), "membership did not converge"
    owner = "node-7"
    cats.publish(owner, 8080)
    up = {(owner, 8080, "passing")}
    assert c.run_until(lambda: cats.everyone_sees(up, True), 30, poll_s=0.2)

    others = [n for n in c.live() if n != owner]
    c.network.partition([[owner], others])
    forgotten = lambda: all(cats.dirs[n].catalog.get(owner, "web-1") is None for n in others)  # noqa: E731
    assert c.run_until(forgotten, 120, poll_s=1.0), "the cut-off peer was never reaped"
    c.network.heal()
    healed = c.now
    everyone_alive = lambda: all(c.status_of(n, owner) == "alive" for n in others)  # noqa: E731
    assert c.run_until(everyone_alive, 300, poll_s=0.2), "the cut-off peer never came back"
    alive_s = c.now - healed
    assert c.run_until(lambda: cats.everyone_sees(up, True), 300, poll_s=0.2)
    return alive_s, c.now - healed


@pytest.mark.parametrize("seed", sim_seeds(3))
def test_a_rejoined_peers_services_come_back_with_it(seed: int) -> None:
    """Found by the chaos runs: peers that reaped a cut-off member forget its services; after
    the heal the member was back at once but its services only with later push/pulls (tens
    of seconds).  Records a push/pull brings that are news are gossiped on, so the services
    follow the member within a few gossip rounds."""
    with replay_hint(seed):
        alive_s, services_s = partition_heal_gap(seed)
        print(f"alive everywhere {alive_s:.1f} s after the heal, services {services_s:.1f} s")
        assert services_s - alive_s < 5.0
