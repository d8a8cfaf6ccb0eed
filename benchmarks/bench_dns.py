"""The DNS interface: SRV lookups per second and their latency, over UDP with dnspython.

    python benchmarks/bench_dns.py [--instances 3] [--queries 5000] [--repeats 5] [--smoke]

A real ``meshlite agent --dns 127.0.0.1:0`` runs as a subprocess (its own interpreter,
so client and server do not share a GIL) with one service of ``--instances`` instances
defined in a ``--config-dir`` file.  This process is the client: dnspython's
``dns.query.udp`` on one reused socket, one query in flight at a time (a stub resolver's
pattern), asking ``web.service.meshlite SRV`` — the heaviest usual answer: SRV records
plus their glue.  Each query is timed on its own (``perf_counter_ns``); per repeat we get
queries/s (count / wall time) and the p50 and p99 latency, and print the median of the
repeats.  Beside it, two references for what the rest of the time is:

* ``canned UDP echo``: the same client against a bare Python UDP loop in a subprocess
  that sends back the agent's own reply bytes (with the query's id) without parsing
  anything — the floor this client and loopback impose on any Python DNS server;
* ``Answerer.respond``: the server's own compute, the sans-I/O answerer for the same
  question in this process (bytes in, bytes out, no sockets).
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype

from meshlite._core.catalog import Record, encode_record
from meshlite._core.directory import Directory
from meshlite._core.dns_answer import Answerer
from meshlite._core.events import Member, MemberEvent, MemberEventKind

QNAME = "web.service.meshlite."
SCRIPT = Path(sys.executable).with_name("meshlite")
AGENT = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "meshlite.cli"]
START_TIMEOUT_S = 60.0


def start_agent(config: Path, instances: int) -> tuple[subprocess.Popen[str], str, int]:
    services = [
        {"name": "web", "id": f"web-{i}", "port": 8080 + i, "address": f"10.0.0.{i + 1}"}
        for i in range(instances)
    ]
    (config / "web.json").write_text(json.dumps({"services": services}))
    proc = subprocess.Popen(
        [*AGENT, "agent", "--log-json", "--name", "bench", "--bind", "127.0.0.1:0",
         "--profile", "local", "--dns", "127.0.0.1:0", "--config-dir", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    for line in proc.stdout:  # the start line carries the DNS address
        event = json.loads(line)
        if event.get("event") == "start":
            host, port = event["dns"].rsplit(":", 1)
            return proc, host, int(port)
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit(f"the agent did not start: {proc.stderr.read() if proc.stderr else ''}")


def wait_for_answers(host: str, port: int, instances: int) -> bytes:
    """The agent's reply once it has every instance (its bytes, for the canned echo)."""
    q = dns.message.make_query(QNAME, "SRV")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        reply = dns.query.udp(q, host, timeout=2, port=port)
        if reply.answer and len(reply.answer[0]) == instances:
            return reply.to_wire(want_shuffle=False)
        time.sleep(0.05)
    raise SystemExit("the agent never answered with every instance")


# A UDP loop that answers every datagram with the canned reply under the query's id.
ECHO = """
import socket, sys
canned = bytes.fromhex(sys.argv[1])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
while True:
    query, peer = sock.recvfrom(65535)
    sock.sendto(query[:2] + canned[2:], peer)
"""


def start_echo(canned: bytes) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", ECHO, canned.hex()], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def one_repeat(host: str, port: int, queries: int) -> tuple[float, float, float]:
    """(queries/s, p50 µs, p99 µs) of ``queries`` SRV lookups, one at a time."""
    wire_query = dns.message.make_query(QNAME, "SRV")
    samples = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        clock = time.perf_counter_ns
        started = clock()
        for _ in range(queries):
            t0 = clock()
            reply = dns.query.udp(wire_query, host, timeout=2, port=port, sock=sock)
            samples.append(clock() - t0)
            if not reply.answer or reply.answer[0].rdtype != dns.rdatatype.SRV:
                raise SystemExit(f"unexpected reply: {reply}")
        elapsed_s = (clock() - started) / 1e9
    samples.sort()
    return (
        queries / elapsed_s,
        samples[len(samples) // 2] / 1e3,
        samples[len(samples) * 99 // 100] / 1e3,
    )


def answerer_cost_us(instances: int, calls: int) -> float:
    """The server's share: ``Answerer.respond`` for the same SRV question, median µs."""
    directory = Directory("bench", 1)
    directory.on_member(
        MemberEvent(MemberEventKind.JOIN, Member("peer", "10.0.0.1", 7946, "alive", 1))
    )
    for i in range(instances):
        record = Record("peer", f"web-{i}", 10 + i, "web", f"10.0.0.{i + 1}", 8080 + i)
        directory.on_broadcast(encode_record(record), 0.0)
    nodes = {"bench": "127.0.0.1", "peer": "10.0.0.1"}
    answerer = Answerer(node="bench", rng=random.Random(1))
    wire = dns.message.make_query(QNAME, "SRV").to_wire()
    clock = time.perf_counter_ns
    samples = []
    for _ in range(calls):
        t0 = clock()
        answerer.respond(wire, directory, nodes)
        samples.append(clock() - t0)
    return statistics.median(samples) / 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--queries", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="a few queries, to check it runs")
    args = ap.parse_args()
    if args.smoke:
        args.queries, args.repeats = 200, 2
    with tempfile.TemporaryDirectory() as config:
        proc, host, port = start_agent(Path(config), args.instances)
        try:
            canned = wait_for_answers(host, port, args.instances)
            echo, echo_port = start_echo(canned)
            try:
                one_repeat(host, port, min(500, args.queries))  # warm-up
                runs, floor = [], []
                for _ in range(args.repeats):  # interleaved, so load changes hit both alike
                    runs.append(one_repeat(host, port, args.queries))
                    floor.append(one_repeat(host, echo_port, args.queries))
            finally:
                echo.kill()
                echo.wait(timeout=30)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    qps = statistics.median(r[0] for r in runs)
    p50 = statistics.median(r[1] for r in runs)
    p99 = statistics.median(r[2] for r in runs)
    server_us = answerer_cost_us(args.instances, max(1000, args.queries // 5))
    print(f"DNS SRV lookup over UDP, {args.instances} instances, {args.queries} queries x "
          f"{args.repeats} repeats, one in flight (median of repeats)")  # fmt: skip
    each = ", ".join(f"{r[0]:.0f}" for r in runs)
    print(f"  queries/s           {qps:10.0f}   (each repeat: {each})")
    print(f"  latency p50         {p50:10.1f} µs")
    print(f"  latency p99         {p99:10.1f} µs")
    print(f"  Answerer.respond    {server_us:10.1f} µs   (the server's compute, in-process)")
    floor_qps = statistics.median(r[0] for r in floor)
    floor_p50 = statistics.median(r[1] for r in floor)
    print(f"  canned UDP echo     {floor_qps:10.0f} queries/s, p50 {floor_p50:.1f} µs "
          "(the same client against a server that does no DNS work)")  # fmt: skip
    print(f"  ratio               {qps / floor_qps:10.2f} of the echo's queries/s")


if __name__ == "__main__":
    main()
