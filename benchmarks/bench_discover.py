"""What ``mesh.discover()`` costs, beside the HTTP health query a Consul user pays today.

    python benchmarks/bench_discover.py [--services 1000] [--instances 10] [--calls 200000]
        [--http-calls 2000] [--repeats 5] [--smoke]

A real :class:`meshlite.Mesh` (asyncio, loopback) registers ``--services`` x
``--instances`` instances through ``mesh.register`` (the real path: records, index,
broadcasts).  Then, in the same process and run:

* ``discover``: ``mesh.discover(name)`` for names drawn round-robin, each call timed on
  its own with ``perf_counter_ns`` (the clock's own overhead, measured by timing an empty
  statement the same way, is subtracted and reported); p50 and p99 over ``--calls``
  calls, median of ``--repeats`` repeats.  Also ``discover(tag=...)`` and ``pick``.
* ``HTTP health query``: what Consul's client libraries do for the same answer — a
  keep-alive ``GET /v1/health/service/<name>?passing`` to a local agent, and decoding its
  JSON.  There is no Consul binary on this machine, so the server here is a stdlib
  ``ThreadingHTTPServer`` on 127.0.0.1 answering from the very same directory with
  Consul's response shape (``Node``/``Service``/``Checks``).  It is a lower bound for a
  real agent (no ACLs, no blocking-query machinery, no Go-side work).

Prints medians and the ratio HTTP / discover.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from anyio.from_thread import start_blocking_portal

import meshlite


def _percentiles(fn: Callable[[int], object], calls: int) -> tuple[float, float, float]:
    """(p50, p99, clock overhead) in ns of ``fn(i)`` timed call by call."""
    clock = time.perf_counter_ns
    overhead = []
    for _ in range(min(calls, 100_000)):
        t0 = clock()
        t1 = clock()
        overhead.append(t1 - t0)
    base = statistics.median(overhead)
    samples = []
    for i in range(calls):
        t0 = clock()
        fn(i)
        t1 = clock()
        samples.append(t1 - t0 - base)
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)], base


def _consul_shape(instances: list[meshlite.Instance]) -> list[dict[str, Any]]:
    return [
        {
            "Node": {"Node": i.node, "Address": i.address},
            "Service": {
                "ID": i.id,
                "Service": i.service,
                "Address": i.address,
                "Port": i.port,
                "Tags": list(i.tags),
                "Meta": dict(i.meta),
            },
            "Checks": [{"Status": str(i.status), "ServiceID": i.id}],
        }
        for i in instances
    ]


def _http_server(mesh: meshlite.Mesh) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # TCP_NODELAY, as Go's net/http sets it: otherwise headers and body go out in two
        # segments and Nagle + delayed ACK add ~40 ms to every response.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            name = self.path.split("?")[0].rsplit("/", 1)[-1]
            body = json.dumps(_consul_shape(mesh.discover(name))).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--instances", type=int, default=10)
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--http-calls", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, for the test suite")
    args = ap.parse_args()
    if args.smoke:
        args.services, args.instances, args.calls, args.http_calls, args.repeats = (
            20,
            3,
            2000,
            50,
            1,
        )

    with start_blocking_portal() as portal:
        mesh = meshlite.Mesh("bench", "127.0.0.1:0", profile="local")
        with portal.wrap_async_context_manager(mesh):
            names = [f"svc-{s}" for s in range(args.services)]

            async def register_all() -> None:
                for name in names:
                    for i in range(args.instances):
                        tags = ["primary"] if i == 0 else ["replica"]
                        await mesh.register(name, 1000 + i, id=f"{name}-{i}", tags=tags)

            t0 = time.perf_counter()
            portal.call(register_all)
            register_s = time.perf_counter() - t0
            assert len(mesh.discover(names[-1])) == args.instances
            n = len(names)
            results: dict[str, list[tuple[float, float, float]]] = {}
            server = _http_server(mesh)
            conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1])

            def http_query(i: int) -> object:
                conn.request("GET", f"/v1/health/service/{names[i % n]}?passing")
                return json.loads(conn.getresponse().read())

            cases: dict[str, tuple[Callable[[int], object], int]] = {
                "discover(name)": (lambda i: mesh.discover(names[i % n]), args.calls),
                "discover(name, tag=...)": (
                    lambda i: mesh.discover(names[i % n], "primary"),
                    args.calls,
                ),
                "pick(name)": (lambda i: mesh.pick(names[i % n]), args.calls),
                "HTTP health query (Consul-style)": (http_query, args.http_calls),
            }
            for _ in range(args.repeats):
                for label, (fn, calls) in cases.items():
                    results.setdefault(label, []).append(_percentiles(fn, calls))
            conn.close()
            server.shutdown()

    print(
        f"{args.services} services x {args.instances} instances registered in {register_s:.2f} s;"
        f" medians of {args.repeats} repeats"
    )
    med = {
        k: (statistics.median(p[0] for p in v), statistics.median(p[1] for p in v))
        for k, v in results.items()
    }
    base = med["discover(name)"]
    for label, (p50, p99) in med.items():
        print(
            f"{label:36} p50 {p50 / 1000:9.3f} us   p99 {p99 / 1000:9.3f} us"
            f"   x{p50 / base[0]:8.1f} of discover p50"
        )
    overhead = statistics.median(p[2] for v in results.values() for p in v)
    print(f"(timer overhead subtracted: {overhead:.0f} ns per call)")


if __name__ == "__main__":
    main()
