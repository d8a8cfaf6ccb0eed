"""A lock contender as a process: takes ``mesh.lock("race")`` again and again.

``python tests/lock_client.py NAME JOIN KEY`` joins the mesh at ``JOIN`` and loops:
acquire the lock, print ``enter NAME T`` (T = time.monotonic(), shared by every process
on the machine), hold it for ``HOLD_S`` while checking it is still held, print ``exit
NAME T`` and release.  It stops when stdin closes.
"""

from __future__ import annotations

import sys
import time

import anyio
from child_io import emit, stdin_closed

from meshlite import Mesh

HOLD_S = 0.3
MAX_LIFETIME_S = 120.0


async def main(name: str, join: str, key: str) -> None:
    stop = stdin_closed()
    async with Mesh(name, "127.0.0.1:0", join=[join], key=key, profile="local") as mesh:
        with anyio.move_on_after(MAX_LIFETIME_S):
            while mesh.leader() is None:
                await anyio.sleep(0.05)
            emit("ready")
            while not stop.is_set():
                async with mesh.lock("race", name.encode(), lock_delay_s=1.0) as lock:
                    emit(f"enter {name} {time.monotonic():.6f}")
                    await anyio.sleep(HOLD_S)
                    emit(f"exit {name} {time.monotonic():.6f} held={lock.held}")
                await anyio.sleep(0.01)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:4])
