"""One ``meshlite.Mesh`` peer for ``bench_service_propagation.py``: watches, and obeys stdin.

    python benchmarks/_service_peer.py --name NAME --bind 127.0.0.1:PORT [--join HOST:PORT]
        [--key BASE64] [--service bench-svc] [--check-interval-s 5] [--check-timeout-s 1]

Theory of operation
-------------------
The peer runs a mesh with the LAN profile (memberlist's ``DefaultLANConfig`` timings) and
prints one line per event, each ending with ``time.monotonic()`` at the moment it happened.
On Linux that clock is CLOCK_MONOTONIC, one clock for the whole system, so the harness can
subtract a time printed by one process from a time printed by another.

* ``ready ADDRESS T`` once the mesh is up;
* ``members ALIVE T`` whenever the number of members this peer sees alive (itself
  included) changes (from ``Mesh.watch_members``);
* ``watch COUNT T`` whenever ``mesh.watch(SERVICE, passing_only=True)`` yields, i.e. at
  once and then after every change of the passing instances (the yield itself is the
  observation: no polling);
* polled every ``--poll-s`` (off when 0), cross-checks that tell a late watch from late
  news, and gossip from anti-entropy: ``discover COUNT T`` whenever
  ``len(mesh.discover(SERVICE))`` changes, and ``counters DELIVERED SYNCS T`` whenever
  ``Mesh.stats``' ``user_delivered`` (catalog broadcasts received by gossip) or
  ``push_pulls + push_pull_served`` (full-state exchanges) change;
* ``did COMMAND [ID] T`` after each command line read on stdin, ``T`` taken just before
  the command ran:

  - ``register ID``: registers SERVICE with that id and a :class:`meshlite.CallableCheck`
    (``initial_status="passing"``) that returns a flag held in memory, which the register
    sets healthy;
  - ``fail`` / ``recover``: flips the flag; the check sees it at its next run (within
    ``--check-interval-s``) and only then does the instance's status change;
  - ``deregister ID``;
  - ``stats``: prints ``stats JSON T``, the mesh's counters (``Mesh.stats``);
* ``error MESSAGE T`` for a command it cannot run.

Any peer takes commands; the harness sends them to one.  The peer stops when stdin closes
(or after ``--max-lifetime-s``, a backstop); the harness also kills its process group.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

import meshlite

# Far above a full N=60 run with five repeats; only a harness that died leaves a peer
# running, and then not for longer than this.
MAX_LIFETIME_S = 1800.0
COMMAND_BUFFER = 64  # the harness sends one command at a time


def emit(*words: object, at_s: float | None = None) -> None:
    """One output line, stamped with the system-wide monotonic clock (now, or ``at_s``);
    written in one piece, so that a kill never leaves half a line."""
    t = time.monotonic() if at_s is None else at_s
    sys.stdout.write(" ".join([*map(str, words), f"{t:.6f}"]) + "\n")
    sys.stdout.flush()


def _read_stdin(send: MemoryObjectSendStream[str], token: anyio.lowlevel.EventLoopToken) -> None:
    """Daemon thread: hand each stdin line to the loop; close the stream at EOF."""
    try:
        for line in sys.stdin:
            anyio.from_thread.run_sync(send.send_nowait, line.strip(), token=token)
        anyio.from_thread.run_sync(send.close, token=token)
    except RuntimeError:  # the loop has ended: nothing left to tell
        return


class Flag:
    """The health the callable check reports; flipped by ``fail``/``recover``."""

    def __init__(self) -> None:
        self.healthy = True

    def __call__(self) -> bool:
        return self.healthy


async def follow_members(mesh: meshlite.Mesh) -> None:
    events = mesh.watch_members()  # subscribed before the first count: nothing missed
    last = -1
    while True:
        alive = sum(m.status == "alive" for m in mesh.members())
        if alive != last:
            last = alive
            emit("members", alive)
        if await anext(events, None) is None:
            return


async def follow_service(mesh: meshlite.Mesh, service: str) -> None:
    async for instances in mesh.watch(service, passing_only=True):
        emit("watch", len(instances))


async def poll(mesh: meshlite.Mesh, service: str, poll_s: float) -> None:
    last, last_counters = -1, (-1, -1)
    while True:
        count = len(mesh.discover(service))
        if count != last:
            last = count
            emit("discover", count)
        stats = mesh.stats
        syncs = stats.get("push_pulls", 0) + stats.get("push_pull_served", 0)
        counters = (stats.get("user_delivered", 0), syncs)
        if counters != last_counters:
            last_counters = counters
            emit("counters", *counters)
        await anyio.sleep(poll_s)


async def obey(
    mesh: meshlite.Mesh, commands: MemoryObjectReceiveStream[str], args: argparse.Namespace
) -> None:
    """Run each command line until stdin closes."""
    flag = Flag()
    async for line in commands:
        verb, *rest = line.split() or [""]
        t = time.monotonic()
        try:
            if verb == "register" and len(rest) == 1:
                flag.healthy = True
                check = meshlite.CallableCheck(
                    flag,
                    args.check_interval_s,
                    args.check_timeout_s,
                    initial_status=meshlite.Status.PASSING,
                )
                await mesh.register(args.service, args.port, id=rest[0], check=check)
            elif verb in ("fail", "recover") and not rest:
                flag.healthy = verb == "recover"
            elif verb == "deregister" and len(rest) == 1:
                await mesh.deregister(rest[0])
            elif verb == "stats" and not rest:
                emit("stats", json.dumps(mesh.stats, separators=(",", ":")))
                continue
            else:
                emit("error", f"unknown command {line!r}")
                continue
        except meshlite.ConfigError as exc:
            emit("error", str(exc).replace("\n", " "))
            continue
        emit("did", verb, *rest, at_s=t)


async def run(args: argparse.Namespace) -> None:
    send, receive = anyio.create_memory_object_stream[str](COMMAND_BUFFER)
    token = anyio.lowlevel.current_token()
    threading.Thread(target=_read_stdin, args=(send, token), daemon=True).start()
    join = [args.join] if args.join else []
    async with meshlite.Mesh(
        args.name, args.bind, join=join, key=args.key, cluster="bench", profile="lan"
    ) as mesh:
        emit("ready", mesh.address)
        with anyio.move_on_after(args.max_lifetime_s):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow_members, mesh)
                tg.start_soon(follow_service, mesh, args.service)
                if args.poll_s > 0:
                    tg.start_soon(poll, mesh, args.service, args.poll_s)
                await obey(mesh, receive, args)
                tg.cancel_scope.cancel()


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True)
    p.add_argument("--bind", required=True, help="HOST:PORT")
    p.add_argument("--join", default="", help="a seed's HOST:PORT")
    p.add_argument("--key", default=None, help="base64 gossip key")
    p.add_argument("--service", default="bench-svc")
    p.add_argument("--port", type=int, default=8080, help="the registered service's port")
    p.add_argument("--check-interval-s", type=float, default=5.0)
    p.add_argument("--check-timeout-s", type=float, default=1.0)
    p.add_argument("--poll-s", type=float, default=0.0, help="discover() poll; 0: off")
    p.add_argument("--max-lifetime-s", type=float, default=MAX_LIFETIME_S)
    return p.parse_args(argv)


if __name__ == "__main__":
    anyio.run(run, parse_args(sys.argv[1:]))
