"""The service catalog: every peer's services and their health, replicated to every peer.

Theory of operation
-------------------
Consul keeps the catalog on servers and each agent syncs its own services to them
("anti-entropy", ``agent/local/state.go``).  meshlite has no servers in the read path, so
the catalog is replicated to every peer, and the same principle — *only the owner writes
its own services* — makes replication conflict-free:

* The catalog is a map ``(node, service_id) -> Record``.  A record is either a live
  service (name, address, port, tags, meta, aggregate health) or a tombstone (the owner
  deregistered it).  Only ``node`` itself issues records with key ``(node, *)``, each with
  a version larger than any it issued before.
* :meth:`Catalog.apply` keeps, per key, the record with the highest version (ties, which
  only a misbehaving owner can produce, go to the larger encoding).  Max is commutative,
  associative and idempotent, so any delivery order with any duplication and loss of
  intermediate versions gives the same catalog (property-tested).
* Changes travel as SWIM user broadcasts, one record each (so a catalog far larger than a
  datagram spreads piecewise, and a newer version of a key replaces the queued older one
  on its owner); push/pull carries the whole catalog (:meth:`encode_state`), so a late
  joiner or a peer that missed packets converges at the next exchange.
  Relaying is ours, not SWIM's (``gossip.py``): :meth:`apply` says whether a record was
  *news* — another peer's, newer than what we held — and only news is gossiped on, so
  stale or duplicate copies die at the first peer that has better.  News in a push/pull
  is relayed too (outside a join, up to a bound: ``directory.py``), so records the rest of
  the mesh lost — a member's, after the others reaped it during a partition — spread
  from the first peer that pulls them instead of waiting for every peer's own push/pull.
* Versions start at the owner's wall clock in microseconds (``first_version``) and count
  up, so a restarted owner normally outranks its previous life.  When it does not (the
  clock stepped back), the owner *refutes*, as SWIM refutes suspicion: a record about
  itself that it did not issue — a newer version of a live service, or a service from a
  previous life — comes back from :meth:`apply` as a correction to broadcast: its own
  record, or a tombstone, with a version above the stray one.
* Tombstones are dropped after ``tombstone_ttl_s`` (bounded memory); a record that a
  lagging peer reintroduces after that is refuted by its owner again.  When SWIM forgets a
  node (reaped or left), :meth:`forget_node` drops all its records.

Health of the *node* (SWIM alive/suspect vs dead/left) is not in the records: the index
(``service_index.py``) combines both.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs
import msgpack

from meshlite._core.wire import DecodeError
from meshlite._core.wire_checks import check_meta, check_name, check_str, check_uint, unpack

__all__ = [
    "MAX_RECORD_BYTES",
    "Applied",
    "Catalog",
    "Record",
    "decode_record",
    "decode_state",
    "encode_record",
]

# One record must ride in one datagram next to a probe: 1,024 bytes leaves ~300 of the
# 1,400-byte budget for the packet envelope and the message it is piggybacked on.
MAX_RECORD_BYTES = 1024
# Long enough that every peer has long heard a deregistration by gossip or push/pull
# (minutes even in a large mesh); short enough that churn does not accumulate.
TOMBSTONE_TTL_S = 3600.0
_STATUS_CODES = ("passing", "warning", "critical")  # index = wire code
_LIVE, _TOMBSTONE, _STATE = 1, 2, 3  # wire kinds
_MAX_PORT = 65535


@attrs.frozen
class Record:
    """One service instance as its owner last published it; ``name == ""`` is a tombstone."""

    node: str
    id: str
    version: int
    name: str = ""
    address: str = ""
    port: int = 0
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = attrs.field(factory=dict)
    status: str = "passing"

    @property
    def key(self) -> tuple[str, str]:
        return (self.node, self.id)

    @property
    def tombstone(self) -> bool:
        return not self.name


# ----------------------------------------------------------------------------- wire


def _to_wire(r: Record) -> list[Any]:
    if r.tombstone:
        return [_TOMBSTONE, r.node, r.id, r.version]
    status = _STATUS_CODES.index(r.status)
    return [
        _LIVE,
        r.node,
        r.id,
        r.version,
        r.name,
        r.address,
        r.port,
        list(r.tags),
        dict(r.meta),
        status,
    ]


def encode_record(r: Record) -> bytes:
    data: bytes = msgpack.packb(_to_wire(r), use_bin_type=True)
    return data


def _from_wire(v: Any) -> Record:
    if type(v) is not list or not v:
        raise DecodeError("catalog record: expected a list")
    kind = v[0]
    if kind == _TOMBSTONE and len(v) == 4:
        return Record(check_name(v[1]), check_name(v[2]), check_uint(v[3]))
    if kind != _LIVE or len(v) != 10:
        raise DecodeError("catalog record: unknown kind or wrong length")
    port, status, tags = v[6], v[9], v[7]
    if type(port) is not int or not 0 <= port <= _MAX_PORT:
        raise DecodeError("catalog record: bad port")
    if type(status) is not int or not 0 <= status < len(_STATUS_CODES):
        raise DecodeError("catalog record: bad status")
    if type(tags) is not list:
        raise DecodeError("catalog record: tags must be a list")
    return Record(
        node=check_name(v[1]),
        id=check_name(v[2]),
        version=check_uint(v[3]),
        name=check_name(v[4]),
        address=check_str(v[5]),
        port=port,
        tags=tuple(check_str(t) for t in tags),
        meta=check_meta(v[8]),
        status=_STATUS_CODES[status],
    )


def _unpack(data: bytes, max_bytes: int) -> Any:
    if len(data) > max_bytes:
        raise DecodeError("catalog data too large")
    return unpack(data, "catalog data")


def decode_record(data: bytes) -> Record:
    """One broadcast record; :class:`DecodeError` for anything else."""
    return _from_wire(_unpack(data, MAX_RECORD_BYTES))


def decode_state(data: bytes, max_bytes: int = 32 * 1024 * 1024) -> list[Record]:
    """A whole catalog as push/pull carries it; :class:`DecodeError` for anything else."""
    v = _unpack(data, max_bytes)
    if type(v) is not list or len(v) != 2 or v[0] != _STATE or type(v[1]) is not list:
        raise DecodeError("catalog state: expected [3, [records]]")
    return [_from_wire(r) for r in v[1]]


# ----------------------------------------------------------------------------- the map


class Catalog:
    """The replicated map of one peer: its own records and everybody else's."""

    def __init__(self, node: str, first_version: int, tombstone_ttl_s: float = TOMBSTONE_TTL_S):
        self.node = node
        self._records: dict[tuple[str, str], Record] = {}
        self._tombstoned_at: dict[tuple[str, str], float] = {}
        self._by_name: dict[str, dict[tuple[str, str], Record]] = {}  # live records only
        self._by_node: dict[str, dict[str, Record]] = {}  # every record, by node then id
        self._last_version = first_version - 1
        self._tombstone_ttl_s = tombstone_ttl_s
        # The services this peer holds now (its source of truth for refutation).
        self._own: dict[str, Record] = {}

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self._records.values())

    def get(self, node: str, service_id: str) -> Record | None:
        return self._records.get((node, service_id))

    def by_name(self, name: str) -> Iterable[Record]:
        """The live records of service ``name`` (any node, any health)."""
        return self._by_name.get(name, {}).values()

    def nodes(self) -> set[str]:
        return set(self._by_node)

    def names_of(self, node: str) -> set[str]:
        return {r.name for r in self._by_node.get(node, {}).values() if not r.tombstone}

    # ------------------------------------------------------------------ owner writes

    def _next_version(self, above: int = 0) -> int:
        self._last_version = max(self._last_version, above) + 1
        return self._last_version

    def publish(self, record: Record, now: float) -> Record:
        """Our own service, new or changed: the versioned record to broadcast."""
        if record.node != self.node:
            raise ValueError(f"{self.node} cannot publish a record of {record.node}")
        current = self._records.get(record.key)
        versioned = attrs.evolve(
            record, version=self._next_version(current.version if current else 0)
        )
        if len(encode_record(versioned)) > MAX_RECORD_BYTES:
            raise ValueError(f"service {record.id!r} is larger than {MAX_RECORD_BYTES} bytes")
        self._own[record.id] = versioned
        self._store(versioned, now)
        return versioned

    def withdraw(self, service_id: str, now: float) -> Record | None:
        """Deregister our own service: the tombstone to broadcast (None if unknown)."""
        if self._own.pop(service_id, None) is None:
            return None
        return self._tombstone_above(service_id, 0, now)

    def _tombstone_above(self, service_id: str, version: int, now: float) -> Record:
        current = self._records.get((self.node, service_id))
        floor = max(version, current.version if current else 0)
        stone = Record(self.node, service_id, self._next_version(floor))
        self._store(stone, now)
        return stone

    # ------------------------------------------------------------------ replication

    def apply(self, record: Record, now: float) -> Applied:
        """Merge one received record (see :class:`Applied`)."""
        if record.node == self.node:
            return Applied(frozenset(), self._refute(record, now), news=False)
        current = self._records.get(record.key)
        if current is not None and not _newer(record, current):
            return _NOTHING
        self._store(record, now)
        return Applied(frozenset(_names(current, record)), None, news=True)

    def _refute(self, record: Record, now: float) -> Record | None:
        mine = self._own.get(record.id)
        current = self._records.get(record.key)
        if current is not None and (current == record or _newer(current, record)):
            return None  # our own record echoed back, or older news
        if mine is None:
            if record.tombstone:  # a stray tombstone about a service we do not hold: agree
                self._last_version = max(self._last_version, record.version)
                self._store(record, now)
                return None
            return self._tombstone_above(record.id, record.version, now)
        corrected = attrs.evolve(mine, version=self._next_version(record.version))
        self._own[record.id] = corrected
        self._store(corrected, now)
        return corrected

    def merge_state(
        self, records: Iterable[Record], now: float
    ) -> tuple[set[str], list[Record], list[Record]]:
        """Merge a push/pull state: (names of services that changed, corrections, and the
        other peers' records that were news here)."""
        changed: set[str] = set()
        corrections: list[Record] = []
        news: list[Record] = []
        for record in records:
            got = self.apply(record, now)
            changed |= got.names
            if got.correction is not None:
                corrections.append(got.correction)
            if got.news:
                news.append(record)
        return changed, corrections, news

    def encode_state(self) -> bytes:
        data: bytes = msgpack.packb(
            [_STATE, [_to_wire(r) for r in self._records.values()]], use_bin_type=True
        )
        return data

    # ------------------------------------------------------------------ housekeeping

    def forget_node(self, node: str) -> set[str]:
        """SWIM forgot ``node``: drop its records; the names of services that lost one."""
        if node == self.node:
            return set()
        names = self.names_of(node)
        for service_id in list(self._by_node.get(node, ())):
            self._drop((node, service_id))
        return names

    def expire_tombstones(self, now: float) -> int:
        """Drop tombstones older than the TTL; how many were dropped."""
        old = [k for k, t in self._tombstoned_at.items() if now - t > self._tombstone_ttl_s]
        for k in old:
            self._drop(k)
        return len(old)

    def _store(self, record: Record, now: float) -> None:
        key = record.key
        before = self._records.get(key)
        if before is not None and not before.tombstone:
            self._unindex(before)
        self._records[key] = record
        self._by_node.setdefault(record.node, {})[record.id] = record
        if record.tombstone:
            self._tombstoned_at[key] = now
        else:
            self._tombstoned_at.pop(key, None)
            self._by_name.setdefault(record.name, {})[key] = record

    def _drop(self, key: tuple[str, str]) -> None:
        record = self._records.pop(key)
        self._tombstoned_at.pop(key, None)
        of_node = self._by_node[record.node]
        del of_node[record.id]
        if not of_node:
            del self._by_node[record.node]
        if not record.tombstone:
            self._unindex(record)

    def _unindex(self, record: Record) -> None:
        same_name = self._by_name[record.name]
        del same_name[record.key]
        if not same_name:
            del self._by_name[record.name]


@attrs.frozen
class Applied:
    """What merging one received record did."""

    names: frozenset[str]  # services whose instances changed
    correction: Record | None  # ours to broadcast: the record was a stray about us
    news: bool  # another peer's record, newer than what we held: worth relaying


_NOTHING = Applied(frozenset(), None, news=False)


def _newer(a: Record, b: Record) -> bool:
    """Whether ``a`` wins over ``b`` for the same key: a total order on records."""
    if a.version != b.version:
        return a.version > b.version
    return encode_record(a) > encode_record(b)


def _names(before: Record | None, after: Record) -> set[str]:
    """The service names whose instance lists a replacement can change."""
    names = {after.name} if not after.tombstone else set()
    if before is not None and not before.tombstone:
        names.add(before.name)
    return names
