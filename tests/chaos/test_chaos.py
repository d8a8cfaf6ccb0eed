"""The chaos suite CI runs: five namespaced hosts, every fault kind once, every checker.

Theory of operation
-------------------
One module-scoped run (``scenario.run``: 1.7-2.8 min measured on a 2-core machine,
most of it spent waiting for the mesh to be whole again after partitions) builds five
hosts on a private bridge (``netns.lan``) — three ``meshlite agent --server`` and two
client agents, ``lan`` profile — starts the workloads (KV puts/reads/CAS from every
host, three lock contenders, observers), then injects, one at a time and each healed
before the next: a partition of the leader, of a minority (a server and a client, the
lock holder among them when it is one), of a majority of the hosts that holds only the
old leader, an asymmetric partition (the leader drops one host's packets), 30 % packet
loss on one host, delay and reordering (netem's, or where the kernel has no
``sch_netem`` the same spec in user space through NFQUEUE: ``nfq_delay.py``; skipped,
with the reason for each, only where neither works), a SIGSTOP of the host holding
the lock (agent and worker: a holder that still believes it holds when it wakes), and a
SIGKILL of the leader followed by a restart from its data dir.  Every namespace and
process is gone before the tests below judge what was recorded, one checker each
(``checkers.py`` says exactly what each one checks; ``test_checkers.py`` shows each
catching a forged violation).

``MESHLITE_CHAOS_SEED`` picks the seed (targets and workload choices; timing is real,
so a seed does not replay a run exactly — the summary and the agents' logs do);
``MESHLITE_CHAOS_DELAY`` (``auto``, ``netem`` or ``nfqueue``) forces a delay mechanism.
Needs root, iproute2 and iptables: skips with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import random

import pytest
from netns import NetnsUnavailableError

from .faults import KINDS, NETEM_KINDS, NETEM_SPEC, ChaosUnavailableError
from .scenario import Plan, Recording, Verdict, evaluate, run

pytestmark = [pytest.mark.netns, pytest.mark.timeout(600)]

SEED = int(os.environ.get("MESHLITE_CHAOS_SEED", "20261127"))
DELAY_VIA = os.environ.get("MESHLITE_CHAOS_DELAY", "auto")
HOSTS = 5
# Long enough for the lan profile to declare a cut-off or paused host dead (~5-6 s), so
# that sessions are invalidated and locks change hands; the kinds that should cost no
# one anything (asymmetric, loss, netem) are shorter, a crash is a restart after 5 s.
DURATION_S = {"asymmetric": 6.0, "loss": 6.0, "delay": 5.0, "reorder": 5.0, "crash": 5.0}
FAULT_S = 8.0
# Where each fault is aimed (scenario.make_fault).
AIM = {
    "partition_one": "leader",
    "partition_minority": "holder",
    "partition_majority": "leader",
    "asymmetric": "leader",
    "loss": "random",
    "delay": "leader",
    "reorder": "random",
    "pause": "holder",
    "crash": "leader",
}
# After a partition in which each side declared the other dead, nobody is left to tell
# the dead that they are dead: memberlist's answer is a reconnect (every 30 s on lan) or
# the reap (gossip_to_the_dead_s, 30 s) and a rejoin (its services come back with it:
# push/pull news is relayed).  Measured: up to ~50 s; the bound adds room.
RECONVERGE_BOUND_S = 90.0


def ci_plan() -> Plan:
    return Plan(
        kinds=list(KINDS),
        duration_s=lambda kind, rng: DURATION_S.get(kind, FAULT_S),
        gap_s=lambda rng: 0.5,
        reconverge_timeout_s=RECONVERGE_BOUND_S,
        stable_s=4.0,
        aim=lambda kind, rng: AIM[kind],
        warmup_s=3.0,
        cooldown_s=2.0,
    )


@pytest.fixture(scope="module")
def chaos() -> tuple[Recording, Verdict]:
    try:
        rec = run(HOSTS, SEED, ci_plan(), log=print, delay_via=DELAY_VIA)
    except (NetnsUnavailableError, ChaosUnavailableError) as exc:
        pytest.skip(str(exc))
    verdict = evaluate(rec, plan_bound_s=RECONVERGE_BOUND_S)
    print(f"chaos seed {SEED}: " + json.dumps(verdict.summary, indent=1))
    return rec, verdict


def test_every_fault_kind_was_injected_and_healed(chaos: tuple[Recording, Verdict]) -> None:
    rec, verdict = chaos
    injected = [f.window.kind for f in rec.faults]
    assert injected == [k for k in KINDS if k not in rec.skipped], verdict.summary
    assert rec.errors == [], rec.errors


def test_delay_and_reordering(chaos: tuple[Recording, Verdict]) -> None:
    """Injected by netem, or in user space through NFQUEUE where the kernel has no
    ``sch_netem``; each window says which, with the netem spec it ran."""
    rec, _ = chaos
    skipped = {k: v for k, v in rec.skipped.items() if k in NETEM_KINDS}
    if skipped:
        pytest.skip(f"delay/reorder not injected: {skipped['delay']}")
    assert rec.delay_via in ("netem", "nfqueue")
    windows = {f.window.kind: f.window for f in rec.faults if f.window.kind in NETEM_KINDS}
    assert set(windows) == set(NETEM_KINDS)
    for kind, w in windows.items():
        assert f"{rec.delay_via} " in w.detail and " ".join(NETEM_SPEC[kind]) in w.detail
        if rec.delay_via == "nfqueue":  # the injector saw the host's traffic and held it
            assert ": 0 packets" not in w.detail and "None packets" not in w.detail, w.detail


def test_writes_cas_and_consistent_reads_are_linearizable(
    chaos: tuple[Recording, Verdict],
) -> None:
    _, verdict = chaos
    kv = verdict.summary["kv"]
    assert kv["strict_linearizable"] == "ok", kv["strict_explain"]
    assert kv["keys"] >= 9 and kv["operations"] >= 500, kv  # the workload ran throughout


def test_no_acknowledged_write_is_lost(chaos: tuple[Recording, Verdict]) -> None:
    _, verdict = chaos
    kv = verdict.summary["kv"]
    assert kv["acknowledged_writes_lost"] == 0, kv["lost"]
    assert kv["by_status"].get("read:final:ok", 0) == kv["keys"]  # every key was read back


def test_default_reads_are_at_most_as_stale_as_a_paused_leader(
    chaos: tuple[Recording, Verdict],
) -> None:
    """Consul's default mode: the leader answers from its state without a quorum round.
    A leader cut off or paused keeps answering until it notices it was deposed, so a
    default read may be stale by up to the pause (a request queued at a SIGSTOPped
    leader is answered when it wakes) or about two election timeouts (check-quorum)."""
    rec, verdict = chaos
    kv = verdict.summary["kv"]
    paused = [f.window.end - f.window.start for f in rec.faults if f.window.kind == "pause"]
    bound_s = max(paused, default=0.0) + 2.0
    staleness = kv["default_read_staleness_s"]
    assert staleness is not None and staleness <= bound_s, kv["with_default_reads_per_key"]


def test_lock_holders_never_act_at_once(chaos: tuple[Recording, Verdict]) -> None:
    rec, verdict = chaos
    locks = verdict.summary["locks"]
    assert locks["overlapping_holds"] == 0 and locks["fencing_violations"] == 0, locks
    assert locks["holds"] >= 10, locks
    assert len({h.who for h in rec.holds if h.acts}) >= 2, locks  # it changed hands


def test_no_two_servers_lead_in_one_term(chaos: tuple[Recording, Verdict]) -> None:
    _, verdict = chaos
    assert verdict.summary["terms_with_two_leaders"] == 0, verdict.problems
    assert verdict.summary["leader_terms"] >= 2, "leadership never changed: faults did not bite"


def test_no_healthy_reachable_host_is_declared_dead(chaos: tuple[Recording, Verdict]) -> None:
    rec, verdict = chaos
    assert verdict.summary["false_deaths"] == 0, verdict.summary["false_death_details"]
    assert rec.deaths, "no fault made anyone dead: the faults did not bite"


def test_services_stay_discoverable_where_reachable(chaos: tuple[Recording, Verdict]) -> None:
    _, verdict = chaos
    assert verdict.summary["discovery_misses"] == 0, verdict.summary["discovery_miss_details"]
    assert verdict.summary["discovery_polls"] >= 500


def test_the_mesh_is_whole_again_after_every_heal(chaos: tuple[Recording, Verdict]) -> None:
    _, verdict = chaos
    reconverge = verdict.summary["reconverge_s"]
    assert reconverge["exceeded_bound"] == 0, verdict.summary["faults"]
    assert reconverge["max"] is not None and reconverge["max"] <= RECONVERGE_BOUND_S


def test_the_plan_covers_every_kind() -> None:
    """The CI plan aims every kind somewhere, and draws from all of them (no namespaces)."""
    plan = ci_plan()
    assert set(plan.kinds) == set(KINDS) == set(AIM)
    rng = random.Random(0)
    assert plan.duration_s("crash", rng) < plan.duration_s("partition_one", rng)
