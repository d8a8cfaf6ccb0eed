"""Find the ``hello`` service through the mesh and call it.

    python examples/discover_client.py [--join 127.0.0.1:7946] [--calls 3]

``meshlite.discover("hello")`` answers from this process's memory — no DNS, no HTTP
round trip to an agent — with the passing instances only; ``meshlite.pick`` chooses one
at random to spread the load.
"""

from __future__ import annotations

import argparse
import time
import urllib.request

import meshlite


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--join", default="127.0.0.1:7946")
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--wait-s", type=float, default=10.0)
    args = parser.parse_args()

    meshlite.start(name="client", bind="127.0.0.1:0", join=[args.join])
    try:
        deadline = time.monotonic() + args.wait_s
        while not meshlite.discover("hello") and time.monotonic() < deadline:
            time.sleep(0.1)  # the catalog arrives with the join's push/pull
        print(
            "instances:",
            [f"{i.node} {i.address}:{i.port} {i.status}" for i in meshlite.discover("hello")],
        )
        for _ in range(args.calls):
            instance = meshlite.pick("hello")
            if instance is None:
                raise SystemExit("no passing instance of 'hello' found")
            url = f"http://{instance.address}:{instance.port}/hello"
            with urllib.request.urlopen(url, timeout=5) as response:
                print(url, "->", response.read().decode().strip())
    finally:
        meshlite.stop()


if __name__ == "__main__":
    main()
