"""A Flask service that registers itself in the mesh, with a health check as a decorator.

    pip install 'meshlite[examples]'
    python examples/flask_service.py              # serves :5000, mesh peer on 127.0.0.1:7946
    python examples/discover_client.py            # in another terminal: finds it and calls it

The mesh settings come from MESHLITE_* variables (MESHLITE_BIND, MESHLITE_JOIN,
MESHLITE_KEY, MESHLITE_CLUSTER); without them this peer binds 127.0.0.1:7946 and is the
seed others join.  Stop it with Ctrl-C: the mesh leaves gracefully and the instance
disappears from every peer's discovery at once.
"""

from __future__ import annotations

import argparse
import os

from flask import Flask

import meshlite

app = Flask(__name__)
healthy = {"ok": True}


@app.get("/hello")
def hello() -> str:
    return f"hello from {os.getpid()}\n"


@app.post("/toggle")
def toggle() -> str:  # flip the health check, to watch the instance leave and come back
    healthy["ok"] = not healthy["ok"]
    return f"healthy={healthy['ok']}\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()

    meshlite.register("hello", args.port, tags=["flask"])

    @meshlite.check("hello", interval_s=2, timeout_s=1)
    def hello_ok() -> bool:  # runs in a worker thread; may block
        return healthy["ok"]

    try:
        app.run(host="127.0.0.1", port=args.port)
    finally:
        meshlite.stop()


if __name__ == "__main__":
    main()
