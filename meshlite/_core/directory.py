"""Service discovery state of one peer: the catalog plus node health, indexed for lookups.

Theory of operation
-------------------
``discover("db")`` must cost about a dictionary lookup, so nothing is computed per call:
for every service name the directory keeps two ready tuples of :class:`Instance` — all
instances on live nodes, and the passing ones — sorted by (node, id).  They are rebuilt
only for the names an input changed: a catalog record (broadcast, push/pull state, or our
own publish/withdraw) or a node's SWIM status (a node that is dead, left or unknown takes
all its instances out, as Consul's ``serfHealth`` check does).  Tag filters are computed on
first use and cached until that name changes.

Records from the network come back with what to broadcast: corrections (a stray record
about our own services, refuted) and relays (another peer's record that was news here —
SWIM leaves relaying to us, see ``catalog.py``).

Every input returns the set of names whose results really changed; the I/O layer wakes
``watch()`` subscribers of those names only, so a watcher never wakes for a duplicate
broadcast or a change to another service.

``index`` is the catalog-wide counterpart, for the HTTP API's blocking queries (Consul's
``X-Consul-Index``): it only grows, by one for every input that changed some name's
results or the membership (every member event: node lists and node health show it), and
by :meth:`Directory.touch` for what only this peer shows (its own checks' output).

Sans-I/O like the SWIM core: inputs with a ``now``, outputs as values (the records to
broadcast); ``meshlite/_services.py`` drives it from the mesh's loop and the simulator
(``meshlite.testing``) drives it in tests.
"""

from __future__ import annotations

from collections.abc import Iterable

from meshlite._core.catalog import Catalog, Record, decode_record, decode_state, encode_record
from meshlite._core.events import MemberEvent, MemberEventKind, UserBroadcast
from meshlite._core.wire import DecodeError
from meshlite._health import Instance, Status

__all__ = ["MAX_RELAYED_PER_STATE", "Directory", "broadcast_for", "instance_of"]

# Records a peer re-gossips from one push/pull (see Directory.on_state).  Each costs what
# a fresh registration costs the mesh; after a heal where two sides reaped each other,
# both sides' catalogs are news across the cut, and this bounds the burst per exchange to
# a few nodes' worth of services (the rest arrive by push/pull, and are relayed by then).
MAX_RELAYED_PER_STATE = 64

_DOWN = frozenset({MemberEventKind.DEAD, MemberEventKind.LEFT, MemberEventKind.REAP})
_GONE = frozenset({MemberEventKind.LEFT, MemberEventKind.REAP})
_Key = tuple[str, str | None, bool]  # (name, tag, passing_only)


def broadcast_for(record: Record, payload: bytes | None = None) -> UserBroadcast:
    """The SWIM user broadcast that carries ``record`` (``payload``: its encoding, when we
    hold it already); a newer record of the same key replaces an older one still queued."""
    data = encode_record(record) if payload is None else payload
    return UserBroadcast(f"svc/{record.node}/{record.id}", data)


class Directory:
    """Catalog + live nodes + the lookup index.  See the module docstring."""

    def __init__(self, node: str, first_version: int) -> None:
        self.catalog = Catalog(node, first_version)
        self._up: set[str] = {node}
        self._all: dict[str, tuple[Instance, ...]] = {}
        self._passing: dict[str, tuple[Instance, ...]] = {}
        self._filtered: dict[_Key, tuple[Instance, ...]] = {}
        # Catalog-wide change counter (see the module docstring).  It starts where the
        # catalog's versions do (the owner's wall clock in microseconds), so an index a
        # client remembers from a previous life of this peer is never taken for a current one.
        self.index = first_version
        self.drops = 0  # undecodable catalog payloads from the network

    # ------------------------------------------------------------------ lookups

    def discover(
        self, name: str, tag: str | None = None, passing_only: bool = True
    ) -> tuple[Instance, ...]:
        if tag is None:
            return (self._passing if passing_only else self._all).get(name, ())
        key = (name, tag, passing_only)
        hit = self._filtered.get(key)
        if hit is None:
            base = (self._passing if passing_only else self._all).get(name, ())
            hit = self._filtered[key] = tuple(i for i in base if tag in i.tags)
        return hit

    def names(self) -> list[str]:
        """Service names with at least one instance on a live node, sorted."""
        return sorted(self._all)

    # ------------------------------------------------------------------ inputs

    def on_member(self, event: MemberEvent) -> set[str]:
        """A SWIM membership event; the service names whose results changed."""
        node = event.member.name
        if event.kind in _DOWN:
            self._up.discard(node)
        else:
            self._up.add(node)
        names = self.catalog.names_of(node)
        if event.kind in _GONE:
            names |= self.catalog.forget_node(node)
        self.index += 1  # the node list or a node's health changed, whatever the names did
        return self._reindex(names)

    def on_broadcast(
        self, payload: bytes, now: float
    ) -> tuple[set[str], list[UserBroadcast], list[UserBroadcast]]:
        """A record gossiped to us: (changed names, corrections to broadcast, the record to
        relay if it was news here)."""
        try:
            record = decode_record(payload)
        except DecodeError:
            self.drops += 1
            return set(), [], []
        got = self.catalog.apply(record, now)
        fixes = [] if got.correction is None else [broadcast_for(got.correction)]
        relays = [broadcast_for(record, payload)] if got.news else []  # the bytes as received
        return self._reindex(set(got.names) | _own_names(got.correction)), fixes, relays

    def on_state(
        self, state: bytes, now: float, *, relay: bool = False
    ) -> tuple[set[str], list[UserBroadcast], list[UserBroadcast]]:
        """A whole catalog from push/pull: (changed names, corrections to broadcast, other
        peers' records to relay).

        The relays are, with ``relay`` (an exchange that is not a join), up to
        :data:`MAX_RELAYED_PER_STATE` of the other peers' records that were news here.
        Gossip delivered everything else this exchange carried to every peer, so news in a
        periodic or reconnect push/pull most likely means the rest of the mesh lacks it
        too: typically a member's services, forgotten while it was cut off and reaped.
        Relaying them makes those services return within gossip rounds of the member
        (instead of as every peer's own push/pull reaches them, up to minutes).  A joiner
        relays nothing: the whole catalog is news to it, and to nobody else.
        """
        try:
            records = decode_state(state)
        except DecodeError:
            self.drops += 1
            return set(), [], []
        names, corrections, news = self.catalog.merge_state(records, now)
        for c in corrections:
            names |= _own_names(c)
        relays = [broadcast_for(r) for r in news[:MAX_RELAYED_PER_STATE]] if relay else []
        return self._reindex(names), [broadcast_for(c) for c in corrections], relays

    def publish(self, record: Record, now: float) -> tuple[set[str], UserBroadcast]:
        """Our own service, new or changed (health included)."""
        before = self.catalog.get(record.node, record.id)
        versioned = self.catalog.publish(record, now)
        names = {record.name} | ({before.name} if before and not before.tombstone else set())
        return self._reindex(names), broadcast_for(versioned)

    def withdraw(self, service_id: str, now: float) -> tuple[set[str], UserBroadcast | None]:
        before = self.catalog.get(self.catalog.node, service_id)
        stone = self.catalog.withdraw(service_id, now)
        if stone is None or before is None:
            return set(), None
        return self._reindex({before.name}), broadcast_for(stone)

    def local_state(self) -> bytes:
        return self.catalog.encode_state()

    def expire(self, now: float, known_nodes: Iterable[str]) -> set[str]:
        """Housekeeping: drop old tombstones, and records of nodes SWIM does not know."""
        self.catalog.expire_tombstones(now)
        known = set(known_nodes)
        names: set[str] = set()
        for node in self.catalog.nodes() - known:
            names |= self.catalog.forget_node(node)
        return self._reindex(names)

    # ------------------------------------------------------------------ index

    def touch(self) -> None:
        """Something only this peer's view shows changed (a local check's output)."""
        self.index += 1

    def _reindex(self, names: set[str]) -> set[str]:
        changed = set()
        for name in names:
            live = sorted(
                (r for r in self.catalog.by_name(name) if r.node in self._up),
                key=lambda r: r.key,
            )
            everything = tuple(instance_of(r) for r in live)
            if everything == self._all.get(name, ()):
                continue
            changed.add(name)
            for key in [k for k in self._filtered if k[0] == name]:
                del self._filtered[key]
            if everything:
                self._all[name] = everything
                self._passing[name] = tuple(i for i in everything if i.status is Status.PASSING)
            else:
                self._all.pop(name, None)
                self._passing.pop(name, None)
        if changed:
            self.index += 1
        return changed


def instance_of(r: Record) -> Instance:
    """A live record as discovery reports it."""
    return Instance(r.id, r.name, r.node, r.address, r.port, r.tags, r.meta, Status(r.status))


def _own_names(record: Record | None) -> set[str]:
    return {record.name} if record is not None and not record.tombstone else set()
