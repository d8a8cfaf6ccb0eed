"""The SWIM model (``swim_model.py``) against the real core, then at 10,000+ peers.

    python benchmarks/bench_swim_model.py [--validate-sizes 50,100,300,1000]
        [--sizes 1000,3000,10000,20000] [--seeds 20] [--core-seeds 3]
        [--core-seeds-large 1] [--large-n 1000] [--profile lan|local]
        [--json benchmarks/results/swim_model.json]

Three events in a settled mesh of N peers, each timed from the moment it happens until
every other peer knows (and the first one):

* *join*: the N-th peer joins through three running peers; until the other N - 1 see
  it alive;
* *catalog record*: one peer publishes a service (a catalog record, a SWIM user
  broadcast that every peer relays once as news); until the other N - 1 have it;
* *crash*: one peer is killed; until the other N - 1 declare it dead (first: the first
  peer to do so; also the first suspicion).

**Validation.**  At ``--validate-sizes`` the same three events run on the real core in
the deterministic simulator (``SimCluster``: N - 1 peers, converged, broadcast queues
drained, then the join, the record, the crash — each after the queues drained again),
and the model runs ``--seeds`` times.  Real-core times are exact (from the recorded
events), not polled.  Printed: medians, model / core and the relative difference of the
medians; the lock-step ablation (``slots_per_round=1``, news goes on only next round)
shows what ignoring the peers' tick phases costs.

**Scale.**  At ``--sizes`` only the model runs: medians of the three events in seconds
and in gossip rounds, and rounds / log2 N.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import swim_model as model

from meshlite._core.catalog import Record
from meshlite._core.config import SwimConfig
from meshlite._core.directory import Directory
from meshlite._core.events import MemberEvent, MemberEventKind, UserMessage, UserStateMerged
from meshlite.testing import SimCluster, SimNetwork

METRICS = ("join_all_s", "user_all_s", "detect_first_s", "detect_all_s")
EXTRA_METRICS = ("join_first_s", "user_first_s", "suspect_first_s")


# ----------------------------------------------------------------------------- real core


def _feed_all(c: SimCluster, name: str, result: tuple[Any, ...]) -> None:
    """Broadcast what a Directory call asks for: corrections and relays (SWIM leaves
    relaying a record to the catalog, as the agent's ``_services.py`` does)."""
    for part in result[1:]:
        for broadcast in part:
            c.sim.feed(name, broadcast)


def core_run(
    n: int, seed: int, config: SwimConfig, loss: float = 0.0, *, detect: bool = True
) -> dict[str, float]:
    """The three events on the real core (see the module docstring); without ``detect``,
    only the join and the record."""
    wall = time.perf_counter()
    dirs: dict[str, Directory] = {}

    def local_state(name: str) -> Callable[[], bytes]:
        dirs[name] = Directory(name, first_version=1)
        return dirs[name].local_state

    c = SimCluster(
        n - 1,
        seed,
        config,
        network=SimNetwork(seed, loss=loss),
        local_state=local_state,
        record_events=False,
        trace=False,
    )
    if not c.run_until(c.converged, 900.0, poll_s=0.5):
        raise RuntimeError(f"N={n} seed={seed}: the mesh did not converge")
    rng = random.Random(f"bench_swim_model:{n}:{seed}")
    # What to watch, and the peer whose own copy does not count (the record's owner
    # hears its record back).
    watch: dict[str, Any] = {"member": None, "kind": None, "payload": None, "source": None}
    seen: dict[str, float] = {}
    suspected: dict[str, float] = {}

    def on_member(viewer: str, ev: MemberEvent, now: float) -> None:
        if ev.member.name != watch["member"]:
            return
        if ev.kind is watch["kind"]:
            seen.setdefault(viewer, now)
        elif ev.kind is MemberEventKind.SUSPECT:
            suspected.setdefault(viewer, now)

    def on_effect(viewer: str, eff: object, now: float) -> None:
        d = dirs[viewer]
        if isinstance(eff, UserMessage):
            if eff.payload == watch["payload"] and viewer != watch["source"]:
                seen.setdefault(viewer, now)
            _feed_all(c, viewer, d.on_broadcast(eff.payload, now))
        elif isinstance(eff, UserStateMerged):
            _feed_all(c, viewer, d.on_state(eff.state, now, relay=not eff.join))

    c.add_member_hook(on_member)
    c.add_effect_hook(on_effect)

    def settle() -> None:
        quiet = lambda: all(c.node(x).core.pending_broadcasts() == 0 for x in c.live())  # noqa: E731
        # With loss, suspicions and refutations keep queues busy now and then: bounded.
        c.run_until(quiet, 600.0 if not loss else 30.0, poll_s=0.5)
        c.run_for(rng.uniform(0.0, config.probe_interval_s))  # any phase

    def wait(what: str, t0: float, timeout_s: float) -> dict[str, float]:
        ok = c.run_until(lambda: len(seen) >= n - 1, timeout_s, poll_s=0.05)
        if not ok:
            raise RuntimeError(f"N={n} seed={seed}: {what} reached {len(seen)} of {n - 1}")
        return {
            f"{what}_first_s": min(seen.values()) - t0,
            f"{what}_all_s": max(seen.values()) - t0,
        }

    out: dict[str, float] = {"n": n, "seed": seed}
    settle()
    seen.clear()
    watch.update(member=f"node-{n - 1}", kind=MemberEventKind.JOIN)
    t0 = c.now
    c.add_node()
    out.update(wait("join", t0, 120.0))

    settle()
    seen.clear()
    owner = rng.choice(c.live())
    record = Record(owner, "web-1", 0, "web", "10.0.0.1", 8080, ("v1",), {}, "passing")
    _names, broadcast = dirs[owner].publish(record, c.now)
    watch.update(member=None, kind=None, payload=broadcast.payload, source=owner)
    t0 = c.now
    c.sim.feed(owner, broadcast)
    out.update(wait("user", t0, 120.0))
    if not detect:
        out["wall_s"] = time.perf_counter() - wall
        return out

    settle()
    seen.clear()
    victim = rng.choice(c.live())
    watch.update(member=victim, kind=MemberEventKind.DEAD, payload=None, source=None)
    t0 = c.now
    c.kill(victim)
    _k, _min_s, max_s = model.suspicion_min_max(config, n)
    out.update(wait("detect", t0, max_s + 60.0))
    out["suspect_first_s"] = min(suspected.values()) - t0
    out["wall_s"] = time.perf_counter() - wall
    return out


# ----------------------------------------------------------------------------- the model


def model_runs(
    n: int, seeds: int, config: SwimConfig, loss: float = 0.0, *, detect: bool = True, **kw: Any
) -> list[dict[str, float]]:
    """The model's three events for seeds ``0 .. seeds - 1`` (detection is lossless)."""
    runs = []
    for seed in range(seeds):
        wall = time.perf_counter()
        join = model.run_join(n, seed, config, loss=loss, **kw)
        user = model.run_user(n, seed, config, loss=loss, **kw)
        run = {
            "n": n,
            "seed": seed,
            "join_first_s": join.first_s,
            "join_all_s": join.all_s,
            "user_first_s": user.first_s,
            "user_all_s": user.all_s,
        }
        if detect:
            det = model.run_detection(n, seed, config, **kw)
            run.update(
                detect_first_s=det.first_s,
                detect_all_s=det.all_s,
                suspect_first_s=det.extra["suspect_first_s"],
                min_suspicion_s=det.extra["min_suspicion_s"],
            )
        run["wall_s"] = time.perf_counter() - wall
        runs.append(run)
    return runs


def medians(runs: list[dict[str, float]], keys: tuple[str, ...]) -> dict[str, float]:
    """Medians (a run where the news never reached everyone counts as infinitely slow)."""
    return {k: statistics.median(r[k] for r in runs) for k in keys if k in runs[0]}


def missed(runs: list[dict[str, float]], key: str) -> int:
    """Runs where the broadcast died out before reaching everyone (the real core then
    relies on push/pull anti-entropy, which the model leaves out)."""
    return sum(1 for r in runs if math.isinf(r[key]))


def _finite(value: Any) -> Any:
    """JSON has no infinity: ``None`` for "never"."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def rel(a: float, b: float) -> float:
    return (a - b) / b if b else math.nan


# ----------------------------------------------------------------------------- main


def validate(
    sizes: list[int], args: argparse.Namespace, config: SwimConfig
) -> list[dict[str, Any]]:
    print(
        f"\nValidation: model ({args.seeds} seeds) / real core (SimCluster, "
        f"{args.core_seeds} seeds; {args.core_seeds_large} at N >= {args.large_n}), "
        f"medians in simulated seconds, (model - core) / core"
    )
    detect = not args.loss  # the model's detection is lossless
    shown = METRICS if detect else METRICS[:2]
    head = " | ".join(f"{k:^27}" for k in shown)
    print(f"{'N':>5} | {head} | lock-step join/user all | core wall s")
    rows = []
    for n in sizes:
        seeds = args.core_seeds_large if n >= args.large_n else args.core_seeds
        core = [core_run(n, 1000 + s, config, args.loss, detect=detect) for s in range(seeds)]
        runs = model_runs(n, args.seeds, config, args.loss, detect=detect)
        lock = model_runs(n, args.seeds, config, args.loss, detect=False, slots_per_round=1)
        keys = METRICS + EXTRA_METRICS
        mm, cm, lm = medians(runs, keys), medians(core, keys), medians(lock, keys)
        cells = " | ".join(
            f"{mm[k]:>6.2f} / {cm[k]:>6.2f} {rel(mm[k], cm[k]):>+7.0%}    " for k in shown
        )
        print(
            f"{n:>5} | {cells} | {lm['join_all_s']:>5.2f} / {lm['user_all_s']:>5.2f}"
            f"           | {statistics.fmean(r['wall_s'] for r in core):>8.1f}",
            flush=True,
        )
        rows.append(
            {
                "n": n,
                "model": mm,
                "core": cm,
                "lockstep_model": lm,
                "rel_diff": {k: rel(mm[k], cm[k]) for k in keys if k in cm},
                "core_runs": core,
                "model_seeds": args.seeds,
                "model_missed": {k: missed(runs, k) for k in ("join_all_s", "user_all_s")},
            }
        )
    return rows


def scale(sizes: list[int], args: argparse.Namespace, config: SwimConfig) -> list[dict[str, Any]]:
    g = config.gossip_interval_s
    print(f"\nModel at scale ({args.seeds} seeds, medians; rounds = gossip intervals of {g} s)")
    print(
        f"{'N':>6} | {'detect first':>12} {'all':>6} {'min susp':>8} | "
        f"{'join all s':>10} {'rounds':>6} {'r/lg2N':>6} | "
        f"{'record all s':>12} {'rounds':>6} {'r/lg2N':>6} | {'log2N':>5} | {'missed':>6} | "
        f"{'wall s/seed':>11}"
    )
    rows = []
    for n in sizes:
        runs = model_runs(n, args.seeds, config, args.loss)
        med = medians(runs, (*METRICS, *EXTRA_METRICS, "min_suspicion_s", "wall_s"))
        log2n = math.log2(n)
        jr, ur = med["join_all_s"] / g, med["user_all_s"] / g
        n_missed = missed(runs, "join_all_s") + missed(runs, "user_all_s")
        print(
            f"{n:>6} | {med['detect_first_s']:>12.2f} {med['detect_all_s']:>6.2f} "
            f"{med['min_suspicion_s']:>8.2f} | {med['join_all_s']:>10.2f} {jr:>6.2f} "
            f"{jr / log2n:>6.2f} | {med['user_all_s']:>12.2f} {ur:>6.2f} {ur / log2n:>6.2f} | "
            f"{log2n:>5.2f} | {n_missed:>6} | {med['wall_s']:>11.2f}",
            flush=True,
        )
        rows.append(
            {
                **med,
                "n": n,
                "seeds": args.seeds,
                "join_rounds": jr,
                "user_rounds": ur,
                "detect_all_rounds": med["detect_all_s"] / g,
                "log2n": log2n,
                "gossip_interval_s": g,
                "missed": n_missed,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--validate-sizes", default="50,100,300,1000")
    parser.add_argument("--sizes", default="1000,3000,10000,20000")
    parser.add_argument("--seeds", type=int, default=20, help="model seeds per size")
    parser.add_argument("--core-seeds", type=int, default=3, help="real-core seeds per size")
    parser.add_argument("--core-seeds-large", type=int, default=1)
    parser.add_argument("--large-n", type=int, default=1000, help="--core-seeds-large from here")
    parser.add_argument("--loss", type=float, default=0.0, help="datagram loss (dissemination)")
    parser.add_argument("--profile", choices=["lan", "local"], default="lan")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    config = SwimConfig.lan() if args.profile == "lan" else SwimConfig.local()
    print(
        f"profile={args.profile} probe_interval={config.probe_interval_s}s "
        f"gossip_interval={config.gossip_interval_s}s gossip_nodes={config.gossip_nodes} "
        f"retransmit_mult={config.retransmit_mult} suspicion_mult={config.suspicion_mult} "
        f"loss={args.loss}"
    )
    vsizes = [int(s) for s in args.validate_sizes.split(",") if s]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    validation = validate(vsizes, args, config) if vsizes else []
    rows = scale(sizes, args, config) if sizes else []
    if args.json is not None:
        payload = {
            "profile": args.profile,
            "loss": args.loss,
            "model_seeds": args.seeds,
            "validation": validation,
            "rows": rows,
        }
        args.json.write_text(json.dumps(_finite(payload), indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
