"""The user-space delay/reorder injector (``nfq_delay.py``) on a real pair of namespaces.

Host ``a`` runs the injector on its eth0 egress; UDP probes between ``a`` and ``b``
measure what it does: round-trip times with and without it (the delay is added, every
probe still answered), sequence-numbered datagrams from ``a`` arriving out of order at
``b`` under ``reorder`` (none lost, none duplicated), and after it stops: normal round
trips, no iptables rule, no process.  Also: an injector killed with SIGKILL leaves its
rule behind, and ``--queue-bypass`` lets traffic through it.  Needs root, namespaces,
iptables with NFQUEUE and the ``fnfqueue`` package; skips with the reason otherwise.
"""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netns import Host, LineProcess, require_lan

from .nfq_delay import QUEUE_NUM, parse_spec, rule

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]

INJECTOR = [sys.executable, str(Path(__file__).with_name("nfq_delay.py"))]
PORT = 9911
DELAY = ["delay", "100ms", "40ms"]  # faults.NETEM_SPEC["delay"]
REORDER = ["delay", "20ms", "reorder", "25%", "50%"]  # faults.NETEM_SPEC["reorder"]

# One probe program, run in either namespace: ``echo`` answers every datagram;
# ``ping ADDR N`` sends N probes one at a time and prints their round trips (None: no
# answer within 2 s); ``recv N`` prints the sequence numbers of the datagrams received
# until N came or 3 s passed without one; ``send ADDR N`` sends N numbered datagrams
# 1 ms apart.
PROBE = r"""
import json, socket, sys, time
mode, args = sys.argv[1], sys.argv[2:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
if mode == "echo":
    s.bind(("0.0.0.0", PORT))
    print("ready", flush=True)
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(data, peer)
elif mode == "ping":
    rtts = []
    s.settimeout(2.0)
    for i in range(int(args[1])):
        sent = time.monotonic()
        s.sendto(str(i).encode(), (args[0], PORT))
        try:
            while s.recv(2048) != str(i).encode():
                pass
            rtts.append(time.monotonic() - sent)
        except TimeoutError:
            rtts.append(None)
        time.sleep(0.005)
    print(json.dumps(rtts), flush=True)
elif mode == "recv":
    s.bind(("0.0.0.0", PORT + 1))
    s.settimeout(3.0)
    print("ready", flush=True)
    got = []
    try:
        while len(got) < int(args[0]):
            got.append(int(s.recv(2048)))
    except TimeoutError:
        pass
    print(json.dumps(got), flush=True)
elif mode == "send":
    for i in range(int(args[1])):
        s.sendto(str(i).encode(), (args[0], PORT + 1))
        time.sleep(0.001)
""".replace("PORT", str(PORT))


def probe(host: Host, *args: str) -> LineProcess:
    return LineProcess(host, [sys.executable, "-c", PROBE, *args])


def ping(a: Host, b: Host, count: int) -> list[float]:
    """``count`` round trips from ``a`` to ``b``'s echo, in seconds; fails on a lost one."""
    done = subprocess.run(
        a.command([sys.executable, "-c", PROBE, "ping", b.address, str(count)]),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    rtts = json.loads(done.stdout)
    assert None not in rtts, f"probes went unanswered: {rtts}"
    return [float(r) for r in rtts]


def start_injector(host: Host, spec: list[str]) -> LineProcess:
    proc = LineProcess(host, [*INJECTOR, *spec, "--max-lifetime-s", "60", "--seed", "7"])
    if proc.wait_for(lambda line: '"ready"' in line, 10.0) is None:
        proc.kill()
        pytest.fail(f"the injector did not start:\n{proc.output()}")
    return proc


def stop_injector(proc: LineProcess) -> dict[str, Any]:
    """Stop it the way a heal does (close stdin); its ``stopped`` counts."""
    assert proc.stop(10.0) == 0, proc.output()
    line = proc.wait_for(lambda line: '"stopped"' in line, 1.0)
    assert line is not None, proc.output()
    counts: dict[str, Any] = json.loads(line)
    return counts


def nfqueue_rules(host: Host) -> list[str]:
    return [r for r in host.run(["iptables", "-S"]).splitlines() if "NFQUEUE" in r]


@pytest.fixture
def pair() -> Iterator[tuple[Host, Host]]:
    pytest.importorskip("fnfqueue", reason="the injector needs the fnfqueue package")
    with require_lan(2) as (a, b):
        check = subprocess.run(
            a.command([*INJECTOR, "--check"]), capture_output=True, text=True, timeout=30
        )
        if check.returncode != 0:
            pytest.skip(f"NFQUEUE is unavailable here: {check.stderr.strip()}")
        echo = probe(b, "echo")
        try:
            assert echo.wait_for(lambda line: line == "ready", 10.0), echo.output()
            yield a, b
        finally:
            echo.kill()


def test_spec_parsing_matches_netem_words() -> None:
    delay = parse_spec(DELAY)
    assert (delay.delay_s, delay.jitter_s, delay.reorder) == (0.1, 0.04, 0.0)
    reorder = parse_spec(REORDER)
    assert (reorder.delay_s, reorder.jitter_s) == (0.02, 0.0)
    assert (reorder.reorder, reorder.reorder_corr) == (0.25, 0.5)
    with pytest.raises(ValueError, match="unsupported"):
        parse_spec(["delay", "10ms", "loss", "5%"])


def test_delay_is_added_to_round_trips_and_removed_on_stop(pair: tuple[Host, Host]) -> None:
    a, b = pair
    before = ping(a, b, 20)
    proc = start_injector(a, DELAY)
    try:
        assert nfqueue_rules(a) == [" ".join(rule("-A", QUEUE_NUM)[3:])]
        during = ping(a, b, 30)
    finally:
        counts = stop_injector(proc)
    after = ping(a, b, 20)
    ms = [1e3 * statistics.median(r) for r in (before, during, after)]
    print(
        f"median RTT: {ms[0]:.2f} ms before, {ms[1]:.1f} ms with delay 100ms 40ms "
        f"(min {1e3 * min(during):.1f}, max {1e3 * max(during):.1f}), {ms[2]:.2f} ms after"
    )
    # Only a's egress is delayed, by 60-140 ms: never less than 60 ms, 100 ms typical.
    assert min(during) >= 0.060
    assert 0.080 <= statistics.median(during) - statistics.median(before) <= 0.200
    assert statistics.median(after) < 0.020
    assert counts["delayed"] == counts["packets"] >= 30, counts
    assert counts["over_bound"] == counts["errors"] == counts["held"] == 0, counts
    assert nfqueue_rules(a) == []
    assert str(proc.proc.pid) not in a.run(["ip", "netns", "pids", a.name]).split()


def test_reorder_overtakes_without_losing_a_datagram(pair: tuple[Host, Host]) -> None:
    a, b = pair
    count = 500
    receiver = probe(b, "recv", str(count))
    try:
        assert receiver.wait_for(lambda line: line == "ready", 10.0), receiver.output()
        proc = start_injector(a, REORDER)
        try:
            subprocess.run(
                a.command([sys.executable, "-c", PROBE, "send", b.address, str(count)]),
                timeout=30,
                check=True,
            )
            got_line = receiver.wait_for(lambda line: line.startswith("["), 10.0)
        finally:
            counts = stop_injector(proc)
    finally:
        receiver.kill()
    assert got_line is not None, receiver.output()
    got = json.loads(got_line)
    assert sorted(got) == list(range(count)), "datagrams lost or duplicated"
    late = sum(1 for i, seq in enumerate(got) if seq < max(got[: i + 1]))
    print(f"reorder 25% 50%: {late} of {count} datagrams arrived after a later one; {counts}")
    # netem's correlated draw sends ~7 % at once (see nfq_delay's module doc), and each
    # of those overtakes the ~20 datagrams in the 20 ms queue.
    assert late >= count // 10
    assert 0.02 * count <= counts["at_once"] <= 0.2 * count, counts
    assert counts["over_bound"] == counts["errors"] == 0, counts
    assert nfqueue_rules(a) == []


def test_a_killed_injector_leaves_traffic_flowing(pair: tuple[Host, Host]) -> None:
    a, b = pair
    proc = start_injector(a, DELAY)
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait(10.0)
    try:
        assert nfqueue_rules(a), "the rule went away with the process"
        assert statistics.median(ping(a, b, 10)) < 0.020  # --queue-bypass: not queued
    finally:
        a.run(rule("-D", QUEUE_NUM))
    assert nfqueue_rules(a) == []
