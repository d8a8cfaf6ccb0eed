"""The JSON shapes of Consul's HTTP API, built from meshlite's values.

Theory of operation
-------------------
Consul's clients decode its responses into fixed structures (``api/agent.go``
``AgentMember``/``AgentService``, ``api/catalog.go`` ``Node``/``CatalogService``,
``api/health.go`` ``HealthCheck``/``ServiceEntry``), so every field they expect is filled,
with Consul's names, even where meshlite has nothing to say (``Weights`` are always
1/1, ``EnableTagOverride`` false).  Indexes: a service's ``CreateIndex`` and
``ModifyIndex`` are its catalog record's version (grows with every change its owner
publishes); a node's are its SWIM incarnation.

Node ids: Consul gives every node a UUID; ours is derived from the node name (UUID v5),
so it is stable across restarts and the same on every peer.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from meshlite._core.catalog import Record
from meshlite._core.events import Member
from meshlite._http.view import CheckInfo, NodeInfo

__all__ = [
    "agent_service",
    "catalog_service",
    "check",
    "content_hash",
    "health_entry",
    "member",
    "node",
    "node_id",
]

_NODE_NAMESPACE = uuid.UUID("6d657368-6c69-7465-8000-6e6f64652d69")  # fixed: ids are stable
# Serf's member status codes (serf/serf.go MemberStatus): a suspected member is alive.
_SERF_STATUS = {"alive": 1, "suspect": 1, "left": 3, "dead": 4}
# memberlist/Serf protocol versions as Consul reports them; meshlite speaks its own wire
# format, so these only keep clients that read the fields from tripping.
_PROTOCOL = {"ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2}
_DELEGATE = {"DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4}
_WEIGHTS = {"Passing": 1, "Warning": 1}


def node_id(name: str) -> str:
    return str(uuid.uuid5(_NODE_NAMESPACE, name))


def member(m: Member) -> dict[str, Any]:
    """``/v1/agent/members``: one Serf member."""
    return {
        "Name": m.name,
        "Addr": m.address,
        "Port": m.port,
        "Tags": dict(m.meta),
        "Status": _SERF_STATUS.get(m.status, 0),
        **_PROTOCOL,
        **_DELEGATE,
    }


def node(n: NodeInfo, datacenter: str) -> dict[str, Any]:
    """A catalog node (``/v1/catalog/nodes``, ``Node`` of a health entry)."""
    return {
        "ID": node_id(n.name),
        "Node": n.name,
        "Address": n.address,
        "Datacenter": datacenter,
        "TaggedAddresses": {"lan": n.address, "wan": n.address},
        "Meta": dict(n.meta),
        "CreateIndex": n.incarnation,
        "ModifyIndex": n.incarnation,
    }


def agent_service(r: Record, datacenter: str) -> dict[str, Any]:
    """``/v1/agent/services`` values, ``Service`` of a health entry."""
    return {
        "ID": r.id,
        "Service": r.name,
        "Tags": list(r.tags),
        "Meta": dict(r.meta),
        "Port": r.port,
        "Address": r.address,
        "Weights": dict(_WEIGHTS),
        "EnableTagOverride": False,
        "Datacenter": datacenter,
        "CreateIndex": r.version,
        "ModifyIndex": r.version,
    }


def content_hash(service: dict[str, Any]) -> str:
    """``/v1/agent/service/:id``'s ``ContentHash``: changes whenever the definition does."""
    text = json.dumps(service, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def catalog_service(n: NodeInfo, r: Record, datacenter: str) -> dict[str, Any]:
    """``/v1/catalog/service/:name``: the node's fields and the service's, flattened."""
    base = node(n, datacenter)
    return {
        "ID": base["ID"],
        "Node": n.name,
        "Address": n.address,
        "Datacenter": datacenter,
        "TaggedAddresses": base["TaggedAddresses"],
        "NodeMeta": dict(n.meta),
        "ServiceKind": "",
        "ServiceID": r.id,
        "ServiceName": r.name,
        "ServiceTags": list(r.tags),
        "ServiceAddress": r.address,
        "ServiceMeta": dict(r.meta),
        "ServicePort": r.port,
        "ServiceWeights": dict(_WEIGHTS),
        "ServiceEnableTagOverride": False,
        "CreateIndex": r.version,
        "ModifyIndex": r.version,
    }


def check(c: CheckInfo) -> dict[str, Any]:
    """A ``HealthCheck`` (``/v1/health/...``, ``/v1/agent/checks``)."""
    return {
        "Node": c.node,
        "CheckID": c.check_id,
        "Name": c.name,
        "Status": c.status,
        "Notes": "",
        "Output": c.output,
        "ServiceID": c.service_id,
        "ServiceName": c.service_name,
        "ServiceTags": list(c.service_tags),
        "Type": c.type,
        "Interval": c.interval,
        "Timeout": c.timeout,
        "ExposedPort": 0,
        "Definition": {},
        "CreateIndex": c.index,
        "ModifyIndex": c.index,
    }


def health_entry(
    n: NodeInfo, r: Record, checks: list[CheckInfo], datacenter: str
) -> dict[str, Any]:
    """A ``ServiceEntry`` of ``/v1/health/service/:name``."""
    return {
        "Node": node(n, datacenter),
        "Service": agent_service(r, datacenter),
        "Checks": [check(c) for c in checks],
    }
