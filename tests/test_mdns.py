"""mDNS discovery: the pure planning functions, then real peers multicasting on loopback.

The loopback tests bind every peer to 127.0.0.1, which makes zeroconf multicast only on
``lo`` (see ``make_plan``), so nothing leaves this host; they skip if this kernel does
not loop multicast on ``lo``.  The cross-host test is ``test_mdns_netns.py``.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable

import ifaddr
import pytest

from meshlite._mdns import CLOSE_TIMEOUT_S, MdnsDiscovery
from meshlite._mdns_plan import (
    MDNS_PROTOCOL_VERSION,
    choose_address,
    cluster_hash,
    instance_name,
    make_plan,
    server_name,
    txt_matches,
    txt_properties,
)
from meshlite.errors import ConfigError, NotRunningError

FIND_TIMEOUT_S = 15.0  # typical: 1-3 s (probing 0.75 s + announce); generous for 2 loaded cores


def _adapter(name: str, *ips: tuple[str | tuple[str, int, int], int]) -> ifaddr.Adapter:
    return ifaddr.Adapter(name, name, [ifaddr.IP(ip, prefix, name) for ip, prefix in ips])


LO = _adapter("lo", ("127.0.0.1", 8), (("::1", 0, 0), 128))
ETH = _adapter("eth0", ("10.1.2.3", 24), (("fe80::1", 0, 2), 64), (("2001:db8::3", 0, 0), 64))
WLAN = _adapter("wlan0", ("192.168.7.9", 24))


# -- names and TXT ---------------------------------------------------------------------


def test_cluster_hash_is_short_stable_and_label_specific() -> None:
    assert cluster_hash("prod") == cluster_hash("prod")
    assert len(cluster_hash("prod")) == 16
    assert int(cluster_hash("prod"), 16) >= 0
    assert cluster_hash("prod") != cluster_hash("prod2")
    assert cluster_hash("") != cluster_hash(" ")


def test_txt_carries_only_version_and_cluster_hash() -> None:
    props = txt_properties("prod")
    assert props == {"v": str(MDNS_PROTOCOL_VERSION), "c": cluster_hash("prod")}
    assert "prod" not in props.values()
    assert txt_matches(props, "prod")
    assert not txt_matches(props, "dev")
    assert not txt_matches({**props, "v": "99"}, "prod")
    assert not txt_matches({"c": None}, "prod")


def test_instance_names_are_legal_and_unique() -> None:
    assert instance_name("api-1") == "api-1._meshlite._udp.local."
    long_a, long_b = "x" * 70 + "a", "x" * 70 + "b"
    label_a = instance_name(long_a).removesuffix("._meshlite._udp.local.")
    assert len(label_a.encode()) <= 63
    assert instance_name(long_a) != instance_name(long_b)
    assert "\n" not in instance_name("bad\nname")
    assert instance_name("bad\nname") != instance_name("bad?name")
    wide = instance_name("é" * 40).removesuffix("._meshlite._udp.local.")
    assert len(wide.encode()) <= 63


def test_server_names_are_host_names() -> None:
    name = server_name("API_1.prod")
    assert name.endswith(".local.")
    assert all(c.isalnum() or c == "-" for c in name.removesuffix(".local."))
    assert server_name("a") != server_name("A")


# -- planning and address choice -------------------------------------------------------


def test_plan_leaves_out_interfaces_that_are_down() -> None:
    down = frozenset({"eth0"})
    assert make_plan("0.0.0.0", None, [LO, ETH, WLAN], down).interfaces == (
        "127.0.0.1",
        "192.168.7.9",
    )
    assert make_plan("10.1.2.3", None, [LO, ETH], down).interfaces == ()
    plan = make_plan("0.0.0.0", ["eth0"], [LO, ETH], down)
    assert plan.interfaces == ()
    assert plan.problems == ("interface eth0 is down",)
    assert make_plan("0.0.0.0", None, [LO], frozenset({"lo"})).advertise == ()


def test_plan_for_a_specific_ip_uses_only_that_interface() -> None:
    plan = make_plan("10.1.2.3", None, [LO, ETH])
    assert plan.interfaces == ("10.1.2.3",)
    assert plan.advertise == ("10.1.2.3",)
    assert plan.families == {4}


def test_plan_for_the_ipv4_wildcard_advertises_routable_addresses() -> None:
    plan = make_plan("0.0.0.0", None, [LO, ETH, WLAN])
    assert plan.interfaces == ("127.0.0.1", "10.1.2.3", "192.168.7.9")
    assert plan.advertise == ("10.1.2.3", "192.168.7.9")
    assert make_plan("0.0.0.0", None, [LO]).advertise == ("127.0.0.1",)
    assert make_plan("0.0.0.0", None, []).advertise == ()


def test_plan_for_the_ipv6_wildcard_skips_link_local() -> None:
    plan = make_plan("::", None, [LO, ETH])
    assert plan.families == {4, 6}
    assert plan.advertise == ("10.1.2.3", "2001:db8::3")


def test_plan_resolves_interface_names_and_reports_misses() -> None:
    plan = make_plan("0.0.0.0", ["wlan0", "eth9", "10.1.2.3", "203.0.113.1"], [LO, ETH, WLAN])
    assert plan.interfaces == ("192.168.7.9", "10.1.2.3")
    assert plan.advertise == ("192.168.7.9", "10.1.2.3")
    assert len(plan.problems) == 2
    assert "eth9" in plan.problems[0]
    assert "203.0.113.1" in plan.problems[1]
    assert make_plan("0.0.0.0", ["eth9"], [LO]).interfaces == ()


def test_choose_address_prefers_a_shared_subnet() -> None:
    nets = make_plan("0.0.0.0", None, [LO, ETH]).local_networks
    assert choose_address(["192.168.7.9", "10.1.2.77"], nets) == "10.1.2.77"
    assert choose_address(["192.168.7.9", "127.0.0.1"], nets) == "127.0.0.1"
    assert choose_address(["192.168.7.9"], nets) == "192.168.7.9"
    assert choose_address(["junk", "0.0.0.0", "fe80::1", "224.0.0.251"], nets) is None
    assert choose_address([], nets) is None


# -- the object's edges (no sockets) ---------------------------------------------------


def _ignore(_addr: tuple[str, int]) -> None:
    pass


@pytest.mark.parametrize(
    ("name", "addr", "interfaces"),
    [
        ("", ("127.0.0.1", 7946), None),
        ("a", ("localhost", 7946), None),
        ("a", ("127.0.0.1", 0), None),
        ("a", ("127.0.0.1", 70000), None),
        ("a", ("127.0.0.1", 7946), "eth0"),
        ("a", ("127.0.0.1", 7946), [""]),
    ],
)
def test_misuse_raises_config_error(
    name: str, addr: tuple[str, int], interfaces: list[str] | None
) -> None:
    with pytest.raises(ConfigError):
        MdnsDiscovery(name, addr, "c", _ignore, interfaces=interfaces)


def test_close_is_idempotent_and_final() -> None:
    disc = MdnsDiscovery("a", ("127.0.0.1", 7946), "c", _ignore)
    disc.close()
    disc.close()
    with pytest.raises(NotRunningError):
        disc.start()


@pytest.mark.parametrize("interfaces", [["no-such-if0"], ["203.0.113.9"]])
def test_unusable_interface_warns_once_and_carries_on(
    caplog: pytest.LogCaptureFixture, interfaces: list[str]
) -> None:
    found: list[tuple[str, int]] = []
    disc = MdnsDiscovery("a", ("0.0.0.0", 7946), "c", found.append, interfaces=interfaces)
    with caplog.at_level(logging.WARNING, logger="meshlite.mdns"):
        disc.start()
        disc._thread.join(FIND_TIMEOUT_S)  # type: ignore[union-attr]
        disc.close()
    [warning] = [r.getMessage() for r in caplog.records if r.name == "meshlite.mdns"]
    assert "mDNS discovery disabled" in warning
    assert f"{interfaces[0]} is not an address" in warning or "no interface named" in warning
    assert found == []


# -- real multicast on loopback --------------------------------------------------------


def _loopback_multicast_reason() -> str | None:
    """None if a multicast datagram sent out of ``lo`` comes back to a member socket."""
    group = "224.0.0.251"
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
    ):
        try:
            rx.bind((group, 0))
            member = socket.inet_aton(group) + socket.inet_aton("127.0.0.1")
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, member)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            rx.settimeout(2.0)
            tx.sendto(b"meshlite-probe", (group, rx.getsockname()[1]))
            data = rx.recv(64)
        except OSError as exc:
            return f"multicast on lo does not work here ({exc}); see test_mdns_netns.py"
    return None if data == b"meshlite-probe" else "multicast on lo returned the wrong datagram"


@pytest.fixture(scope="module")
def lo_multicast() -> None:
    reason = _loopback_multicast_reason()
    if reason is not None:
        pytest.skip(reason)


class _Sink:
    """Collects ``on_found`` calls from the mDNS thread; waits with a deadline."""

    def __init__(self) -> None:
        self.found: list[tuple[str, int]] = []
        self._cond = threading.Condition()

    def __call__(self, addr: tuple[str, int]) -> None:
        with self._cond:
            self.found.append(addr)
            self._cond.notify_all()

    def wait_for(self, addr: tuple[str, int], timeout_s: float = FIND_TIMEOUT_S) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: addr in self.found, timeout_s)


def _wait_until(check: Callable[[], bool], timeout_s: float = FIND_TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


@pytest.mark.usefixtures("lo_multicast")
def test_loopback_peers_find_each_other_and_ignore_other_clusters(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tag = uuid.uuid4().hex[:12]  # other test runs on this host stay out of our way
    label = f"test-{tag}"
    sinks = {k: _Sink() for k in "abc"}
    a = MdnsDiscovery(f"a-{tag}", ("127.0.0.1", 17001), label, sinks["a"])
    c = MdnsDiscovery(f"c-{tag}", ("127.0.0.1", 17003), label + "-other", sinks["c"])
    b = MdnsDiscovery(f"b-{tag}", ("127.0.0.1", 17002), label, sinks["b"])
    caplog.set_level(logging.DEBUG, logger="meshlite.mdns")
    try:
        a.start()
        c.start()
        assert _wait_until(lambda: f"registered c-{tag}." in caplog.text)
        b.start()  # a peer that appears later is still found
        assert sinks["a"].wait_for(("127.0.0.1", 17002))
        assert sinks["b"].wait_for(("127.0.0.1", 17001))
        # c was seen and filtered by both a and b, not merely missed:
        filtered = f"c-{tag}._meshlite._udp.local. is another"
        assert _wait_until(lambda: caplog.text.count(filtered) >= 2)
        began = time.monotonic()
        b.close()
        assert time.monotonic() - began < CLOSE_TIMEOUT_S + 1.0
        # b comes back on another port: its goodbye let a forget it, so a reports it again.
        b = MdnsDiscovery(f"b-{tag}", ("127.0.0.1", 17012), label, sinks["b"])
        b.start()
        assert sinks["a"].wait_for(("127.0.0.1", 17012))
    finally:
        for disc in (a, b, c):
            disc.close()
    assert sorted(sinks["a"].found) == [("127.0.0.1", 17002), ("127.0.0.1", 17012)]
    assert set(sinks["b"].found) == {("127.0.0.1", 17001)}
    assert sinks["c"].found == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
