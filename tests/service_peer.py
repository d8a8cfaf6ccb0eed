"""One ``meshlite.Mesh`` process with an optional service, for the multi-process tests.

``python tests/service_peer.py NAME JOIN|- WATCH[,WATCH...]|- [--api PORT FLAGFILE HTTPURL]``

Runs a mesh (``profile="local"``) on 127.0.0.1, prints ``address HOST:PORT`` once started,
then ``discover NAME JSON`` whenever the instances of a watched service change (JSON: a
sorted list of ``[node, port, status]`` with ``passing_only=False``).  With ``--api``, it
registers the service ``api`` on PORT with two checks, both real: a callable that passes
while FLAGFILE exists, and an HTTP check of HTTPURL.  Stops when stdin closes.
"""

from __future__ import annotations

import json
import os
import sys
import threading

import anyio

import meshlite

POLL_S = 0.05
MAX_LIFETIME_S = 120.0  # a backstop far above any test's deadline


async def run(name: str, join: list[str], watch: list[str], api: list[str]) -> None:
    stdin_closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stdin_closed.set()), daemon=True).start()
    async with meshlite.Mesh(name, "127.0.0.1:0", join=join, profile="local") as mesh:
        print(f"address {mesh.address}", flush=True)
        if api:
            port, flag, url = api
            await mesh.register(
                "api", int(port), check=meshlite.HTTPCheck(url, interval_s=0.2, timeout_s=1)
            )

            @mesh.check("api", interval_s=0.2, timeout_s=1)
            def flag_present() -> bool:
                return os.path.exists(flag)

        last: dict[str, list[list[object]]] = {}
        with anyio.move_on_after(MAX_LIFETIME_S):
            while not stdin_closed.is_set():
                for service in watch:
                    found = mesh.discover(service, passing_only=False)
                    now = sorted([i.node, i.port, str(i.status)] for i in found)
                    if last.get(service) != now:
                        last[service] = now
                        print(f"discover {service} {json.dumps(now)}", flush=True)
                await anyio.sleep(POLL_S)


def main(argv: list[str]) -> int:
    name, join, watch, *rest = argv
    api = rest[1:4] if rest[:1] == ["--api"] else []
    anyio.run(
        run,
        name,
        [] if join == "-" else [join],
        [] if watch == "-" else watch.split(","),
        api,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
