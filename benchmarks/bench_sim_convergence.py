"""How fast a simulated SWIM mesh converges after everyone joins at once, against log(N).

    python benchmarks/bench_sim_convergence.py [--sizes 100,300,1000] [--seeds 3]
        [--profile lan|local] [--spread-s 0] [--with-10k] [--json out.json]

For each size N and seed: N ``SwimCore``s start at t=0 (or spread over ``--spread-s``),
each joining through three peers started before it, on the simulator's default LAN
network (0.5-5 ms one-way, no loss).  Convergence = every peer sees every other alive
(checked every 0.1 simulated seconds).  Printed per size, medians over the seeds:

* *mass join*: simulated seconds until every peer sees every other alive, in probe and
  gossip rounds.  Every peer must learn N-1 pieces of news through 1,400-byte datagrams,
  so this is bandwidth-bound and grows faster than log(N);
* *one more join*: once settled, one new peer joins; rounds until every peer sees it.
  A single piece of news spreads infection-style in O(log N) rounds (Das et al. 2002,
  §4.1; memberlist retransmits each broadcast ``retransmit_mult * log10(N+1)`` times),
  so gossip rounds / log2(N) should stay roughly flat as N grows;
* real (wall-clock) seconds the mass join took to simulate, simulated events per real
  second, and datagrams sent per peer during the mass join.

10,000 peers is opt-in (``--with-10k``): every peer learns of every other, so the work
(and memory) grows as N^2 — expect hours and tens of GiB.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

from meshlite._core.config import SwimConfig
from meshlite.testing import SimCluster

POLL_S = 0.1


def one_run(n: int, seed: int, config: SwimConfig, spread_s: float) -> dict[str, float]:
    start = time.perf_counter()
    cluster = SimCluster(n, seed, config, join_spread_s=spread_s, record_events=False, trace=False)
    ok = cluster.run_until(cluster.converged, 600.0 + spread_s, poll_s=POLL_S)
    real_s = time.perf_counter() - start
    run = {
        "ok": float(ok),
        "sim_s": cluster.now - spread_s,  # from the last possible start
        "real_s": real_s,
        "events": float(cluster.sim.stats["events"]),
        "packets": float(cluster.network.stats["sent"]),
    }
    # One more peer joins a settled mesh: a single piece of news to disseminate.
    t0 = cluster.now
    newcomer = cluster.add_node()
    cluster.run_until(
        lambda: all(newcomer in cluster.node(m).alive for m in cluster.live()),
        120.0,
        poll_s=POLL_S / 4,
    )
    run["one_join_s"] = cluster.now - t0
    return run


def report(n: int, runs: list[dict[str, float]], config: SwimConfig) -> dict[str, float]:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    failed = sum(1 for r in runs if not r["ok"])
    sim_s, real_s, one_s = med("sim_s"), med("real_s"), med("one_join_s")
    log2n = math.log2(n)
    mass_rounds = sim_s / config.gossip_interval_s
    one_rounds = one_s / config.gossip_interval_s
    print(
        f"{n:>6} {len(runs):>5} | {sim_s:>7.2f} {sim_s / config.probe_interval_s:>6.1f} "
        f"{mass_rounds:>6.1f} {mass_rounds / log2n:>6.2f} | {one_s:>6.2f} {one_rounds:>6.1f} "
        f"{one_rounds / log2n:>6.2f} | {log2n:>5.2f} | {real_s:>8.1f} "
        f"{med('events') / real_s:>8.0f} {med('packets') / n:>6.0f}"
        + (f"   ({failed} runs did not converge in time)" if failed else "")
    )
    return {
        "n": n, "seeds": len(runs), "failed": failed, "mass_join_s": sim_s,
        "one_join_s": one_s, "one_join_rounds": one_rounds, "log2n": log2n, "wall_s": real_s,
        "gossip_interval_s": config.gossip_interval_s,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,300,1000", help="comma-separated peer counts")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per size (median)")
    parser.add_argument("--profile", choices=["lan", "local"], default="lan")
    parser.add_argument("--spread-s", type=float, default=0.0, help="stagger the starts")
    parser.add_argument("--with-10k", action="store_true", help="also 10,000 peers (slow)")
    parser.add_argument("--json", type=Path, help="also write the rows here (for plot_scale.py)")
    args = parser.parse_args()
    config = SwimConfig.lan() if args.profile == "lan" else SwimConfig.local()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.with_10k:
        sizes.append(10_000)
    print(
        f"profile={args.profile} probe_interval={config.probe_interval_s}s "
        f"gossip_interval={config.gossip_interval_s}s spread={args.spread_s}s "
        f"seeds={args.seeds} (medians)"
    )
    print(
        f"{'':>12} | {'mass join (from last start)':<28} | {'one more join':<20} |"
        f" {'':>5} | wall clock"
    )
    print(
        f"{'N':>6} {'seeds':>5} | {'sim_s':>7} {'probe':>6} {'gossip':>6} {'g/lg2N':>6} | "
        f"{'sim_s':>6} {'gossip':>6} {'g/lg2N':>6} | {'log2N':>5} | {'real_s':>8} "
        f"{'events/s':>8} {'pkts/N':>6}"
    )
    rows = []
    for n in sizes:
        runs = [one_run(n, seed, config, args.spread_s) for seed in range(args.seeds)]
        rows.append(report(n, runs, config))
    if args.json is not None:
        args.json.write_text(json.dumps({"profile": args.profile, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
