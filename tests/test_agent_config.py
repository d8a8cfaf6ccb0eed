"""``meshlite agent`` configuration: files (JSON, TOML, Consul's names), flags, merging, errors."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import attrs
import pytest

from meshlite._agent_config import AgentConfig, AgentConfigError, flags_layer, load_dir, load_file
from meshlite._agent_config import merge as merge_layers
from meshlite._health import ScriptCheck
from meshlite._mesh import Mesh
from meshlite.cli import agent_config, build_parser

# Fixed keys (valid ones, as generate_key makes them): they appear in test ids, which
# must be the same in every pytest-xdist worker's collection.
KEY = base64.b64encode(bytes(range(32))).decode()
KEY2 = base64.b64encode(bytes(range(32, 64))).decode()


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def from_json(tmp_path: Path, data: dict[str, Any], name: str = "config.json") -> AgentConfig:
    return merge_layers([load_file(write(tmp_path, name, json.dumps(data)))])


def error_of(tmp_path: Path, data: dict[str, Any], name: str = "config.json") -> str:
    with pytest.raises(AgentConfigError) as info:
        from_json(tmp_path, data, name)
    return str(info.value)


def from_argv(*argv: str) -> AgentConfig:
    return agent_config(build_parser().parse_args(["agent", *argv]))


# ------------------------------------------------------------------------------ good files


def test_defaults_match_mesh_defaults() -> None:
    cfg = merge_layers([])
    assert cfg == AgentConfig()
    assert cfg.bind == "127.0.0.1:7946"
    assert cfg.mesh_kwargs()["key"] is None
    assert cfg.ignored_in_use() == []


def test_good_json_with_our_names(tmp_path: Path) -> None:
    data = {
        "name": "api-1",
        "bind": "10.0.0.5:7000",
        "advertise": "192.0.2.7:7001",
        "join": ["10.0.0.6:7946", "10.0.0.7"],
        "key": [KEY, KEY2],
        "cluster": "prod",
        "server": True,
        "mdns": True,
        "mdns_publish": True,
        "meta": {"zone": "a"},
        "profile": "local",
        "log_level": "debug",
        "log_json": True,
    }
    cfg = from_json(tmp_path, data)
    assert cfg.mesh_kwargs() == {
        "name": "api-1",
        "bind": "10.0.0.5:7000",
        "advertise": "192.0.2.7:7001",
        "join": ["10.0.0.6:7946", "10.0.0.7:7946"],  # a seed without a port gets 7946
        "key": [KEY, KEY2],
        "cluster": "prod",
        "server": True,
        "bootstrap_expect": None,
        "data_dir": None,
        "meta": {"zone": "a"},
        "mdns": True,
        "mdns_publish": True,
        "profile": "local",
        "dns": None,
        "dns_domain": "meshlite",
        "dns_ttl_s": 0,
        "http": None,
        "http_token": None,
        "http_token_reads": False,
        "http_on_leader": False,
    }
    assert (cfg.log_level, cfg.log_json) == ("debug", True)
    assert cfg.sources == (str(tmp_path / "config.json"),)


def test_good_toml_with_consul_names(tmp_path: Path) -> None:
    text = f"""
node_name = "db-1"
bind_addr = "127.0.0.1"
advertise_addr = "127.0.0.2"
start_join = ["127.0.0.3:8000"]
retry_join = ["127.0.0.4:8001"]
encrypt = "{KEY}"
log_level = "WARNING"
data_dir = "/var/lib/meshlite"
bootstrap_expect = 3

[node_meta]
rack = "r1"

[ports]
serf_lan = 8301
http = 8501

[addresses]
dns = "127.0.0.9"
"""
    cfg = merge_layers([load_file(write(tmp_path, "agent.toml", text))])
    assert cfg.name == "db-1"
    assert cfg.bind == "127.0.0.1:8301"  # Consul's bind_addr has no port: ports.serf_lan
    assert cfg.advertise == "127.0.0.2:8301"  # ... and advertise_addr takes the bind port
    assert cfg.join == ("127.0.0.3:8000", "127.0.0.4:8001")
    assert cfg.keys == (KEY,)
    assert cfg.meta == {"rack": "r1"}
    assert cfg.log_level == "warn"
    assert (cfg.data_dir, cfg.bootstrap_expect) == ("/var/lib/meshlite", 3)
    assert (cfg.http, cfg.dns) == ("127.0.0.1:8501", "127.0.0.9:8600")
    # Server settings on a peer that is not a server: warned about, not passed to Mesh.
    assert cfg.server is False
    assert cfg.ignored_in_use() == ["data_dir", "bootstrap_expect"]
    assert cfg.mesh_kwargs()["bootstrap_expect"] is None
    served = attrs.evolve(cfg, server=True)
    assert served.ignored_in_use() == []
    assert (served.mesh_kwargs()["data_dir"], served.mesh_kwargs()["bootstrap_expect"]) == (
        "/var/lib/meshlite",
        3,
    )


@pytest.mark.parametrize(
    ("setting", "value", "attribute", "expected"),
    [
        ("name", "n1", "name", "n1"),
        ("node_name", "n1", "name", "n1"),
        ("bind", "127.0.0.1:9000", "bind", "127.0.0.1:9000"),
        ("bind", "[::1]:9000", "bind", "[::1]:9000"),
        ("bind_addr", "127.0.0.1", "bind", "127.0.0.1:7946"),
        ("bind_addr", "::1", "bind", "[::1]:7946"),
        ("advertise", "10.1.1.1:9000", "advertise", "10.1.1.1:9000"),
        ("advertise_addr", "10.1.1.1", "advertise", "10.1.1.1:7946"),
        ("join", ["127.0.0.1:1"], "join", ("127.0.0.1:1",)),
        ("start_join", ["127.0.0.1:1"], "join", ("127.0.0.1:1",)),
        ("retry_join", ["seed.example:1"], "join", ("seed.example:1",)),
        ("key", KEY, "keys", (KEY,)),
        ("key", [KEY, KEY2], "keys", (KEY, KEY2)),
        ("encrypt", KEY, "keys", (KEY,)),
        ("cluster", "prod", "cluster", "prod"),
        ("server", True, "server", True),
        ("mdns", True, "mdns", True),
        ("meta", {"a": "1"}, "meta", {"a": "1"}),
        ("node_meta", {"a": "1"}, "meta", {"a": "1"}),
        ("profile", "local", "profile", "local"),
        ("log_level", "TRACE", "log_level", "trace"),
        ("log_json", True, "log_json", True),
        ("data_dir", "/d", "data_dir", "/d"),
        ("bootstrap_expect", 1, "bootstrap_expect", 1),
        ("http", "127.0.0.1:8500", "http", "127.0.0.1:8500"),
        ("http_on_leader", True, "http_on_leader", True),
        ("dns", "127.0.0.1:53", "dns", "127.0.0.1:53"),
        ("ports", {"serf_lan": 0}, "bind", "127.0.0.1:0"),
        ("ports", {"dns": 8601}, "dns", "127.0.0.1:8601"),
        ("addresses", {"http": "0.0.0.0"}, "http", "0.0.0.0:8500"),
    ],
)
def test_every_setting_and_alias(
    tmp_path: Path, setting: str, value: Any, attribute: str, expected: Any
) -> None:
    assert getattr(from_json(tmp_path, {setting: value}), attribute) == expected


def test_the_kwargs_build_a_real_mesh(tmp_path: Path) -> None:
    cfg = from_json(tmp_path, {"name": "x", "bind": "127.0.0.1:0", "key": KEY, "server": True})
    mesh = Mesh(**cfg.mesh_kwargs())  # validated by the real constructor, not started
    assert (mesh.name, mesh.server, mesh.cluster) == ("x", True, "")


def test_utf8_bom_json_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"name": "b"}).encode())
    assert merge_layers([load_file(str(path))]).name == "b"


# ------------------------------------------------------------------------------ bad files


def test_unknown_setting_suggests_the_nearest(tmp_path: Path) -> None:
    msg = error_of(tmp_path, {"bnid": "127.0.0.1:1"}, "agent.json")
    assert msg == f'{tmp_path / "agent.json"}: unknown setting "bnid" (did you mean "bind"?)'


def test_unknown_setting_in_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.toml", 'clustr = "x"\n')
    with pytest.raises(
        AgentConfigError, match=r'agent.toml: unknown setting "clustr" \(did you mean "cluster"\?\)'
    ):
        load_file(path)


def test_unknown_setting_without_a_near_name(tmp_path: Path) -> None:
    msg = error_of(tmp_path, {"zzzzzz": 1})
    assert msg.endswith('unknown setting "zzzzzz"')


def test_consul_setting_without_counterpart_gets_a_hint(tmp_path: Path) -> None:
    msg = error_of(tmp_path, {"datacenter": "dc1"})
    assert 'setting "datacenter" is not supported by meshlite: use "cluster"' in msg


def test_unknown_nested_port(tmp_path: Path) -> None:
    msg = error_of(tmp_path, {"ports": {"grpc": 8502}})
    assert 'setting "ports.grpc" is not supported by meshlite' in msg
    assert "ports.serf_lan" in msg


@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    [
        ("bind", 42, 'setting "bind" must be a string "host:port", got 42'),
        ("bind", "127.0.0.1:x", 'setting "bind" must be "host:port" (got \'127.0.0.1:x\': port'),
        ("bind", "127.0.0.1:70000", "port must be between 0 and 65535"),
        ("bind", "localhost:7946", 'setting "bind" must have an IP address as its host'),
        ("bind_addr", ["127.0.0.1"], 'setting "bind_addr" must be a string "host:port", got ["'),
        ("advertise", "127.0.0.1:0", "port must be between 1 and 65535"),
        ("join", "127.0.0.1:1", 'setting "join" must be a list of "host:port" strings, got "'),
        ("join", [1], 'setting "join" must be a list of "host:port" strings, got [1]'),
        ("start_join", ["a b:1"], 'setting "start_join" must be a list of "host:port" strings'),
        ("name", "", 'setting "name" must be a non-empty string'),
        ("node_name", 7, 'setting "node_name" must be a non-empty string, got 7'),
        ("cluster", None, 'setting "cluster" must be a string, got null'),
        ("server", "yes", 'setting "server" must be true or false, got "yes"'),
        ("log_json", 1, 'setting "log_json" must be true or false, got 1'),
        ("meta", {"a": 1}, 'setting "meta" must be a table of string values, got {"a": 1}'),
        ("node_meta", ["a"], 'setting "node_meta" must be a table of string values'),
        ("profile", "wan", 'setting "profile" must be "lan" or "local", got "wan"'),
        ("log_level", "loud", 'setting "log_level" must be "trace" or "debug" or "info"'),
        ("bootstrap_expect", 0, 'setting "bootstrap_expect" must be a whole number >= 1, got 0'),
        ("bootstrap_expect", True, "must be a whole number >= 1, got true"),
        ("ports", {"serf_lan": "x"}, 'setting "ports.serf_lan" must be a port number 0-65535'),
        ("ports", {"http": 70000}, "must be a port number 0-65535, got 70000"),
        ("ports", 8301, 'setting "ports" must be a table with serf_lan, http, dns, got 8301'),
        ("addresses", {"http": "example.com"}, 'setting "addresses.http" must be an IP address'),
        ("encrypt", [KEY], 'setting "encrypt" must be a base64 key, got a list'),
        ("key", 5, 'setting "key" must be a base64 key (or a list of them, primary first), got'),
        ("key", [], 'setting "key" must be a base64 key'),
        ("key", "not base64!", 'setting "key" is not a usable key: the encryption key is not'),
    ],
)
def test_wrong_types_name_file_setting_and_expectation(
    tmp_path: Path, setting: str, value: Any, expected: str
) -> None:
    msg = error_of(tmp_path, {setting: value})
    assert msg.startswith(str(tmp_path / "config.json") + ": ")
    assert expected in msg
    assert "\n" not in msg


def test_a_bad_key_is_never_echoed(tmp_path: Path) -> None:
    short = base64.b64encode(b"secret-key-12").decode()  # valid base64, wrong length
    msg = error_of(tmp_path, {"encrypt": short})
    assert "13 bytes" in msg
    assert short not in msg
    msg = error_of(tmp_path, {"key": [KEY, "!!" + KEY]})
    assert KEY not in msg


def test_two_names_for_one_setting_in_one_file(tmp_path: Path) -> None:
    msg = error_of(tmp_path, {"name": "a", "node_name": "b"})
    assert msg.endswith('settings "name" and "node_name" both set the same thing; keep one')
    msg = error_of(tmp_path, {"bind": "127.0.0.1:1", "ports": {"serf_lan": 2}})
    assert 'settings "bind" and "ports" both set the same thing' in msg


def test_join_lists_from_consul_names_add_up_in_one_file(tmp_path: Path) -> None:
    cfg = from_json(tmp_path, {"start_join": ["127.0.0.1:1"], "retry_join": ["127.0.0.1:2"]})
    assert cfg.join == ("127.0.0.1:1", "127.0.0.1:2")


def test_malformed_json_names_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "config.json", '{\n  "name": "a"\n  "bind": "x"\n}\n')
    with pytest.raises(AgentConfigError) as info:
        load_file(path)
    assert str(info.value) == f"{path}:3:3: invalid JSON: Expecting ',' delimiter"


def test_malformed_toml_names_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.toml", 'name = "a"\nbind = \n')
    with pytest.raises(AgentConfigError) as info:
        load_file(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}:2:8: invalid TOML: ")
    assert "(at line" not in msg


def test_duplicate_json_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "config.json", '{"name": "a", "name": "b"}')
    with pytest.raises(AgentConfigError, match='invalid JSON: the key "name" appears twice'):
        load_file(path)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("config.json", "[1, 2]", "must hold an object of settings, got [1, 2]"),
        ("config.yaml", "name: a", "a config file's name must end in .json or .toml"),
        ("config.json", "", "1:1: invalid JSON: Expecting value"),
    ],
)
def test_file_level_errors(tmp_path: Path, name: str, text: str, expected: str) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(AgentConfigError) as info:
        load_file(path)
    assert str(info.value).startswith(path)
    assert expected in str(info.value)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match=r"nope\.json: cannot read: No such file"):
        load_file(str(tmp_path / "nope.json"))
    bad = tmp_path / "latin1.json"
    bad.write_bytes(b'{"name": "\xe9"}')
    with pytest.raises(AgentConfigError, match="not UTF-8 text"):
        load_file(str(bad))
    with pytest.raises(AgentConfigError, match="cannot read directory"):
        load_dir(str(tmp_path / "missing"))


def test_advertise_needs_a_port_when_bind_port_is_zero(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match=r'advertise address "10\.0\.0\.1" has no port'):
        from_json(tmp_path, {"bind": "127.0.0.1:0", "advertise_addr": "10.0.0.1"})


# ------------------------------------------------------------------------------ merging


def test_later_files_override_earlier_and_lists_add_up(tmp_path: Path) -> None:
    first = write(
        tmp_path,
        "a.json",
        json.dumps({"name": "a", "join": ["127.0.0.1:1"], "meta": {"x": "1", "y": "1"}}),
    )
    second = write(
        tmp_path, "b.toml", 'name = "b"\njoin = ["127.0.0.1:2", "127.0.0.1:1"]\n[meta]\ny = "2"\n'
    )
    cfg = merge_layers([load_file(first), load_file(second)])
    assert cfg.name == "b"
    assert cfg.join == ("127.0.0.1:1", "127.0.0.1:2")  # concatenated, duplicates dropped
    assert cfg.meta == {"x": "1", "y": "2"}
    assert cfg.sources == (first, second)


def test_config_dir_reads_json_and_toml_in_name_order(tmp_path: Path) -> None:
    write(tmp_path, "20-b.toml", 'name = "from-b"\n')
    write(tmp_path, "10-a.json", '{"name": "from-a", "cluster": "c"}')
    write(tmp_path, "README.md", "not a config file")
    os.mkdir(tmp_path / "30-dir.json")  # a directory with a config-like name is skipped
    cfg = merge_layers(load_dir(str(tmp_path)))
    assert (cfg.name, cfg.cluster) == ("from-b", "c")


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "config.json", json.dumps({
        "node_name": "file", "bind_addr": "127.0.0.1", "ports": {"serf_lan": 9000},
        "server": True, "profile": "lan", "log_json": True, "encrypt": KEY,
        "start_join": ["127.0.0.1:1"], "node_meta": {"zone": "a", "rack": "1"},
    }))  # fmt: skip
    cfg = from_argv(
        "--config-file", path, "--name", "flag", "--bind", "127.0.0.2:9100", "--no-server",
        "--profile", "local", "--no-log-json", "--key", KEY2, "--join", "127.0.0.1:2",
        "--meta", "zone=b", "--log-level", "error",
    )  # fmt: skip
    assert cfg.name == "flag"
    assert cfg.bind == "127.0.0.2:9100"
    assert (cfg.server, cfg.profile, cfg.log_json, cfg.log_level) == (
        False,
        "local",
        False,
        "error",
    )
    assert cfg.keys == (KEY2,)
    assert cfg.join == ("127.0.0.1:1", "127.0.0.1:2")
    assert cfg.meta == {"zone": "b", "rack": "1"}


def test_a_flag_host_keeps_the_file_port(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", json.dumps({"bind": "127.0.0.1:9000"}))
    assert from_argv("--config-file", path, "--bind", "127.0.0.3").bind == "127.0.0.3:9000"


def test_config_files_and_dirs_are_read_in_command_line_order(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    write(tmp_path / "d", "x.json", '{"cluster": "from-dir"}')
    later = write(tmp_path, "later.json", '{"cluster": "from-file"}')
    assert (
        from_argv("--config-dir", str(tmp_path / "d"), "--config-file", later).cluster
        == "from-file"
    )
    assert (
        from_argv("--config-file", later, "--config-dir", str(tmp_path / "d")).cluster == "from-dir"
    )


def test_consul_flag_aliases() -> None:
    cfg = from_argv(
        "--node", "n", "--encrypt", KEY, "--retry-join", "127.0.0.1:5", "--node-meta", "a:b",
        "--bootstrap-expect", "3", "--data-dir", "/tmp/d", "--http", "127.0.0.1:8500",
    )  # fmt: skip
    assert (cfg.name, cfg.keys, cfg.join, cfg.meta) == ("n", (KEY,), ("127.0.0.1:5",), {"a": "b"})
    assert (cfg.bootstrap_expect, cfg.data_dir, cfg.http) == (3, "/tmp/d", "127.0.0.1:8500")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--bind", "nope:x"], "--bind must be \"host:port\" (got 'nope:x'"),
        (["--key", "abc"], "--key is not a usable key: the encryption key is not valid base64"),
        (["--profile", "fast"], '--profile must be "lan" or "local", got "fast"'),
        (["--meta", "novalue"], '--meta must be "key=value", got "novalue"'),
        (["--log-level", "chatty"], '--log-level must be "trace" or "debug"'),
        (["--join", "127.0.0.1:99999"], "--join must be a list of"),
    ],
)
def test_bad_flags(argv: list[str], expected: str) -> None:
    with pytest.raises(AgentConfigError) as info:
        from_argv(*argv)
    assert str(info.value).startswith(expected)


def test_flags_layer_skips_unset_values() -> None:
    layer = flags_layer({"name": None, "cluster": "c", "meta": None})
    assert layer.fields == {"cluster": "c"}


# ------------------------------------------------------------------------------ shipped examples

ROOT = Path(__file__).resolve().parent.parent


def test_the_example_config_loads() -> None:
    cfg = merge_layers([load_file(str(ROOT / "examples" / "agent.json"))])
    assert (cfg.name, cfg.bind, cfg.cluster) == ("web-1", "127.0.0.1:7946", "example")
    Mesh(**cfg.mesh_kwargs())


@pytest.mark.parametrize("fence", ["json", "toml"])
def test_the_config_examples_in_the_docs_load(tmp_path: Path, fence: str) -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    blocks = text.split(f"```{fence}\n")[1:]
    assert blocks, f"docs/cli.md has no {fence} example"
    for i, block in enumerate(blocks):
        path = write(tmp_path, f"doc{i}.{fence}", block.split("```")[0])
        Mesh(**merge_layers([load_file(path)]).mesh_kwargs())


def test_top_level_checks_are_node_checks_or_name_a_service(tmp_path: Path) -> None:
    cfg = from_json(
        tmp_path,
        {
            "service": {"name": "web", "port": 80},
            "check": {"name": "disk", "ttl": "30s"},
            "checks": [
                {"id": "mem", "name": "memory", "args": ["true"], "interval": "10s"},
                {"check_id": "web-up", "name": "web up", "tcp": "127.0.0.1:80",
                 "interval": "5s", "service_id": "web"},
            ],
        },
    )  # fmt: skip
    assert [(c.id, c.service_id) for c in cfg.checks] == [
        ("disk", None), ("mem", None), ("web-up", "web")
    ]  # fmt: skip
    assert cfg.checks[1].check == ScriptCheck(["true"], interval_s=10.0, name="memory")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"check": [{"name": "a", "ttl": "1s"}]}, 'use "checks" for a list'),
        ({"checks": {"name": "a", "ttl": "1s"}}, "must be a list of check tables"),
        ({"check": {"ttl": "1s"}}, "name"),
        ({"check": {"name": "a", "ttl": "1s", "service_id": "nope"}},
         'service_id "nope" is not a service defined in the config files'),
        ({"checks": [{"name": "a", "ttl": "1s"}, {"name": "a", "ttl": "2s"}]},
         'check id "a" is defined twice'),
    ],
)  # fmt: skip
def test_bad_top_level_checks_are_refused(tmp_path: Path, data: Any, expected: str) -> None:
    assert expected in error_of(tmp_path, data)
