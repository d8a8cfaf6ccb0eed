"""The replicated KV store under faults, in the deterministic simulation: linearizable.

Each run (``meshlite.testing.raft_kv_sim``) has 3-5 clients doing get (ReadIndex), put,
CAS and delete on 2-4 keys against 3 or 5 servers whose state machines are real
``KVStore``s, under message loss, duplication, reordering, partitions, crashes and
restarts, with Raft's safety checkers after every step; at the end the whole history,
indeterminate operations included, must be linearizable.  A failure prints
``replay with MESHLITE_SEED=...``; ``MESHLITE_LONG=1`` adds thousands of seeds.
"""

from __future__ import annotations

import pytest
from replays import outputs_under_hash_seeds

from meshlite._core.kv import KVResult
from meshlite._core.raft import Entry, RaftConfig
from meshlite.errors import ConfigError
from meshlite.testing import env_seed, long_run, replay_hint, sim_seeds
from meshlite.testing.linearizability import Verdict, cas, check, read, write
from meshlite.testing.raft_kv_sim import (
    KVSim,
    KVSimResult,
    KVSimServer,
    LinearizabilityError,
    run_kv_seed,
)
from meshlite.testing.raft_sim import Faults


def run(seed: int, servers: int, **kwargs: object) -> KVSimResult:
    with replay_hint(seed):
        result = run_kv_seed(seed, servers, **kwargs)  # type: ignore[arg-type]
    ops = result.ops
    # Not vacuous: writes were acknowledged, reads answered, and the history was searched.
    assert result.raft.acknowledged > 0 and ops.reads_ok > 0 and ops.ok > 0, result
    assert result.checker_steps > 0, result
    return result


@pytest.mark.parametrize("seed", sim_seeds(200, long_count=200, base=0))
def test_three_servers(seed: int) -> None:
    run(seed, 3)


@pytest.mark.parametrize("seed", sim_seeds(100, long_count=100, base=100_000))
def test_five_servers(seed: int) -> None:
    run(seed, 5)


# Saving takes 1-30 ms of simulated time while the server keeps stepping (as with sqlite
# in a worker thread); no pre-vote or check-quorum; a network far worse than a LAN.
VARIANTS = {
    "slow_disk": {"faults": Faults(persist_s=(0.001, 0.03))},
    "classic_raft": {"config": RaftConfig(pre_vote=False, check_quorum=False)},
    "harsh_network": {"faults": Faults(loss=0.3, duplicate=0.1, reorder=0.3)},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("servers", [3, 5])
@pytest.mark.parametrize("seed", sim_seeds(8, long_count=8, base=200_000))
def test_variants(seed: int, servers: int, variant: str) -> None:
    run(seed, servers, **VARIANTS[variant])


LONG = pytest.mark.skipif(
    not long_run() or env_seed() is not None, reason="long profile: set MESHLITE_LONG=1"
)
CHUNK = 100  # seeds per long-profile test item: a failure names its seed anyway


@pytest.mark.slow
@pytest.mark.timeout(1800)
@LONG
@pytest.mark.parametrize(
    ("servers", "chunk"), [(3, c) for c in range(40)] + [(5, c) for c in range(20)]
)
def test_long_profile(servers: int, chunk: int) -> None:
    """4,000 seeds with 3 servers and 2,000 with 5, beyond the CI ones (MESHLITE_LONG=1)."""
    base = (1_000_000 if servers == 3 else 2_000_000) + chunk * CHUNK
    for seed in range(base, base + CHUNK):
        run(seed, servers)


def test_runs_cover_every_outcome() -> None:
    """The histories hold what the checker must reason about: indeterminate writes, CAS
    that swapped and CAS that did not, refusals, stores rebuilt from snapshots, and writes
    that shared a Raft entry (the leader's batches)."""
    results = [run(seed, servers) for seed in range(4) for servers in (3, 5)]
    assert sum(r.ops.indeterminate for r in results) > 0
    assert sum(r.ops.failed for r in results) > 0
    assert sum(r.ops.cas_ok for r in results) > 0
    assert sum(r.kv_restores for r in results) > 0
    assert sum(r.batched for r in results) > 0
    assert sum(r.raft.crashes for r in results) > 0
    for r in results:
        assert r.ops.invoked == r.ops.ok + r.ops.failed + r.ops.indeterminate
        assert 3 <= r.clients <= 5 and 2 <= r.keys <= 4


def test_same_seed_same_history_whatever_the_hash_seed() -> None:
    code = (
        "from meshlite.testing.raft_kv_sim import run_kv_seed;"
        "print([run_kv_seed(s, n, duration_s=4.0) for s, n in ((3, 3), (4, 5))])"
    )
    assert len(outputs_under_hash_seeds(code)) == 1
    first, again = KVSim(3, 3), KVSim(3, 3)
    assert first.run_kv(duration_s=4.0) == again.run_kv(duration_s=4.0)
    assert first.workload.history.operations() == again.workload.history.operations()
    assert run_kv_seed(3, 3, duration_s=4.0).history != run_kv_seed(4, 3, duration_s=4.0).history


def caught(flaw: str, servers: int, seeds: range) -> dict[int, str]:
    found = {}
    for seed in seeds:
        try:
            run_kv_seed(seed, servers, flaws=frozenset({flaw}))
        except LinearizabilityError as exc:
            found[seed] = str(exc)
    return found


def test_check_catches_reads_served_from_local_state() -> None:
    """A check that cannot fail proves nothing: gets served by whichever server the
    client reached, from its local store without ReadIndex, are caught."""
    found = caught("stale_reads", 3, range(10))
    assert len(found) >= 3, found
    assert all("is not linearizable; longest linearizable prefix" in f for f in found.values())


def test_check_catches_writes_acknowledged_before_commit() -> None:
    found = caught("early_acks", 5, range(10))
    assert len(found) >= 2, found
    seed = min(found)  # and a failing seed fails again, the same way
    with pytest.raises(LinearizabilityError) as again:
        run_kv_seed(seed, 5, flaws=frozenset({"early_acks"}))
    assert str(again.value) == found[seed]


class ForgetfulServer(KVSimServer):
    """s1's store silently skips every seventh entry, and every entry from index 28 on:
    Raft itself is fine.  (Skipping only every seventh could go unseen in a run whose
    skipped writes were all overwritten later: the stores then agree at the end.)"""

    def apply_entry(self, entry: Entry) -> KVResult | None:
        if self.name == "s1" and (entry.index % 7 == 0 or entry.index >= 28):
            return KVResult(entry.index)  # "done", but nothing changed
        return super().apply_entry(entry)


class ForgetfulSim(KVSim):
    server_class = ForgetfulServer


def test_diverging_stores_are_caught() -> None:
    """The digest chain proves every server applied the same entries; comparing the
    stores themselves at the end catches a state machine that went its own way."""
    found = []
    for seed in range(3):
        with pytest.raises(AssertionError) as failure:
            ForgetfulSim(seed, 3).run_kv(duration_s=4.0)
        found.append(str(failure.value))
    assert any("KV stores differ" in f for f in found), found


def test_unknown_flaws_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown flaws"):
        KVSim(0, 3, flaws=frozenset({"sloppy"}))


# ------------------------------------------- the checker's shortcut for unanswered writes


def test_many_unanswered_writes_nobody_saw_cost_little() -> None:
    """Faults leave writes without an answer; each may take effect at any time after its
    invocation, or never, so a plain search tries subsets of them (the shape below, cut
    down from a harsh-network run, needs over a million steps).  Values that no read saw
    and no CAS expected are left out first, which settles a legal history at once."""
    k = "k"
    history = [write(k, "seen", 0, None)]  # unanswered, but a later CAS expected it
    for i in range(16):
        if i % 3:
            history.append(write(k, ("lost", i), 1 + i, None))
        elif i % 2:
            history.append(write(k, None, 1 + i, None))  # an unanswered delete
        else:
            history.append(cas(k, None, ("lost", i), None, 1 + i, None))  # create-only
    history.append(cas(k, "seen", "next", True, 20, 21))
    result = check(history, max_steps=100_000)
    assert result.ok and result.steps < 1_000, result.explain()


def test_an_unanswered_write_can_still_explain_a_failed_cas() -> None:
    """Leaving the unseen writes out is only a first try: here the CAS failed because the
    unanswered write of 2 took effect, and only the full search finds that."""
    k = "k"
    legal = [write(k, 1, 0, 1), write(k, 2, 2, None), cas(k, 1, 3, False, 3, 4)]
    assert check(legal).ok
    assert not check([legal[0], legal[2]]).ok  # without that write: illegal


def test_unanswered_writes_do_not_hide_a_stale_read() -> None:
    k = "k"
    history = [write(k, 1, 0, 1), write(k, 2, 0.5, None), read(k, None, 2, 3)]
    assert check(history).verdict is Verdict.ILLEGAL
