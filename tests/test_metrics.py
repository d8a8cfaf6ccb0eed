"""``/v1/agent/metrics``: Prometheus text (read back with prometheus_client's own parser)
and Consul's JSON, from a real served mesh — a Raft server with services and keys, and a
peer that is not a server.  Counters are checked to move with what happened (a refused
datagram, a write) and never backwards."""

from __future__ import annotations

import socket

import anyio
import pytest
from http_served import client, served
from prometheus_client.parser import text_string_to_metric_families

from meshlite import Mesh, TTLCheck

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """``{(name, labels): value}`` and ``{family: type}``, by prometheus_client's parser."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, types


async def scrape(http: object) -> tuple[Samples, dict[str, str]]:
    r = await http.get("/v1/agent/metrics", params={"format": "prometheus"})  # type: ignore[attr-defined]
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(r.text)


async def test_a_server_reports_gossip_health_raft_and_kv(anyio_backend: str) -> None:
    async with (
        served("m1", server=True, bootstrap_expect=1) as (mesh, url),
        client(url) as http,
    ):
        with anyio.fail_after(20):
            while mesh.leader() is None:
                await anyio.sleep(0.05)
        await mesh.register("web", 80, check=TTLCheck(ttl_s=60))
        await mesh.register("db", 5432)
        for i in range(3):
            await mesh.kv.put(f"m/{i}", b"x")
        first, types = await scrape(http)
        assert first[("meshlite_members", (("status", "alive"),))] == 1
        assert first[("meshlite_services_registered", ())] == 2
        assert first[("meshlite_services_health", (("status", "critical"),))] == 1  # TTL unset
        assert first[("meshlite_services_health", (("status", "passing"),))] == 1
        assert first[("meshlite_raft_leader", ())] == 1
        assert first[("meshlite_raft_term", ())] >= 1
        assert first[("meshlite_raft_voters", ())] == 1
        assert first[("meshlite_kv_keys", ())] == 3
        assert first[("meshlite_raft_applied", ())] >= 3
        assert types["meshlite_raft_storage_entries_written"] == "counter"
        assert types["meshlite_members"] == "gauge"

        # A datagram that is not ours is refused and counted under its reason.
        assert mesh.address is not None
        host, port = mesh.address.rsplit(":", 1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"\x7fnot a meshlite frame", (host, int(port)))
        await mesh.kv.put("m/3", b"y")
        with anyio.fail_after(10):
            while True:
                second, _ = await scrape(http)
                dropped = {k: v for k, v in second.items() if k[0].endswith("_dropped_total")}
                if dropped:
                    break
                await anyio.sleep(0.05)
        assert sum(dropped.values()) >= 1, dropped
        assert second[("meshlite_kv_keys", ())] == 4
        for key, value in first.items():  # counters never go backwards
            if key[0].endswith("_total") and key in second:
                assert second[key] >= value, key


async def test_json_by_default_and_no_raft_on_a_peer_that_is_not_a_server(
    anyio_backend: str,
) -> None:
    async with served("m2") as (_mesh, url), client(url) as http:
        r = await http.get("/v1/agent/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        doc = r.json()
        assert set(doc) >= {"Timestamp", "Gauges", "Counters", "Samples", "Points"}
        gauges = {
            (g["Name"], tuple(sorted(g["Labels"].items()))): g["Value"] for g in doc["Gauges"]
        }
        assert gauges[("meshlite_members", (("status", "alive"),))] == 1
        assert not any(name.startswith(("meshlite_raft", "meshlite_kv")) for name, _ in gauges)
        samples, _ = await scrape(http)
        assert not any(name.startswith("meshlite_raft") for name, _ in samples)
        bad = await http.get("/v1/agent/metrics", params={"format": "xml"})
        assert bad.status_code == 400 and "format=prometheus" in bad.text


async def test_a_scrape_needs_the_token_only_when_reads_do(anyio_backend: str) -> None:
    async with Mesh(
        "m3", "127.0.0.1:0", profile="local", http="127.0.0.1:0", http_token="t0k",
        http_token_reads=True,
    ) as mesh, client(f"http://{mesh.http_address}") as http:  # fmt: skip
        assert (await http.get("/v1/agent/metrics")).status_code == 403
        ok = await http.get("/v1/agent/metrics", headers={"X-Consul-Token": "t0k"})
        assert ok.status_code == 200
