"""What the HTTP API reads: the catalog's nodes, services and checks, from local memory.

Theory of operation
-------------------
Consul's catalog lives on its servers; ours is replicated to every peer
(``_core/catalog.py``), so an agent answers catalog and health queries from its own copy,
as Consul's ``?stale`` reads do.  This module turns that copy into the catalog Consul
would show:

* *Nodes* are the members SWIM knows and has not seen leave: alive and suspect ones with
  a passing ``serfHealth`` check, failed ones with a critical one (Consul keeps a failed
  node in the catalog, with ``serfHealth`` critical, until it is reaped; a node that
  left is deregistered at once).
* *Services* are the live catalog records of those nodes, sorted by (node, id).
* *Checks*: a service of this peer shows its real checks (id, kind, status, output,
  TTL notes).  The catalog gossips only a service's aggregate status, so a service of
  another peer shows one check, ``service:<id>``, carrying that aggregate.
* *Node checks* (``/v1/agent/check/register`` without a ``ServiceID``) are shown for
  this peer's node, after ``serfHealth``: in the node's checks and in each of its
  services' health entries, with an empty ``ServiceID``, as Consul lists them.  Another
  peer's node checks are not gossiped; their status is already in that peer's service
  aggregates.

Everything is read in one synchronous pass on the mesh's loop, so a response is a
consistent snapshot at the directory's current ``index``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import attrs

from meshlite._core.catalog import Record
from meshlite._duration import format_duration
from meshlite._health import (
    CallableCheck,
    CheckSpec,
    HTTPCheck,
    ScriptCheck,
    Status,
    TCPCheck,
    TTLCheck,
)

if TYPE_CHECKING:
    from meshlite._mesh import Mesh
    from meshlite._services import Services

__all__ = ["SERF_CHECK_ID", "CheckInfo", "NodeInfo", "View"]

SERF_CHECK_ID = "serfHealth"  # Consul's name for the node's gossip health check
_SERF_NAME = "Serf Health Status"
_SERF_OUTPUT = {True: "Agent alive and reachable", False: "Agent not live or unreachable"}
_LIVE = ("alive", "suspect")  # Serf still counts a suspected member as alive
_KINDS: tuple[tuple[type, str], ...] = (
    (HTTPCheck, "http"),
    (TCPCheck, "tcp"),
    (ScriptCheck, "script"),
    (TTLCheck, "ttl"),
    (CallableCheck, "callable"),
)


@attrs.frozen
class NodeInfo:
    """A catalog node: a member SWIM knows that has not left."""

    name: str
    address: str
    meta: Mapping[str, str]
    alive: bool  # serfHealth passing (alive or suspect) or critical (failed)
    incarnation: int


@attrs.frozen
class CheckInfo:
    """One health check as Consul's ``HealthCheck`` structure carries it."""

    node: str
    check_id: str
    name: str
    status: str
    output: str = ""
    service_id: str = ""
    service_name: str = ""
    service_tags: tuple[str, ...] = ()
    type: str = ""
    interval: str = ""
    timeout: str = ""
    index: int = 0


def _go_duration(seconds: float | None) -> str:
    return "" if seconds is None else format_duration(round(seconds * 1e9))


def check_kind(spec: CheckSpec) -> str:
    """Consul's ``Type`` of a check (``callable`` is meshlite's own kind)."""
    return next(kind for cls, kind in _KINDS if isinstance(spec, cls))


class View:
    """One request's read of a running mesh (see the module docstring)."""

    def __init__(self, mesh: Mesh, services: Services) -> None:
        self.mesh = mesh
        self.services = services
        self.directory = services.directory
        self.index = self.directory.index
        self.local_node = services.node
        self._nodes: dict[str, NodeInfo] | None = None

    # ------------------------------------------------------------------ nodes

    def nodes(self) -> dict[str, NodeInfo]:
        """The catalog's nodes by name, in name order."""
        if self._nodes is None:
            self._nodes = {
                m.name: NodeInfo(m.name, m.address, dict(m.meta), m.status in _LIVE, m.incarnation)
                for m in self.mesh.members()
                if m.status != "left"
            }
        return self._nodes

    def serf_check(self, node: NodeInfo) -> CheckInfo:
        status = Status.PASSING if node.alive else Status.CRITICAL
        return CheckInfo(
            node.name, SERF_CHECK_ID, _SERF_NAME, str(status), _SERF_OUTPUT[node.alive],
            index=node.incarnation,
        )  # fmt: skip

    # ------------------------------------------------------------------ services

    def records(self, name: str | None = None) -> list[Record]:
        """Live service records on catalog nodes (all names, or one), by (node, id)."""
        nodes = self.nodes()
        source: Iterable[Record] = (
            self.directory.catalog if name is None else self.directory.catalog.by_name(name)
        )
        found = [r for r in source if not r.tombstone and r.node in nodes]
        return sorted(found, key=lambda r: r.key)

    def local_record(self, service_id: str) -> Record | None:
        """A service registered on this peer, as the catalog holds it."""
        record = self.directory.catalog.get(self.local_node, service_id)
        return None if record is None or record.tombstone else record

    def local_records(self) -> list[Record]:
        found = (self.local_record(i.id) for i in self.services.local())
        return sorted((r for r in found if r is not None), key=lambda r: r.id)

    # ------------------------------------------------------------------ checks

    def service_checks(self, record: Record) -> list[CheckInfo]:
        """The checks of one service: real ones here, the aggregate for other peers'."""
        if record.node != self.local_node:
            return [self._aggregate(record)]
        return [
            self._local_check(record, check_id, spec, status, output)
            for check_id, spec, status, output in self.services.checks_of(record.id)
        ]

    def node_checks(self, node: str) -> list[CheckInfo]:
        """The node's own checks besides ``serfHealth``: this peer's node checks (none are
        known for another peer's node)."""
        if node != self.local_node:
            return []
        return [self._node_check(*c) for c in self.services.node_checks()]

    def entry_checks(self, node: NodeInfo, record: Record) -> list[CheckInfo]:
        """The checks of a health entry: ``serfHealth``, the node's, then the service's."""
        return [self.serf_check(node), *self.node_checks(node.name), *self.service_checks(record)]

    def checks_of_node(self, node: NodeInfo) -> list[CheckInfo]:
        """``serfHealth``, the node's checks, then every check of the node's services."""
        out = [self.serf_check(node), *self.node_checks(node.name)]
        for record in self.records():
            if record.node == node.name:
                out.extend(self.service_checks(record))
        return out

    def _aggregate(self, r: Record) -> CheckInfo:
        return CheckInfo(
            r.node, f"service:{r.id}", f"Service '{r.name}' check", r.status,
            "aggregate status reported by the service's owner", r.id, r.name, r.tags,
            type="aggregate", index=r.version,
        )  # fmt: skip

    def _local_check(
        self, r: Record, check_id: str, spec: CheckSpec, status: Status, output: str
    ) -> CheckInfo:
        interval, timeout = _timing(spec)
        return CheckInfo(
            r.node, check_id, spec.name or f"Service '{r.name}' check", str(status), output,
            r.id, r.name, r.tags, check_kind(spec), interval, timeout, r.version,
        )  # fmt: skip

    def _node_check(
        self, check_id: str, spec: CheckSpec, status: Status, output: str, created: int
    ) -> CheckInfo:
        interval, timeout = _timing(spec)
        return CheckInfo(
            self.local_node, check_id, spec.name or check_id, str(status), output,
            type=check_kind(spec), interval=interval, timeout=timeout, index=created,
        )  # fmt: skip


def _timing(spec: CheckSpec) -> tuple[str, str]:
    """A check's ``Interval`` and ``Timeout`` as Go durations ("" for a TTL check)."""
    interval = getattr(spec, "interval_s", None)
    timeout = getattr(spec, "timeout_s", None)
    return _go_duration(interval), _go_duration(timeout)
