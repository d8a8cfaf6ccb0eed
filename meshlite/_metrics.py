"""One peer's metrics, for ``/v1/agent/metrics`` (Prometheus text, or Consul's JSON shape).

Theory of operation
-------------------
A scrape reads what the peer already keeps — the mesh's counters (``mesh.stats``: the
SWIM core's and the driver's, refusals among them), its member list, its services and
their checks, and on a server the Raft core's status and storage counters — and turns
them into samples.  Nothing is counted twice and nothing is timed on a hot path, so an
idle scrape costs a few dictionary reads and a busy mesh pays nothing for being watched.

Names follow Prometheus's conventions (``meshlite_`` prefix, ``_total`` for counters, a
label instead of a name per reason or status), so one query covers every refusal reason:
``sum by (reason) (rate(meshlite_gossip_dropped_total[1m]))``.  docs/operations.md lists
them with their meaning.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

import attrs

if TYPE_CHECKING:
    from meshlite._mesh import Mesh

__all__ = ["Sample", "collect", "to_consul_json", "to_prometheus"]

Kind = Literal["counter", "gauge"]
_MEMBER_STATUSES = ("alive", "suspect", "dead", "left")
_CHECK_STATUSES = ("passing", "warning", "critical")


@attrs.frozen
class Sample:
    """One value of one metric family."""

    name: str
    kind: Kind
    help: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


def _gossip(stats: dict[str, int]) -> Iterable[Sample]:
    for key, value in sorted(stats.items()):
        if key.startswith("drop_"):
            yield Sample(
                "meshlite_gossip_dropped_total", "counter",
                "Datagrams, frames and events refused or dropped, by reason",
                value, (("reason", key[len("drop_"):]),),
            )  # fmt: skip
        else:
            yield Sample(f"meshlite_gossip_{key}_total", "counter", f"Mesh counter {key}", value)


def _members(mesh: Mesh) -> Iterable[Sample]:
    counts = Counter(m.status for m in mesh.members())
    for status in _MEMBER_STATUSES:
        yield Sample(
            "meshlite_members", "gauge", "Members this peer knows, by status",
            counts.get(status, 0), (("status", status),),
        )  # fmt: skip


def _services(mesh: Mesh) -> Iterable[Sample]:
    local = mesh.services()
    yield Sample(
        "meshlite_services_registered", "gauge", "Service instances registered on this peer",
        len(local),
    )  # fmt: skip
    counts = Counter(str(i.status) for i in local)
    for status in _CHECK_STATUSES:
        yield Sample(
            "meshlite_services_health", "gauge",
            "This peer's service instances, by aggregate check status",
            counts.get(status, 0), (("status", status),),
        )  # fmt: skip


_RAFT_GAUGES = {
    "term": "The current Raft term",
    "commit": "The highest log index known committed",
    "applied": "The highest log index applied to the state machine",
    "last_index": "The last index in this server's log",
    "snapshot_index": "The index the latest snapshot covers",
}
_STORAGE_COUNTERS = {
    "saves": "Raft storage saves (one transaction each)",
    "syncs": "Raft storage syncs to disk",
    "entries_written": "Raft log entries written",
    "entries_truncated": "Raft log entries truncated (conflicts)",
    "bytes_written": "Raft log bytes written",
}


def _raft(stats: dict[str, Any]) -> Iterable[Sample]:
    if not stats:
        return
    for key, text in _RAFT_GAUGES.items():
        yield Sample(f"meshlite_raft_{key}", "gauge", text, stats[key])
    leads = 1 if stats.get("role") == "leader" else 0
    yield Sample("meshlite_raft_leader", "gauge", "1 while this server leads", leads)
    voters = len(stats["voters"])
    yield Sample("meshlite_raft_voters", "gauge", "Voters in the configuration", voters)
    storage = stats["storage"]
    for key, text in _STORAGE_COUNTERS.items():
        yield Sample(f"meshlite_raft_storage_{key}_total", "counter", text, storage[key])
    yield Sample(
        "meshlite_raft_storage_file_bytes", "gauge", "Size of the Raft storage file",
        storage["file_bytes"],
    )  # fmt: skip
    yield Sample(
        "meshlite_raft_snapshots_taken_total", "counter", "Snapshots this server took",
        stats["snapshots_taken"],
    )  # fmt: skip
    for reason, count in sorted(stats["dropped"].items()):
        yield Sample(
            "meshlite_raft_dropped_total", "counter", "Raft messages dropped, by reason",
            count, (("reason", reason),),
        )  # fmt: skip


def _kv(mesh: Mesh) -> Iterable[Sample]:
    sizes = mesh._kv_sizes()
    if sizes is None:
        return
    keys, sessions = sizes
    yield Sample("meshlite_kv_keys", "gauge", "Keys in this server's replica of the KV store", keys)
    yield Sample("meshlite_kv_sessions", "gauge", "Sessions in this server's replica", sessions)


async def collect(mesh: Mesh) -> list[Sample]:
    """Every sample of ``mesh`` now (a running mesh; servers add Raft and KV)."""
    samples = [*_gossip(mesh.stats), *_members(mesh), *_services(mesh)]
    samples += [*_raft(await mesh.raft_stats()), *_kv(mesh)]
    return samples


def _families(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    families: dict[str, list[Sample]] = {}
    for s in samples:
        families.setdefault(s.name, []).append(s)
    return families


def to_prometheus(samples: Iterable[Sample]) -> bytes:
    """The text exposition format (version 0.0.4), via prometheus_client."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

    families = _families(samples)

    class _Collector:
        def collect(self) -> Iterable[Metric]:
            for name, group in families.items():
                first = group[0]
                labels = [k for k, _ in first.labels]
                family: CounterMetricFamily | GaugeMetricFamily
                if first.kind == "counter":
                    base = name.removesuffix("_total")  # the family adds it back
                    family = CounterMetricFamily(base, first.help, labels=labels)
                else:
                    family = GaugeMetricFamily(name, first.help, labels=labels)
                for s in group:
                    family.add_metric([v for _, v in s.labels], s.value)
                yield family

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return generate_latest(registry)


def to_consul_json(samples: Iterable[Sample]) -> dict[str, Any]:
    """Consul's ``/v1/agent/metrics`` JSON: ``Timestamp``, ``Gauges``, ``Counters``, ...

    Consul's counters are per-interval aggregates; ours are totals since start, so each
    counter reports its total as ``Count`` and ``Sum`` (Rate, Min, Max, Mean: 0)."""
    gauges, counters = [], []
    for s in samples:
        labels = dict(s.labels)
        if s.kind == "gauge":
            gauges.append({"Name": s.name, "Value": s.value, "Labels": labels})
        else:
            counters.append({
                "Name": s.name, "Count": int(s.value), "Sum": s.value, "Rate": 0,
                "Min": 0, "Max": 0, "Mean": 0, "Stddev": 0, "Labels": labels,
            })  # fmt: skip
    stamp = time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime())
    return {"Timestamp": stamp, "Gauges": gauges, "Points": [], "Counters": counters, "Samples": []}
