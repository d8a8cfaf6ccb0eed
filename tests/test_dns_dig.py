"""BIND's ``dig`` against a ``meshlite agent --dns`` subprocess whose services come from
``--config-dir`` files: an independent DNS implementation reading our answers.

Skipped, saying why, where ``dig`` is not installed (Debian: ``bind9-dnsutils``; CI's
``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import DEADLINE_S, Agent, assert_one_error_line, run

from meshlite._agent_config import load_dir, merge
from meshlite.cli import agent_config, build_parser

DIG = shutil.which("dig")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "services"
needs_dig = pytest.mark.skipif(
    DIG is None, reason="dig is not installed (Debian: apt-get install bind9-dnsutils)"
)
BIG = 40  # instances of "big": 40 A records do not fit 512 bytes


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """An agent serving DNS with web (passing), db (critical: the example's check fails)
    and big; yields the DNS (host, port)."""
    config = tmp_path_factory.mktemp("config")
    shutil.copy(EXAMPLES / "db.toml", config / "db.toml")
    (config / "web.json").write_text(json.dumps({"service": {
        "name": "web", "id": "web-1", "port": 8080, "tags": ["v1", "primary"]}}))  # fmt: skip
    (config / "big.json").write_text(json.dumps({"services": [
        {"name": "big", "id": f"big-{i}", "port": 9000 + i, "address": f"10.1.0.{i + 1}"}
        for i in range(BIG)]}))  # fmt: skip
    (config / "dns.toml").write_text('dns_ttl = "3s"\n')
    child = Agent("--name", "sidecar", "--bind", "127.0.0.1:0", "--profile", "local",
                  "--dns", "127.0.0.1:0", "--config-dir", str(config))  # fmt: skip
    try:
        start = child.started()
        child.wait_for(lambda ls: sum(x.get("event") == "register" for x in ls) == BIG + 2, "regs")
        host, port = start["dns"].rsplit(":", 1)
        yield host, port
        child.proc.send_signal(signal.SIGTERM)
        assert child.proc.wait(timeout=DEADLINE_S) == 0
    finally:
        child.kill()


def dig(server: tuple[str, str], *args: str) -> str:
    assert DIG is not None
    host, port = server
    out = subprocess.run(
        [DIG, f"@{host}", "-p", port, "+time=3", "+tries=1", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def short(server: tuple[str, str], *args: str) -> set[str]:
    return set(dig(server, "+short", *args).split("\n")) - {""}


def status(output: str) -> str:
    found = re.search(r"status: (\w+)", output)
    assert found, output
    return found.group(1)


@needs_dig
def test_service_node_and_tag_names(agent: tuple[str, str]) -> None:
    assert short(agent, "web.service.meshlite") == {"127.0.0.1"}
    assert short(agent, "web.service.meshlite", "SRV") == {"1 1 8080 sidecar.node.meshlite."}
    assert short(agent, "Primary.WEB.service.meshlite", "SRV") == {
        "1 1 8080 sidecar.node.meshlite."
    }
    assert short(agent, "_web._tcp.service.meshlite", "SRV") == {"1 1 8080 sidecar.node.meshlite."}
    assert short(agent, "_web._v1.service.meshlite", "SRV") == {"1 1 8080 sidecar.node.meshlite."}
    assert short(agent, "sidecar.node.meshlite") == {"127.0.0.1"}
    assert short(agent, "-x", "127.0.0.1") == {"sidecar.node.meshlite."}


@needs_dig
def test_srv_glue_ttl_and_flags(agent: tuple[str, str]) -> None:
    out = dig(agent, "web.service.meshlite", "SRV")
    assert status(out) == "NOERROR"
    assert re.search(r"flags: qr aa rd;", out), out  # authoritative, no recursion
    additional = out.split(";; ADDITIONAL SECTION:")[1]
    assert re.search(r"sidecar\.node\.meshlite\.\s+3\s+IN\s+A\s+127\.0\.0\.1", additional), out


@needs_dig
def test_negative_answers(agent: tuple[str, str]) -> None:
    for name in ("db.service.meshlite", "nope.service.meshlite", "other.node.meshlite"):
        out = dig(agent, name)
        assert status(out) == "NXDOMAIN", out
        assert re.search(r"meshlite\.\s+3\s+IN\s+SOA\s+sidecar\.node\.meshlite\.", out), out
    nodata = dig(agent, "web.service.meshlite", "AAAA")
    assert status(nodata) == "NOERROR" and "ANSWER: 0" in nodata
    assert status(dig(agent, "example.com")) == "REFUSED"


@needs_dig
def test_truncation_and_the_tcp_retry(agent: tuple[str, str]) -> None:
    cut = dig(agent, "+noedns", "+ignore", "big.service.meshlite")  # +ignore: keep the UDP reply
    assert re.search(r"flags: qr aa tc rd;", cut) and "ANSWER: 0" in cut, cut
    retried = dig(agent, "+noedns", "big.service.meshlite")  # dig retries over TCP on TC
    assert f"ANSWER: {BIG}," in retried, retried
    assert len(short(agent, "+tcp", "big.service.meshlite")) == BIG


def test_dev_mode_serves_dns_on_consuls_port() -> None:
    cfg = agent_config(build_parser().parse_args(["agent", "--dev"]))
    assert (cfg.dns, cfg.dns_domain, cfg.dns_ttl_s) == ("127.0.0.1:8600", "meshlite", 0)
    assert cfg.mesh_kwargs()["dns"] == "127.0.0.1:8600"
    flags = ["agent", "--dev", "--dns", "127.0.0.1:0", "--domain", "consul"]
    cfg = agent_config(build_parser().parse_args(flags))
    assert (cfg.dns, cfg.dns_domain) == ("127.0.0.1:0", "consul")
    assert agent_config(build_parser().parse_args(["agent"])).dns is None


def test_dns_settings_in_files(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(
        json.dumps({"addresses": {"dns": "127.0.0.2"}, "ports": {"dns": 53}, "domain": "corp"})
    )
    (tmp_path / "b.toml").write_text('dns_ttl = 30\ndns_domain = "mesh.corp"\n')
    cfg = merge(load_dir(str(tmp_path)))
    assert (cfg.dns, cfg.dns_domain, cfg.dns_ttl_s) == ("127.0.0.2:53", "mesh.corp", 30)
    assert cfg.mesh_kwargs()["dns_ttl_s"] == 30


def test_agent_dns_errors_are_one_line(tmp_path: Path) -> None:
    for argv, expected in (
        (["--dns", "localhost:8600"], "--dns must have an IP address as its host"),
        (["--dns", "127.0.0.1:0", "--domain", "a..b"], "dns_domain 'a..b' is not a valid"),
    ):
        proc = run("agent", "--bind", "127.0.0.1:0", *argv)
        assert_one_error_line(proc, 1, expected)
    (tmp_path / "ttl.json").write_text(json.dumps({"dns_ttl": "1.5s"}))
    proc = run("agent", "--bind", "127.0.0.1:0", "--config-dir", str(tmp_path))
    assert_one_error_line(proc, 1, 'setting "dns_ttl" must be whole seconds')
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        proc = run("agent", "--bind", "127.0.0.1:0", "--dns", f"127.0.0.1:{port}")
    assert_one_error_line(proc, 1, f"cannot bind 127.0.0.1:{port} (DNS): Address already in use")
