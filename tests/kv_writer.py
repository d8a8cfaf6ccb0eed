"""A KV client as a process: writes ``k/NNNNNN`` in a loop and reports every outcome.

``python tests/kv_writer.py NAME JOIN KEY`` joins the mesh at ``JOIN`` (not a server)
and writes key ``k/%06d`` = its number, one after another, printing one line each:
``ack N`` (acknowledged: committed by a quorum), ``unknown N`` (sent, no answer: it may
or may not exist) or ``retry N`` (no leader reachable: certainly not applied; the same N
is tried again).  ``leader NAME`` is printed whenever the leader it sees changes.  When
stdin closes it stops writing, prints ``final JSON`` (the keys under ``k/`` by a
consistent read) and leaves.
"""

from __future__ import annotations

import json
import sys

import anyio
from child_io import emit, stdin_closed

from meshlite import Mesh, NoLeaderError, OutcomeUnknownError

MAX_LIFETIME_S = 120.0  # a backstop far above any test's deadline


async def main(name: str, join: str, key: str) -> None:
    stop = stdin_closed()
    async with Mesh(name, "127.0.0.1:0", join=[join], key=key, profile="local") as mesh:
        with anyio.move_on_after(MAX_LIFETIME_S):
            leader, i = None, 0
            while not stop.is_set():
                now = mesh.leader()
                if now is not None and now.name != leader:
                    leader = now.name
                    emit(f"leader {leader}")
                try:
                    await mesh.kv.put(f"k/{i:06d}", str(i))
                    emit(f"ack {i}")
                    i += 1
                except OutcomeUnknownError:
                    emit(f"unknown {i}")
                    i += 1
                except NoLeaderError:
                    emit(f"retry {i}")
                await anyio.sleep(0.005)
            keys = [e.key for e in await mesh.kv.list("k/", consistency="consistent")]
            emit("final " + json.dumps(keys))


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:4])
