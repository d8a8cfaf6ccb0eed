"""One full ``meshlite.Mesh`` as a process, for tests that run it inside a network namespace.

``python tests/mesh_peer.py NAME BIND CLUSTER KEY BACKEND [--mdns] [JOIN ...]`` runs a
mesh (``profile="local"``) under the anyio ``BACKEND`` (asyncio or trio) and writes one
line per event to stdout: ``address HOST:PORT`` once started, ``members JSON`` whenever
its member view changes (a sorted list of ``[name, "host:port", status]``), ``log LEVEL
NAME MESSAGE`` for each ``meshlite`` log record (INFO and up), ``closed`` at the end.  It
leaves and stops when stdin closes or after ``MAX_LIFETIME_S``.
"""

from __future__ import annotations

import json
import logging
import sys
import threading

import anyio

from meshlite._mesh import Mesh

MAX_LIFETIME_S = 60.0  # a backstop far above any test's deadline
POLL_S = 0.05
_print_lock = threading.Lock()


def emit(line: str) -> None:
    with _print_lock:
        sys.stdout.write(line.replace("\n", " ") + "\n")
        sys.stdout.flush()


class _Forward(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        emit(f"log {record.levelname} {record.name} {record.getMessage()}")


async def run(name: str, bind: str, cluster: str, key: str, mdns: bool, join: list[str]) -> None:
    stdin_closed = threading.Event()

    def wait_stdin() -> None:
        sys.stdin.read()
        stdin_closed.set()

    threading.Thread(target=wait_stdin, daemon=True).start()
    mesh = Mesh(name, bind, join=join, key=key, cluster=cluster, mdns=mdns, profile="local")
    async with mesh:
        emit(f"address {mesh.address}")
        last: list[list[str]] = []
        with anyio.move_on_after(MAX_LIFETIME_S):
            while not stdin_closed.is_set():
                view = sorted([m.name, f"{m.address}:{m.port}", m.status] for m in mesh.members())
                if view != last:
                    emit(f"members {json.dumps(view)}")
                    last = view
                await anyio.sleep(POLL_S)
    emit("closed")


def main(argv: list[str]) -> int:
    name, bind, cluster, key, backend, *rest = argv
    mdns = "--mdns" in rest
    join = [a for a in rest if a != "--mdns"]
    logger = logging.getLogger("meshlite")
    logger.setLevel(logging.INFO)
    logger.addHandler(_Forward())
    anyio.run(run, name, bind, cluster, key, mdns, join, backend=backend)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
