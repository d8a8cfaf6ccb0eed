"""DNS-SD publishing of registered services: names and TXT (pure), then a real
python-zeroconf browser seeing them — on loopback, and from another network namespace."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from netns import Host, LineProcess, require_lan
from test_mdns import _loopback_multicast_reason
from zeroconf import BadTypeInNameException, IPVersion, ServiceBrowser, ServiceListener, Zeroconf
from zeroconf._utils.name import service_type_name

from meshlite import Mesh
from meshlite._health import Instance, Status
from meshlite._mdns import CLOSE_TIMEOUT_S
from meshlite._mdns_publish import Publisher, _info
from meshlite._mdns_records import (
    MAX_SERVICE_CHARS,
    instance_label,
    service_type,
    txt_properties,
    wanted,
)
from meshlite.errors import ConfigError

HERE = Path(__file__).parent
FIND_TIMEOUT_S = 20.0  # typical 1-2 s (probing ~1 s, then announcements); 2 busy cores
STOP_TIMEOUT_S = CLOSE_TIMEOUT_S + 10.0


def web(**changes: Any) -> Instance:
    fields: dict[str, Any] = {"id": "web-1", "service": "web", "node": "a",
                              "address": "127.0.0.1", "port": 8080, "tags": ("v1", "blue"),
                              "meta": {"zone": "a"}, "status": Status.PASSING}  # fmt: skip
    fields.update(changes)
    return Instance(**fields)


# -- names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("web", "_web._tcp.local."),
        ("My_API v2", "_my-api-v2._tcp.local."),
        ("--db--", "_db._tcp.local."),
        ("a" * 15, f"_{'a' * 15}._tcp.local."),
    ],
)
def test_service_type_keeps_legal_names_readable(name: str, expected: str) -> None:
    assert service_type(name) == expected


def test_long_or_letterless_names_get_a_stable_hash() -> None:
    long_a, long_b = service_type("payments-gateway-eu"), service_type("payments-gateway-us")
    assert long_a.startswith("_payments-g-") and long_b.startswith("_payments-g-")
    assert long_a != long_b
    assert long_a == service_type("payments-gateway-eu")  # the same on every peer and run
    assert service_type("1234").startswith("_svc-")
    assert service_type("ünïcödé") != service_type("日本")


@given(st.text(min_size=1, max_size=80))
def test_every_name_maps_to_a_type_zeroconf_accepts(name: str) -> None:
    kind = service_type(name)
    assert service_type_name(kind, strict=True) == kind  # RFC 6763 §7.2 / RFC 6335 rules
    assert len(kind.split(".")[0]) - 1 <= MAX_SERVICE_CHARS


@given(st.text(min_size=1, max_size=100), st.text(min_size=1, max_size=100))
def test_instance_names_are_legal_labels(service_id: str, node: str) -> None:
    label = instance_label(service_id, node)
    assert len(label.encode()) <= 63
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F or c == "." for c in label)
    full = f"{label}._web._tcp.local."
    try:
        service_type_name(full, strict=True)
    except BadTypeInNameException as exc:  # zeroconf rejects only what RFC 6763 does
        pytest.fail(f"{full!r}: {exc}")


def test_instance_name_includes_the_node() -> None:
    assert instance_label("web-1", "api-3") == "web-1@api-3"
    assert instance_label("web.1", "db.example.com") == "web-1@db-example-com"
    assert instance_label("x" * 80, "n") != instance_label("x" * 80, "m")
    assert instance_label("a\x01", "n") != instance_label("a\x02", "n")


# -- TXT and the wanted records ----------------------------------------------------------


def test_txt_has_tags_in_one_key_then_meta() -> None:
    assert txt_properties(web()) == {"tags": "v1,blue", "zone": "a"}
    assert txt_properties(web(tags=(), meta={})) == {}
    odd = {"Tags": "x", "a=b": "1", "": "e", "ZONE": "Z", "zone": "z", "big": "v" * 300, "ok": ""}
    assert txt_properties(web(meta=odd)) == {"tags": "v1,blue", "ZONE": "Z", "ok": ""}


def test_wanted_records() -> None:
    own = ("10.0.0.5",)
    w = wanted(web(), "a", own)
    assert w is not None
    assert (w.type, w.name, w.port, w.addresses) == (
        "_web._tcp.local.", "web-1@a._web._tcp.local.", 8080, ("127.0.0.1",),
    )  # fmt: skip
    mine = wanted(web(address="0.0.0.0"), "a", own)
    assert mine is not None and mine.addresses == own
    assert mine.server != w.server  # another address, another host name
    assert wanted(web(status=Status.WARNING), "a", own) == w  # Consul DNS keeps warning ones
    assert wanted(web(status=Status.CRITICAL), "a", own) is None
    with pytest.raises(ValueError):
        wanted(web(address="db.internal"), "a", own)
    info = _info(w)  # python-zeroconf builds its records from it without complaint
    assert info.decoded_properties == {"tags": "v1,blue", "zone": "a"}


@pytest.mark.parametrize(("node", "host"), [("", "127.0.0.1"), ("a", "localhost")])
def test_publisher_misuse(node: str, host: str) -> None:
    with pytest.raises(ConfigError):
        Publisher(node, host)


def test_publisher_that_never_published_closes_at_once() -> None:
    publisher = Publisher("a", "127.0.0.1")
    began = time.monotonic()
    publisher.close()
    publisher.publish(web())  # after close: ignored, starts nothing
    publisher.close()
    assert time.monotonic() - began < 1.0
    assert publisher._thread is None


def test_unusable_interface_warns_once_and_drops_later_publishes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    publisher = Publisher("a", "0.0.0.0", interfaces=["no-such-if0"])
    with caplog.at_level(logging.WARNING, logger="meshlite.mdns"):
        publisher.publish(web())
        assert publisher._thread is not None
        publisher._thread.join(FIND_TIMEOUT_S)
        publisher.publish(web(port=1))  # dropped: nothing queues up
        publisher.close()
    [warning] = [r.getMessage() for r in caplog.records if r.name == "meshlite.mdns"]
    assert "mDNS publishing disabled for 'a'" in warning
    assert "no interface named 'no-such-if0'" in warning
    assert publisher._pending == {}


# -- a real browser on loopback ----------------------------------------------------------


class Browser(ServiceListener):
    """A plain python-zeroconf browser, as a user would write it; records what it sees."""

    def __init__(self, kind: str) -> None:
        self.events: list[tuple[str, str, int | None, dict[str, str | None]]] = []
        self._cond = threading.Condition()
        self._zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        self._browser = ServiceBrowser(self._zc, kind, self)

    def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self._seen("seen", zc, type_, name)

    def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self._seen("seen", zc, type_, name)

    def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self._record(("removed", name, None, {}))

    def _seen(self, what: str, zc: Zeroconf, type_: str, name: str) -> None:
        info = zc.get_service_info(type_, name, 3000)
        if info is not None:
            self._record((what, name, info.port, info.decoded_properties))

    def _record(self, event: tuple[str, str, int | None, dict[str, str | None]]) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, event: tuple[str, str, int | None, dict[str, str | None]]) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: event in self.events, FIND_TIMEOUT_S)

    def close(self) -> None:
        self._browser.cancel()
        self._zc.close()


@pytest.fixture
def lo_multicast() -> None:
    reason = _loopback_multicast_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:6]  # a service name of our own: other runs stay out of our way


@pytest.fixture
def browser(lo_multicast: None, tag: str) -> Iterator[Browser]:
    b = Browser(service_type(f"t{tag}"))
    try:
        yield b
    finally:
        b.close()


def test_loopback_browser_sees_publish_update_critical_and_goodbye(
    browser: Browser, tag: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="meshlite.mdns")
    name = f"web-1@a.{service_type(f't{tag}')}"
    publisher = Publisher("a", "127.0.0.1")
    try:
        publisher.publish(web(service=f"t{tag}"))
        assert browser.wait_for(("seen", name, 8080, {"tags": "v1,blue", "zone": "a"}))
        publisher.publish(web(service=f"t{tag}", port=9090, meta={"zone": "b"}))
        assert browser.wait_for(("seen", name, 9090, {"tags": "v1,blue", "zone": "b"}))
        publisher.publish(web(service=f"t{tag}", status=Status.CRITICAL))
        assert browser.wait_for(("removed", name, None, {}))
        publisher.publish(web(service=f"t{tag}", status=Status.WARNING, id="web-2"))
        name2 = name.replace("web-1@", "web-2@")
        assert browser.wait_for(("seen", name2, 8080, {"tags": "v1,blue", "zone": "a"}))
    finally:
        began = time.monotonic()
        publisher.close()  # goodbyes for what is still published
        assert time.monotonic() - began < CLOSE_TIMEOUT_S + 1.0
    assert browser.wait_for(("removed", name2, None, {}))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


# -- across network namespaces -----------------------------------------------------------


def peer(host: Host, *args: str) -> LineProcess:
    return LineProcess(host, [sys.executable, str(HERE / "mdns_publish_peer.py"), *args])


def send(process: LineProcess, command: dict[str, Any]) -> None:
    assert process.proc.stdin is not None
    process.proc.stdin.write(json.dumps(command) + "\n")
    process.proc.stdin.flush()


@pytest.mark.netns
def test_a_browser_in_another_namespace_sees_the_service_come_and_go() -> None:
    with require_lan(2) as (host_a, host_b):
        kind = service_type("web")
        name = f"web-1@a.{kind}"
        processes: list[LineProcess] = []
        try:
            browser = peer(host_b, "browse", kind, host_b.address)
            publisher = peer(host_a, "publish", "a", host_a.address)
            processes += [browser, publisher]
            for p in processes:
                assert p.wait_for(lambda s: s == "ready", FIND_TIMEOUT_S), p.output()
            instance = {"id": "web-1", "service": "web", "node": "a", "address": "0.0.0.0",
                        "port": 8080, "tags": ["v1", "blue"], "meta": {"zone": "a"}}  # fmt: skip
            send(publisher, {"publish": instance})
            txt = json.dumps({"tags": "v1,blue", "zone": "a"}, sort_keys=True)
            seen = f'seen {name} 8080 ["{host_a.address}"] {txt}'
            assert browser.wait_for(lambda s: s == seen, FIND_TIMEOUT_S), browser.output()
            send(publisher, {"unpublish": "web-1"})
            removed = f"removed {name}"
            assert browser.wait_for(lambda s: s == removed, FIND_TIMEOUT_S), browser.output()
            for p in processes:
                assert p.stop(STOP_TIMEOUT_S) == 0, p.output()
        finally:
            for p in processes:
                p.kill()
        assert not [s for s in publisher.lines if s.startswith("log WARNING")], publisher.output()


# -- through Mesh(mdns_publish=True) ------------------------------------------------------


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_mesh_with_mdns_publish_shows_its_services_to_a_browser(
    browser: Browser, tag: str, backend: str
) -> None:
    name = f"api-1@node-a.{service_type(f't{tag}')}"

    async def main() -> None:
        async with Mesh("node-a", "127.0.0.1:0", profile="local", mdns_publish=True) as mesh:
            svc = await mesh.register(f"t{tag}", 7070, id="api-1", tags=["v1"])
            seen = await anyio.to_thread.run_sync(
                browser.wait_for, ("seen", name, 7070, {"tags": "v1"})
            )
            assert seen, browser.events
            await mesh.deregister(svc.id)
            gone = await anyio.to_thread.run_sync(browser.wait_for, ("removed", name, None, {}))
            assert gone, browser.events

    anyio.run(main, backend=backend)
