"""Leader election with mesh.lock: three workers, one leader at a time, hand-over on a crash.

Run it:  python examples/leader_election.py

One process, four peers on loopback: a Raft server (``bootstrap_expect=1``, in memory)
and three workers.  Each worker runs the recipe from docs/kv.md — hold the lock
``service/worker/leader`` for as long as it leads, and stop acting the moment
``lock.lost`` is set.  After a few seconds the current leader crashes (``close()``: no
goodbye, like a SIGKILL); the mesh declares it dead, its session is invalidated, and
another worker takes over after the lock delay.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

import anyio
import anyio.abc

import meshlite

KEY = meshlite.generate_key()
LOCK = "service/worker/leader"


async def worker(mesh: meshlite.Mesh, changed: anyio.abc.ObjectSendStream[str]) -> None:
    try:
        while True:
            async with mesh.lock(LOCK, mesh.name.encode(), lock_delay_s=1.0) as lock:
                print(f"{mesh.name}: I am the leader")
                await changed.send(mesh.name)
                await lock.lost.wait()
                print(f"{mesh.name}: lost the lock")
    except meshlite.NotRunningError:
        print(f"{mesh.name}: stopped")


async def main() -> None:
    opts = {"key": KEY, "profile": "local"}
    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(
            meshlite.Mesh("server", "127.0.0.1:0", server=True, bootstrap_expect=1, **opts)
        )
        workers = [
            await stack.enter_async_context(
                meshlite.Mesh(f"worker-{i}", "127.0.0.1:0", join=[server.address], **opts)
            )
            for i in range(3)
        ]
        send, leaders = anyio.create_memory_object_stream[str](10)
        async with anyio.create_task_group() as tg:
            for w in workers:
                tg.start_soon(worker, w, send)
            with anyio.fail_after(30):
                first = await leaders.receive()
            entry = await server.kv.get(LOCK)
            print(f"the key names the leader: {entry.value.decode() if entry else None}")
            print(f"{first} crashes")
            await next(w for w in workers if w.name == first).close()
            with anyio.fail_after(30):
                print(f"new leader: {await leaders.receive()}")
            tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main)
