"""Service definitions from agent files (Consul's shape), Go durations, and
``meshlite agent --config-dir`` registering them (real subprocesses on loopback)."""

from __future__ import annotations

import json
import shutil
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_cli import DEADLINE_S, Agent, assert_one_error_line, run

from meshlite._agent_config import AgentConfigError, load_dir, load_file, merge
from meshlite._agent_parse import BadValueError
from meshlite._agent_services import (
    CheckDefinition,
    ServiceDefinition,
    load_service_dir,
    parse_check_definition,
    preflight,
)
from meshlite._duration import MAX_DURATION_NS, format_duration, parse_duration, parse_duration_ns
from meshlite._health import HTTPCheck, Instance, ScriptCheck, Status, TCPCheck, TTLCheck
from meshlite._mesh import Mesh
from meshlite.cli import agent_config, build_parser
from meshlite.errors import ConfigError

EXAMPLES = Path(__file__).parent.parent / "examples" / "services"


def write(directory: Path, name: str, data: Any) -> Path:
    path = directory / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def services_of(directory: Path, name: str, data: Any) -> list[ServiceDefinition]:
    return list(merge([load_file(str(write(directory, name, data)))]).services)


def error_of(directory: Path, data: Any, name: str = "svc.json") -> str:
    with pytest.raises(ConfigError) as info:
        services_of(directory, name, data)
    return str(info.value)


# ------------------------------------------------------------------------------ durations


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("10s", 10 * 10**9),
        ("1m30s", 90 * 10**9),
        ("500ms", 500 * 10**6),
        ("1.5h", 5400 * 10**9),
        ("-1.5s", -1_500_000_000),
        ("+2m", 120 * 10**9),
        ("1h2m3s4ms5us6ns", 3_723_004_005_006),
        ("3µs", 3000),
        ("3μs", 3000),
        (".5s", 500_000_000),
        ("1.s", 10**9),
        ("0.0000000015s", 1),  # finer than a nanosecond: truncated, as Go does
        ("9223372036854775807ns", MAX_DURATION_NS),
        ("-9223372036854775808ns", -(2**63)),
    ],
)
def test_go_durations(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize(
    "text",
    ["", "10", "s", ".s", "1.2.3s", "1sec", "1m5", "1 s", "-", "1e3s", "9223372036854775808ns"],
)
def test_bad_durations(text: str) -> None:
    with pytest.raises(ConfigError, match=r"must be a duration|out of range"):
        parse_duration_ns(text)


def test_check_durations_must_be_positive() -> None:
    assert parse_duration("250ms") == 0.25
    for text in ("0", "0s", "-1s"):
        with pytest.raises(ConfigError, match="must be a positive duration"):
            parse_duration(text)


@pytest.mark.parametrize(
    ("ns", "text"),
    [(0, "0s"), (1, "1ns"), (1500, "1.5µs"), (1_500_000, "1.5ms"), (10**9, "1s"),
     (90 * 10**9, "1m30s"), (3600 * 10**9, "1h0m0s"), (3_723_500_000_000, "1h2m3.5s"),
     (-2 * 10**9, "-2s")],
)  # fmt: skip
def test_format_is_gos_duration_string(ns: int, text: str) -> None:
    assert format_duration(ns) == text


@given(st.integers(-(2**63) + 1, MAX_DURATION_NS))
def test_duration_round_trip(ns: int) -> None:
    assert parse_duration_ns(format_duration(ns)) == ns


UNITS = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


@given(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(sorted(UNITS))), min_size=1))
def test_duration_components_add_up(parts: list[tuple[int, str]]) -> None:
    """In range, the components sum; past Go's limit (~292 years) it is a clear error."""
    text = "".join(f"{n}{unit}" for n, unit in parts)
    total = sum(n * UNITS[unit] for n, unit in parts)
    if total > MAX_DURATION_NS:
        with pytest.raises(ConfigError, match="out of range"):
            parse_duration_ns(text)
    else:
        assert parse_duration_ns(text) == total


@given(st.text(max_size=30))
def test_any_text_is_a_duration_or_a_config_error(text: str) -> None:
    try:
        parse_duration_ns(text)
    except ConfigError as exc:
        message = str(exc)
    else:
        return
    assert message.startswith(("must be a duration", "is out of range")), message


# ------------------------------------------------------------------------------ good files


def test_full_json_definition(tmp_path: Path) -> None:
    data = {"service": {
        "name": "web", "id": "web-1", "port": 8080, "address": "127.0.0.2",
        "tags": ["v1", "http"], "meta": {"version": "1.4"},
        "check": {"http": "http://127.0.0.1:8080/health", "method": "post", "interval": "10s",
                  "timeout": "2s", "header": {"Accept": ["a/b", "c/d"]}, "name": "health",
                  "status": "passing", "success_before_passing": 2,
                  "failures_before_critical": 3, "deregister_critical_service_after": "90m"},
        "checks": [{"tcp": "localhost:8080", "interval": "1m30s"},
                   {"args": ["/bin/check", "-q"], "interval": "5s", "timeout": "500ms"},
                   {"ttl": "30s"}],
    }}  # fmt: skip
    [d] = services_of(tmp_path, "web.json", data)
    assert (d.name, d.id, d.service_id, d.port, d.address) == ("web", "web-1", "web-1", 8080,
                                                               "127.0.0.2")  # fmt: skip
    assert d.tags == ("v1", "http")
    assert d.meta == {"version": "1.4"}
    assert d.source == tmp_path / "web.json"
    http, tcp, script, ttl = d.checks
    assert http == HTTPCheck(
        "http://127.0.0.1:8080/health", 10.0, 2.0, method="POST",
        headers={"Accept": "a/b, c/d"}, name="health", initial_status=Status.PASSING,
        success_before_passing=2, failures_before_critical=3, deregister_critical_after_s=5400.0,
    )  # fmt: skip
    assert tcp == TCPCheck("localhost:8080", interval_s=90.0)
    assert script == ScriptCheck(("/bin/check", "-q"), interval_s=5.0, timeout_s=0.5)
    assert ttl == TTLCheck(ttl_s=30.0)
    assert d.register_kwargs() == {
        "id": "web-1", "tags": ["v1", "http"], "meta": {"version": "1.4"},
        "address": "127.0.0.2", "check": [http, tcp, script, ttl],
    }  # fmt: skip


def test_minimal_definition_takes_consuls_defaults(tmp_path: Path) -> None:
    [d] = services_of(tmp_path, "a.json", {"service": {"name": "worker"}})
    assert d == ServiceDefinition("worker", source=tmp_path / "a.json")
    assert (d.service_id, d.port, d.address, d.checks) == ("worker", 0, None, ())
    # Consul: an empty address means the agent's; a threshold of 0 means none (= 1 here).
    data = {"service": {"name": "w", "address": "", "check": {"ttl": "1s",
            "success_before_passing": 0, "failures_before_critical": 0}}}  # fmt: skip
    [d] = services_of(tmp_path, "b.json", data)
    assert d.address is None
    assert d.checks == (TTLCheck(ttl_s=1.0),)


def test_toml_services_list_next_to_agent_settings(tmp_path: Path) -> None:
    text = """
name = "sidecar-1"
cluster = "prod"

[[services]]
name = "db"
port = 5432
tags = ["primary"]
[services.meta]
version = "16"
[[services.checks]]
tcp = "127.0.0.1:5432"
interval = "10s"

[[services]]
name = "cache"
id = "cache-a"
port = 6379
"""
    cfg = merge([load_file(str(write(tmp_path, "agent.toml", text)))])
    assert (cfg.name, cfg.cluster) == ("sidecar-1", "prod")
    db, cache = cfg.services
    assert (db.name, db.port, db.tags, db.meta) == ("db", 5432, ("primary",), {"version": "16"})
    assert db.checks == (TCPCheck("127.0.0.1:5432", interval_s=10.0),)
    assert (cache.service_id, cache.port) == ("cache-a", 6379)


def test_http_api_camel_case_and_consul_aliases(tmp_path: Path) -> None:
    data = {"service": {"Name": "api", "ID": "api-2", "Port": 80, "Tags": ["x"],
            "Check": {"HTTP": "https://127.0.0.1/h", "Interval": "5s", "Header": {"A": ["1"]},
                      "DeregisterCriticalServiceAfter": "1m", "SuccessBeforePassing": 2},
            "Checks": [{"ScriptArgs": ["true"], "Interval": "1s"}, {"TTL": "9s"}]}}  # fmt: skip
    [d] = services_of(tmp_path, "api.json", data)
    assert (d.name, d.id, d.port, d.tags) == ("api", "api-2", 80, ("x",))
    http, script, ttl = d.checks
    assert isinstance(http, HTTPCheck)
    assert (http.url, http.interval_s, http.headers) == ("https://127.0.0.1/h", 5.0, {"A": "1"})
    assert (http.deregister_critical_after_s, http.success_before_passing) == (60.0, 2)
    assert script == ScriptCheck(("true",), interval_s=1.0)
    assert ttl == TTLCheck(ttl_s=9.0)


def test_http_body_and_tls_skip_verify(tmp_path: Path) -> None:
    check = {"HTTP": "https://127.0.0.1/h", "Interval": "5s", "Method": "put",
             "Body": '{"probe": true}', "TLSSkipVerify": True}  # fmt: skip
    [d] = services_of(tmp_path, "api.json", {"service": {"name": "api", "check": check}})
    assert d.checks == (
        HTTPCheck("https://127.0.0.1/h", 5.0, method="PUT", body='{"probe": true}',
                  tls_skip_verify=True),
    )  # fmt: skip
    for spelling in ("tls_skip_verify", "tlsskipverify", "TlsSkipVerify"):
        check = {"http": "https://h/", "interval": "1s", spelling: True}
        [d] = services_of(tmp_path, "b.json", {"service": {"name": "b", "check": check}})
        assert isinstance(d.checks[0], HTTPCheck) and d.checks[0].tls_skip_verify


# ------------------------------------------------------------------------------ check definitions


def test_a_check_definition_by_itself() -> None:
    """Consul's CheckDefinition (/v1/agent/check/register): the id defaults to the name,
    no service id is a node check, and every spelling py-consul and Consul use works."""
    assert parse_check_definition({"Name": "disk", "TTL": "30s"}, "check") == CheckDefinition(
        "disk", TTLCheck(ttl_s=30.0, name="disk")
    )
    body = {"name": "api ready", "id": "api-ready", "serviceid": "api-1", "ttl": "10s",
            "status": "passing"}  # fmt: skip
    d = parse_check_definition(body, "check")
    assert (d.id, d.service_id) == ("api-ready", "api-1")
    assert d.check == TTLCheck(ttl_s=10.0, name="api ready", initial_status=Status.PASSING)
    assert d.register_kwargs() == {"id": "api-ready", "service_id": "api-1"}
    for key in ("CheckID", "check_id", "checkid", "ID", "Id"):
        assert parse_check_definition({"Name": "n", key: "c", "TTL": "1s"}, "c").id == "c"
    for key in ("ServiceID", "service_id", "serviceid", "ServiceId"):
        found = parse_check_definition({"Name": "n", key: "s", "TTL": "1s"}, "c")
        assert found.service_id == "s"
    # Consul's zero values: "" means "the default".
    d = parse_check_definition({"Name": "n", "ID": "", "ServiceID": "", "TTL": "1s"}, "c")
    assert (d.id, d.service_id) == ("n", None)
    tcp = parse_check_definition({"Name": "t", "TCP": "h:1", "Interval": "2s"}, "c").check
    assert tcp == TCPCheck("h:1", interval_s=2.0, name="t")


@pytest.mark.parametrize(
    ("body", "setting", "expected"),
    [
        ([], "check", "must be a table (a check)"),
        ({"TTL": "1s"}, "check", 'needs "name"'),
        ({"Name": "", "TTL": "1s"}, "check.Name", "must be a non-empty string"),
        ({"Name": "n"}, "check", "needs exactly one of http, tcp, args or ttl"),
        ({"Name": "n", "TTL": "1s", "ID": 5}, "check.ID", "must be a non-empty string"),
        ({"Name": "n", "TTL": "1s", "ID": "a/b"}, "check.ID", "must not contain '/'"),
        ({"Name": "a/b", "TTL": "1s"}, "check.Name", "the check's id when no id is given"),
        ({"Name": "n", "TTL": "1s", "ID": "x" * 300}, "check.ID", "at most 256 bytes"),
        ({"Name": "n", "TTL": "1s", "ID": "a", "CheckID": "b"}, "check.CheckID",
         "says the same thing"),
        ({"Name": "n", "TTL": "1s", "ServiceID": ["s"]}, "check.ServiceID",
         "must be a non-empty string"),
        ({"Name": "n", "TTL": "1s", "Body": "x"}, "check.Body", "does not apply to a ttl check"),
        ({"Name": "n", "HTTP": "http://h", "Interval": "1s", "Body": 5}, "check.Body",
         "must be a string"),
        ({"Name": "n", "HTTP": "http://h", "Interval": "1s", "TLSSkipVerify": "yes"},
         "check.TLSSkipVerify", "must be true or false"),
        ({"Name": "n", "GRPC": "h:1", "Interval": "1s"}, "check.GRPC", "does not run"),
    ],
)  # fmt: skip
def test_bad_check_definitions_name_the_setting(body: Any, setting: str, expected: str) -> None:
    with pytest.raises(BadValueError) as info:
        parse_check_definition(body, "check")
    assert (info.value.setting, expected in str(info.value)) == (setting, True), str(info.value)


def test_a_directory_adds_up_in_name_order(tmp_path: Path) -> None:
    write(tmp_path, "b.json", {"services": [{"name": "b1"}, {"name": "b2"}]})
    write(tmp_path, "a.toml", '[service]\nname = "a"\n')
    write(tmp_path, "c.json", {"log_level": "debug"})  # agent settings only
    write(tmp_path, "notes.txt", "not a config file")
    found = load_service_dir(tmp_path)
    assert [(d.service_id, d.source.name) for d in found] == [
        ("a", "a.toml"), ("b1", "b.json"), ("b2", "b.json"),
    ]  # fmt: skip
    assert load_service_dir(str(tmp_path)) == found  # the same, every time


def test_the_shipped_examples_load() -> None:
    found = load_service_dir(EXAMPLES)
    assert {d.name for d in found} == {"web", "db"}
    assert all(d.checks for d in found)
    preflight(found, "some-node")


# ------------------------------------------------------------------------------ bad files


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"service": {"port": 1}}, 'setting "service" needs "name"'),
        ({"service": {"name": ""}}, 'setting "service.name" must be a non-empty string, got ""'),
        ({"service": {"name": "x" * 129}}, 'setting "service.name" must be at most 128 bytes'),
        ({"service": {"name": "a", "port": 70000}}, '"service.port" must be a whole number 0-'),
        ({"service": {"name": "a", "port": "80"}}, "must be a whole number 0-65535, got \"80\""),
        ({"service": {"name": "a", "tags": "v1"}}, '"service.tags" must be a list of strings'),
        ({"service": {"name": "a", "meta": {"k": 1}}}, '"service.meta" must be a table of string'),
        ({"service": {"name": "a", "meta": {"k": "v" * 600}}}, "at most 512 bytes"),
        ({"service": {"name": "a", "address": "1.2.3.4:80"}}, "host name or IP address (no port)"),
        ({"service": {"name": "a", "weights": {}}},
         'setting "service.weights" is not supported by meshlite (a service takes name, id, '
         "port, address, tags, meta, check, checks)"),
        ({"service": {"name": "a", "Name": "b"}}, '"service.Name" says the same thing as "'),
        ({"service": [{"name": "a"}]}, 'setting "service" must be one table; use "services"'),
        ({"services": {"name": "a"}}, 'setting "services" must be a list of service tables'),
        ({"services": [{"name": "a"}, 7]}, 'setting "services[1]" must be a table (a service)'),
        ({"service": {"name": "a", "check": {"interval": "1s"}}},
         '"service.check" needs exactly one of http, tcp, args or ttl (found none)'),
        ({"service": {"name": "a", "check": {"ttl": "1s", "tcp": "h:1"}}}, 'found "tcp" and "ttl"'),
        ({"service": {"name": "a", "check": {"http": "http://h/"}}},
         'setting "service.check" needs "interval" for a http check'),
        ({"service": {"name": "a", "check": {"tcp": "h:1", "interval": "10"}}},
         'setting "service.check.interval" must be a duration like "10s", "1m30s" or "500ms"'),
        ({"service": {"name": "a", "check": {"tcp": "h:1", "interval": "0s"}}},
         '"service.check.interval" must be a positive duration'),
        ({"service": {"name": "a", "check": {"tcp": "h", "interval": "1s"}}},
         '"service.check.tcp" must be "host:port" with a port, got "h"'),
        ({"service": {"name": "a", "check": {"http": "ftp://h", "interval": "1s"}}},
         '"service.check.http" must be an http:// or https:// URL, got "ftp://h"'),
        ({"service": {"name": "a", "check": {"args": "true", "interval": "1s"}}},
         '"service.check.args" must be a list of strings'),
        ({"service": {"name": "a", "check": {"args": [], "interval": "1s"}}},
         '"service.check.args" must name the program to run'),
        ({"services": [{"name": "a", "checks": [{"ttl": "1s", "interval": "2s"}]}]},
         'setting "services[0].checks[0].interval" does not apply to a ttl check'),
        ({"service": {"name": "a", "check": {"tcp": "h:1", "interval": "1s", "method": "GET"}}},
         '"service.check.method" does not apply to a tcp check'),
        ({"service": {"name": "a", "check": {"ttl": "1s", "status": "ok"}}},
         '"service.check.status" must be "passing", "warning" or "critical", got "ok"'),
        ({"service": {"name": "a", "check": {"ttl": "1s", "success_before_passing": -1}}},
         '"service.check.success_before_passing" must be a whole number'),
        ({"service": {"name": "a", "check": {"http": "http://h", "interval": "1s",
                                             "header": {"A": "b"}}}},
         '"service.check.header.A" must be a table of lists of strings'),
        ({"service": {"name": "a", "check": {"grpc": "h:1", "interval": "1s"}}},
         '"service.check.grpc" is not supported by meshlite: it is a check kind meshlite '
         "does not run (it runs http, tcp, args and ttl)"),
        ({"service": {"name": "a", "check": {"id": "c", "ttl": "1s"}}},
         '"service.check.id" is not supported by meshlite: check ids are Consul\'s defaults'),
        ({"service": {"name": "a", "check": {"ttl": "1s", "notes": "x"}}},
         '"service.check.notes" is not supported by meshlite (a check takes http, tcp, args'),
        ({"service": {"name": "a", "checks": {"ttl": "1s"}}},
         '"service.checks" must be a list of check tables'),
        ({"check": {"ttl": "1s"}}, 'setting "check" needs "name" (the check\'s name)'),
        ({"servce": {"name": "a"}}, 'unknown setting "servce" (did you mean "service"?)'),
        ({"services": [{"name": "a"}, {"name": "a"}]},
         'service id "a" is already defined earlier in that file'),
    ],
)  # fmt: skip
def test_bad_definitions_name_file_setting_and_expectation(
    tmp_path: Path, data: dict[str, Any], expected: str
) -> None:
    msg = error_of(tmp_path, data)
    assert msg.startswith(f"{tmp_path / 'svc.json'}: "), msg
    assert expected in msg, msg
    assert "\n" not in msg


def test_bad_toml_names_the_position(tmp_path: Path) -> None:
    msg = error_of(tmp_path, '[service]\nname = "a\n', name="svc.toml")
    assert msg.startswith(f"{tmp_path / 'svc.toml'}:2:"), msg


def test_duplicate_ids_across_files_name_both(tmp_path: Path) -> None:
    write(tmp_path, "a.json", {"service": {"name": "web", "port": 1}})
    write(tmp_path, "b.json", {"service": {"name": "web", "port": 2}})
    with pytest.raises(ConfigError) as info:
        load_service_dir(tmp_path)
    assert str(info.value) == (
        f'{tmp_path / "b.json"}: service id "web" is already defined in {tmp_path / "a.json"}; '
        'give one of them another "id"'
    )
    # Two instances of one service are fine with distinct ids.
    write(tmp_path, "b.json", {"service": {"name": "web", "id": "web-2", "port": 2}})
    assert [d.service_id for d in load_service_dir(tmp_path)] == ["web", "web-2"]


def test_loading_is_all_or_nothing(tmp_path: Path) -> None:
    write(tmp_path, "a.json", {"service": {"name": "good"}})
    write(tmp_path, "z.json", {"service": {"name": "bad", "port": -1}})
    with pytest.raises(AgentConfigError, match=r'z\.json: setting "service\.port"'):
        load_dir(str(tmp_path))
    with pytest.raises(ConfigError, match=r"z\.json"):
        load_service_dir(tmp_path)


def test_preflight_refuses_what_register_would(tmp_path: Path) -> None:
    tags = [f"tag-{i:03d}-" + "x" * 40 for i in range(20)]  # ~1 KiB of tags
    [big] = services_of(tmp_path, "big.json", {"service": {"name": "big", "tags": tags}})
    with pytest.raises(ConfigError, match=r'big.json: service "big": .*1024 bytes'):
        preflight([big], "node-1")
    [ok] = services_of(tmp_path, "ok.json", {"service": {"name": "ok", "tags": tags[:5]}})
    preflight([ok], "n" * 128)


# ------------------------------------------------------------------------------ properties

_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
                 max_size=30)  # fmt: skip


@given(
    name=_names,
    sid=st.none() | _names,
    port=st.integers(0, 65535),
    tags=st.lists(st.text(max_size=10), max_size=5),
    meta=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=5),
    interval_ms=st.integers(1, 10**7),
)
def test_json_definitions_parse_to_what_they_say(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    sid: str | None,
    port: int,
    tags: list[str],
    meta: dict[str, str],
    interval_ms: int,
) -> None:
    check = {"tcp": "127.0.0.1:1", "interval": f"{interval_ms}ms"}
    service: dict[str, Any] = {"name": name, "port": port, "tags": tags, "meta": meta,
                               "check": check}  # fmt: skip
    if sid is not None:
        service["id"] = sid
    directory = tmp_path_factory.mktemp("prop")
    [d] = services_of(directory, "s.json", {"service": service})
    assert (d.name, d.id, d.port, d.tags, dict(d.meta)) == (name, sid, port, tuple(tags), meta)
    assert d.checks == (TCPCheck("127.0.0.1:1", interval_s=interval_ms / 1000),)


# ------------------------------------------------------------------------------ the agent


def test_mdns_publish_from_a_flag_or_a_file(tmp_path: Path) -> None:
    assert agent_config(build_parser().parse_args(["agent"])).mdns_publish is False
    assert agent_config(build_parser().parse_args(["agent", "--mdns-publish"])).mdns_publish
    path = write(tmp_path, "a.json", {"mdns_publish": True})
    cfg = agent_config(build_parser().parse_args(["agent", "--config-file", str(path)]))
    assert cfg.mesh_kwargs()["mdns_publish"] is True
    argv = ["agent", "--config-file", str(path), "--no-mdns-publish"]
    assert agent_config(build_parser().parse_args(argv)).mdns_publish is False


def test_agent_with_a_bad_file_exits_before_binding(tmp_path: Path) -> None:
    write(tmp_path, "a.json", {"service": {"name": "good", "port": 1}})
    write(tmp_path, "b.json", {"service": {"name": "bad", "check": {"tcp": "h:1"}}})
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:  # binding it would fail
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        proc = run("agent", "--bind", f"127.0.0.1:{port}", "--config-dir", str(tmp_path))
    assert_one_error_line(
        proc, 1, f'{tmp_path / "b.json"}: setting "service.check" needs "interval"'
    )


def test_agent_with_duplicate_ids_across_dirs_exits(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    write(tmp_path / "one", "web.json", {"service": {"name": "web"}})
    write(tmp_path / "two", "web.toml", '[service]\nname = "web"\n')
    proc = run(
        "agent", "--config-dir", str(tmp_path / "one"), "--config-dir", str(tmp_path / "two")
    )
    assert_one_error_line(proc, 1, f'{tmp_path / "two" / "web.toml"}: service id "web" is already')


def test_agent_with_an_oversized_service_exits(tmp_path: Path) -> None:
    write(tmp_path, "big.json", {"service": {"name": "big", "tags": ["x" * 100] * 12}})
    proc = run("agent", "--config-dir", str(tmp_path))
    assert_one_error_line(proc, 1, f'{tmp_path / "big.json"}: service "big": ')


@pytest.fixture
def listener() -> Iterator[int]:
    """A real TCP listener for the sidecar's TCP check."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def test_sidecar_agent_registers_its_files_and_a_peer_discovers_them(
    tmp_path: Path, listener: int
) -> None:
    shutil.copy(EXAMPLES / "db.toml", tmp_path / "db.toml")  # a check that stays critical
    check = {"tcp": f"127.0.0.1:{listener}", "interval": "200ms", "timeout": "1s"}
    write(tmp_path, "web.json", {"service": {
        "name": "web", "id": "web-1", "port": listener, "tags": ["v1"], "meta": {"zone": "a"},
        "check": check}})  # fmt: skip
    agent = Agent("--name", "sidecar", "--bind", "127.0.0.1:0", "--profile", "local",
                  "--config-dir", str(tmp_path))  # fmt: skip
    try:
        start = agent.started()
        assert start["services"] == ["db", "web-1"]
        agent.wait_for(lambda ls: sum(x.get("event") == "register" for x in ls) == 2, "register")
        web, db = anyio.run(discover_from_a_peer, start["address"])
        agent.proc.send_signal(signal.SIGTERM)
        assert agent.proc.wait(timeout=DEADLINE_S) == 0
    finally:
        agent.kill()
    logged = next(x for x in agent.lines if x.get("event") == "register" and x["id"] == "web-1")
    assert (logged["service"], logged["address"], logged["checks"]) == (
        "web", f"127.0.0.1:{listener}", 1,
    )  # fmt: skip
    assert (web.id, web.node, web.port, web.tags) == ("web-1", "sidecar", listener, ("v1",))
    assert dict(web.meta) == {"zone": "a"}
    assert web.status == Status.PASSING  # its TCP check against our listener passed
    assert (db.node, db.status) == ("sidecar", Status.CRITICAL)  # nothing listens on 5432


async def discover_from_a_peer(seed: str) -> tuple[Instance, Instance]:
    async with Mesh("probe", "127.0.0.1:0", join=[seed], profile="local") as mesh:
        with anyio.fail_after(DEADLINE_S):
            while not mesh.discover("web") or not mesh.discover("db", passing_only=False):
                await anyio.sleep(0.05)
        [web] = mesh.discover("web")
        [db] = mesh.discover("db", passing_only=False)
        return web, db
