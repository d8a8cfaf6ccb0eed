"""What the SWIM core costs per packet, per timer and per simulated second.

    python benchmarks/bench_core.py [--repeats 5] [--sim-repeats 3] [--sim-sizes 200,1000]
        [--sim-seconds 5] [--converge] [--baseline-rev REV] [--only NAME,...]

Measured, each as the median over ``--repeats`` runs (``--sim-repeats`` for the
simulations; each run of a micro-benchmark is itself the median of 10 batches):

* ``decode_packet``: one typical compound datagram of a mass join — a ``Ping`` followed
  by as many piggybacked ``Alive`` broadcasts as fit in 1,400 bytes (about 50) — as a
  peer sees it again and again (each broadcast arrives about ``retransmit_limit``
  times), and ``decode_packet, first sight``: the same with the decode memo emptied
  before each call (only the field checks help then);
* ``handle(ping)``: ``SwimCore.handle(PacketReceived)`` of a bare ping at N=1,000
  members once the broadcast queue has drained (the steady state: decode, answer
  with an ack);
* ``handle(ping+50 alive)``: the same core handling the compound datagram above, all
  of it news the core already has (what most datagrams of a mass join are: every
  broadcast reaches each peer about ``retransmit_limit`` times, and only the first is new);
* ``TimerFired``: one timer at N=1,000 members, averaged over the first 1,000 timers of a
  fresh core that learned the members from one push/pull (probe starts, indirect
  probes, suspicions, gossip ticks that fill datagrams from the queue);
* ``sim N=...``: wall seconds per simulated second of a ``SimCluster`` of N peers (LAN
  profile, default network) over its first ``--sim-seconds`` simulated seconds, from
  the moment all N join at once; with ``--converge``, until every peer sees every
  other alive instead.

``--baseline-rev REV`` also measures the ``meshlite`` package as it was at git revision
``REV`` (extracted with ``git archive`` into a temporary directory; the work tree is not
touched), alternating the two implementations run by run, and prints the ratio
old/new.  Every measurement runs in its own subprocess.  For the simulations, the
trace digests of both implementations are compared too: equal digests mean the new
code simulated exactly the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
N_MEMBERS = 1000
TIMERS = 1000
BATCHES = 10
MICRO = ("decode_packet", "decode_cold", "handle_ping", "handle_compound", "timer")


# ----------------------------------------------------------------------------- workers
# Imported inside the functions: the worker runs against whichever ``meshlite`` its
# PYTHONPATH selects (this tree or the baseline).


def _compound_packet() -> bytes:
    from meshlite._core.wire import Alive, Ping, encode_message, encode_packet

    msgs = [encode_message(Ping(12, "node-0", "node-7", ("10.0.0.8", 7946)))]
    i = 0
    while sum(map(len, msgs)) < 1340:
        i += 1
        name = f"node-{i * 17 % N_MEMBERS}"
        msgs.append(encode_message(Alive(0, name, _addr(i * 17 % N_MEMBERS), {})))
    return encode_packet("node-7", msgs)


def _addr(i: int) -> tuple[str, int]:
    return (f"10.0.{(i + 1) >> 8}.{(i + 1) & 255}", 7946)


def _core_with_members(n: int) -> Any:
    """``node-0`` after a join push/pull that told it about ``node-1 .. node-{n-1}``."""
    import random

    from meshlite._core.config import SwimConfig
    from meshlite._core.events import StreamReceived
    from meshlite._core.swim import SwimCore
    from meshlite._core.wire import NodeState, PushPull, encode_message

    core = SwimCore("node-0", _addr(0), SwimConfig.lan(), random.Random(1), 0.0)
    nodes = tuple(NodeState(f"node-{i}", _addr(i), 0, 0, {}) for i in range(1, n))
    core.handle(StreamReceived(1, _addr(1), encode_message(PushPull(True, nodes))), 0.0)
    assert len(core.members()) == n
    return core


def _per_call(fn: Callable[[], object], calls: int) -> float:
    """Seconds per call: the median of ``BATCHES`` batches of ``calls`` calls."""
    batches = []
    for _ in range(BATCHES):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        batches.append((time.perf_counter() - start) / calls)
    return statistics.median(batches)


def _bench_decode_packet() -> dict[str, Any]:
    from meshlite._core.wire import decode_packet

    data = _compound_packet()
    assert len(decode_packet(data)[1]) > 40
    return {"s": _per_call(lambda: decode_packet(data), 200)}


def _bench_decode_cold() -> dict[str, Any]:
    from meshlite._core import wire

    data = _compound_packet()
    memos = [getattr(wire, name, {}) for name in ("_MEMO", "_RECEIVED")]  # absent before

    def decode() -> object:
        for memo in memos:
            memo.clear()
        return wire.decode_packet(data)

    return {"s": _per_call(decode, 200)}


def _drained_core() -> Any:
    from meshlite._core.events import PacketReceived
    from meshlite._core.wire import Ping, encode_message, encode_packet

    core = _core_with_members(N_MEMBERS)
    ping = PacketReceived(
        _addr(7),
        encode_packet("node-7", [encode_message(Ping(3, "node-0", "node-7", _addr(7)))]),
    )
    for _ in range(10_000):  # each ack carries broadcasts until the queue is empty
        if core.pending_broadcasts() == 0:
            break
        core.handle(ping, 0.1)
    assert core.pending_broadcasts() == 0
    return core, ping


def _bench_handle_ping() -> dict[str, Any]:
    core, ping = _drained_core()
    return {"s": _per_call(lambda: core.handle(ping, 0.1), 500)}


def _bench_handle_compound() -> dict[str, Any]:
    from meshlite._core.events import PacketReceived

    core, _ = _drained_core()
    inp = PacketReceived(_addr(7), _compound_packet())
    return {"s": _per_call(lambda: core.handle(inp, 0.1), 200)}


def _bench_timer() -> dict[str, Any]:
    from meshlite._core.events import TimerFired

    core = _core_with_members(N_MEMBERS)
    fired = TimerFired()
    start = time.perf_counter()
    for _ in range(TIMERS):
        core.handle(fired, core.next_deadline())
    return {"s": (time.perf_counter() - start) / TIMERS, "sim_t": core.next_deadline()}


def _bench_sim(n: int, sim_seconds: float, converge: bool) -> dict[str, Any]:
    from meshlite._core.config import SwimConfig
    from meshlite.testing import SimCluster

    cluster = SimCluster(n, 1, SwimConfig.lan(), record_events=False)
    start = time.perf_counter()
    if converge:
        ok = cluster.run_until(cluster.converged, 120.0)
    else:
        cluster.run_for(sim_seconds)
        ok = cluster.converged()
    wall_s = time.perf_counter() - start
    return {
        "s": wall_s / cluster.now,
        "wall_s": wall_s,
        "sim_s": cluster.now,
        "converged": ok,
        "digest": cluster.trace_digest(),
    }


def _worker(name: str, sim_seconds: float, converge: bool) -> None:
    if name.startswith("sim"):
        result = _bench_sim(int(name[3:]), sim_seconds, converge)
    else:
        result = {
            "decode_packet": _bench_decode_packet,
            "decode_cold": _bench_decode_cold,
            "handle_ping": _bench_handle_ping,
            "handle_compound": _bench_handle_compound,
            "timer": _bench_timer,
        }[name]()
    print(json.dumps(result))


# ----------------------------------------------------------------------------- driver


def _run(tree: Path, name: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", name, "--sim-seconds", str(args.sim_seconds)]
    if args.converge:
        cmd.append("--converge")
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _label(name: str, args: argparse.Namespace) -> str:
    labels = {
        "decode_packet": "decode_packet (ping + ~50 alive, 1.4 kB)",
        "decode_cold": "decode_packet, first sight (memo emptied)",
        "handle_ping": f"handle(ping) at N={N_MEMBERS}",
        "handle_compound": f"handle(ping + ~50 known alive) at N={N_MEMBERS}",
        "timer": f"handle(TimerFired) at N={N_MEMBERS}",
    }
    if name in labels:
        return labels[name]
    window = "until converged" if args.converge else f"first {args.sim_seconds:g} sim s"
    return f"sim N={name[3:]} wall s / sim s ({window})"


def _fmt(name: str, seconds: float) -> str:
    return f"{seconds:9.3f} s " if name.startswith("sim") else f"{seconds * 1e6:9.1f} us"


def _extract(rev: str, into: str) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "meshlite"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return Path(into)


def _measure(name: str, args: argparse.Namespace, baseline: Path | None) -> None:
    new: list[dict[str, Any]] = []
    old: list[dict[str, Any]] = []
    for _ in range(args.sim_repeats if name.startswith("sim") else args.repeats):
        new.append(_run(REPO, name, args))
        if baseline is not None:
            old.append(_run(baseline, name, args))
    med = statistics.median(r["s"] for r in new)
    line = f"{_label(name, args):<52} {_fmt(name, med)}"
    if old:
        old_med = statistics.median(r["s"] for r in old)
        line += f"   baseline {_fmt(name, old_med)}   x{old_med / med:5.1f} faster"
    if name.startswith("sim"):
        r = new[0]
        line += f"   [sim {r['sim_s']:.1f} s, converged={r['converged']}"
        if old:
            line += f", same trace as baseline: {old[0]['digest'] == r['digest']}"
        line += "]"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement")
    parser.add_argument("--sim-sizes", default="200,1000", help="comma-separated peer counts")
    parser.add_argument("--sim-repeats", type=int, default=3, help="runs per simulation")
    parser.add_argument("--sim-seconds", type=float, default=5.0, help="simulated window")
    parser.add_argument("--converge", action="store_true", help="simulate until converged")
    parser.add_argument("--baseline-rev", help="git revision to compare against")
    parser.add_argument("--only", help="comma-separated subset of measurement names")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.sim_seconds, args.converge)
        return
    names = [*MICRO, *(f"sim{n}" for n in args.sim_sizes.split(",") if n)]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    print(
        f"python {sys.version.split()[0]}, medians of {args.repeats} runs "
        f"({args.sim_repeats} per simulation)"
    )
    with tempfile.TemporaryDirectory(prefix="meshlite-baseline-") as tmp:
        baseline = _extract(args.baseline_rev, tmp) if args.baseline_rev else None
        if args.baseline_rev:
            print(f"baseline: meshlite at {args.baseline_rev}")
        for name in names:
            _measure(name, args, baseline)


if __name__ == "__main__":
    main()
