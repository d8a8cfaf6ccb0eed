"""A protocol-level model of meshlite's SWIM + Lifeguard, for meshes of 10,000+ peers.

Theory of operation
-------------------
The simulator (``meshlite.testing.SimCluster``) runs the real sans-I/O core, and every
simulated peer holds a member entry for every other: N^2 Python objects, 10^8 at 10,000
peers.  This model keeps only what matters for *one* piece of news in a converged, quiet
mesh: a handful of numpy vectors of length N (a phase, a queued message and its
transmits left, a receive time, and for failure detection a suspicion timer with its
k + 1 confirmer slots).  Memory is O(N) per quantity, never N^2, and the same rules as the
core are applied, each cited below by file and function (``meshlite/_core/...``).

Time.  The outer step is the gossip interval; within it, time advances in slots of
``slot_s`` (5 ms by default = the simulator's largest one-way LAN delay,
``testing/_network.py: DEFAULT_DELAY_S`` = 0.5-5 ms).  Every peer ticks at its own phase:
its gossip tick at a uniform random offset in the gossip interval (``gossip.py:
Gossip.__init__``, ``next_gossip_s = now + uniform(0, gossip_interval)``, then every
interval), its probe at a uniform offset in the probe interval (``probe.py:
Prober.__init__``).  A datagram sent in one slot is delivered at the start of the next,
so news received mid-round goes out again at the receiver's own next tick, which is
usually *in the same round*.  (The textbook lock-step model, ``slots_per_round=1``, sends
news on only at the next round and predicts 1.5-2x the core's dissemination times: the
phases matter; the latency, 0.5-5 ms against a 200 ms round, hardly does.)

Dissemination (``broadcasts.py``, ``outbox.py``, ``gossip.py``):

* A peer queues a broadcast when it is news (``gossip.py: _settle`` for member news,
  the catalog's relay for a record: ``catalog.py`` docstring) and sends it at most
  ``retransmit_limit = retransmit_mult * ceil(log10(N + 1))`` times
  (``broadcasts.py: retransmit_limit``, counted per datagram in ``get_broadcasts``).
* Every gossip tick, a peer with something queued sends a datagram to each of
  ``gossip_nodes`` distinct random members — alive, suspect or recently dead, never
  itself (``gossip.py: Gossip.tick``, ``members.py: random_entries``); it stops early
  when the broadcast reaches its limit (``tick`` returns when ``out.gossip`` sends
  nothing).
* Every datagram piggybacks the queue (``outbox.py: Outbox.send``): each probe's ping,
  the target's ack (built before the target reads the ping's piggyback: the ping comes
  first in the compound packet, ``swim.py: _on_packet``), indirect pings and nacks.
  Each carrying datagram is one transmission.
* A joiner's own alive shares its queue with the N - 1 alives it just learned by
  push/pull (``gossip.py: merge`` queues each), so it rides only about
  ``msgs_per_datagram / N`` of the joiner's datagrams; the three seeds it joined through
  (``testing/_swim.py: DEFAULT_JOIN_SEEDS``) hold it alone.  A catalog record starts at
  its owner alone.
* ``loss``: every datagram that carries news is dropped with this probability (and a
  lost ping gets no ack).  Only for dissemination: the model does not follow the false
  suspicions and refutations that loss causes among live peers.

Failure detection of one crashed peer v (``probe.py``, ``suspicion.py``, ``gossip.py``):

* Each live peer probes one member per probe interval, walking a shuffled list that is
  reshuffled at each wrap-around (``probe.py: _next_target, _reshuffle``): v comes once
  per cycle of M = N - 1 probes at a uniform random position.  At the crash each prober
  is at a uniform position of its cycle, and v is ahead of it or, if already passed,
  at a uniform position of the next cycle.  A peer that already sees v dead skips it.
* A probe of v: the ping is lost; after ``probe_timeout_s`` the prober asks
  ``indirect_checks`` random alive members (not v) to ping v (``_go_indirect``); they
  nack after 0.8 x the timeout (``NACK_AT_TIMEOUT_FRACTION``), which keeps the prober's
  Lifeguard health at 0 (``awareness.py: failed_probe_delta`` = 3 - 3): intervals stay
  unscaled.  At the end of the probe interval the prober raises ``Suspect(v, itself)``
  (``probe.py: _finish``, ``swim.py: _on_timer``).
* A peer's first ``Suspect`` about v starts its timer at ``max_s`` with the sender as
  accuser; each later one from a new sender, while fewer than ``k`` have confirmed, is a
  confirmation: the deadline becomes ``start + timeout(n)`` with Lifeguard's
  ``max(min_s, max_s - log(n + 1) / log(k + 1) * (max_s - min_s))`` floored to ms
  (``suspicion.py: remaining_suspicion_s``), ``k = suspicion_mult - 2``,
  ``min_s = suspicion_mult * max(1, log10 N) * probe_interval_s`` (truncated to
  thousandths), ``max_s = suspicion_max_timeout_mult * min_s`` (``suspicion_params``).
  A new timer or a new confirmation is re-gossiped (``gossip.py: on_suspect``), under
  v's queue key, so it replaces whatever about v was queued (``broadcasts.py: queue``);
  a duplicate or a confirmation beyond ``k`` is not.
* At its deadline a peer declares v dead and gossips ``Dead`` (``expire_suspicions``);
  a ``Dead`` received by a peer that does not see v dead yet is applied and re-gossiped
  (``on_dead``, ``members.py: apply_dead``).  Gossip and piggyback reach v too (it is
  a suspect/recently dead member): those datagrams are lost.

Not modelled, because it does not act in the seconds measured: push/pull anti-entropy
(every 30 s x ``push_pull_scale``: 90 s at 100 peers), reaping (30 s), reconnects, and
the TCP fallback ping (a stream to a crashed peer just times out at the probe deadline).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from meshlite._core.config import SwimConfig

__all__ = [
    "NEVER",
    "ModelResult",
    "msgs_per_datagram",
    "retransmit_limit",
    "run_detection",
    "run_join",
    "run_user",
    "suspicion_min_max",
    "suspicion_timeout",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

NEVER = math.inf
DEFAULT_SLOT_S = 0.005  # the simulator's largest one-way LAN delay (testing/_network.py)
# probe.py NACK_AT_TIMEOUT_FRACTION: a relay nacks at 0.8 x its probe timeout.
NACK_AT_TIMEOUT_FRACTION = 0.8
# testing/_swim.py DEFAULT_JOIN_SEEDS: a newcomer joins through three running peers.
JOIN_SEEDS = 3
# An alive message is 24-29 bytes (wire.encode_message) and a datagram has ~1,386 bytes
# for messages (outbox.message_budget_bytes at udp_buffer_bytes = 1,400): ~50 per datagram.
DEFAULT_MSGS_PER_DATAGRAM = 50
_NONE = -1  # nothing queued


# ----------------------------------------------------------------------------- formulas


def retransmit_limit(retransmit_mult: int, n_members: int) -> int:
    """``broadcasts.py: retransmit_limit``: ``mult * ceil(log10(n + 1))``."""
    return retransmit_mult * math.ceil(math.log10(max(n_members, 0) + 1))


def suspicion_min_max(config: SwimConfig, n_members: int) -> tuple[int, float, float]:
    """``suspicion.py: suspicion_params``: ``(k, min_s, max_s)`` for ``n_members``."""
    k = config.suspicion_mult - 2
    if n_members - 2 < k:
        k = 0
    scale = max(1.0, math.log10(max(1.0, float(n_members))))
    min_s = config.suspicion_mult * (math.floor(scale * 1000.0) / 1000.0)
    min_s *= config.probe_interval_s
    return max(k, 0), min_s, config.suspicion_max_timeout_mult * min_s


def suspicion_timeout(n_confirmations: IntArray, k: int, min_s: float, max_s: float) -> FloatArray:
    """``suspicion.py: remaining_suspicion_s`` + elapsed: the total timeout after ``n``
    confirmations (vectorised; floored to whole ms, never below ``min_s``)."""
    n = np.asarray(n_confirmations, dtype=np.float64)
    if k < 1:
        return np.full(n.shape, min_s)
    frac = np.log(n + 1.0) / math.log(k + 1.0)
    raw = max_s - frac * (max_s - min_s)
    return np.maximum(np.floor(1000.0 * raw) / 1000.0, min_s)


def msgs_per_datagram(alive_bytes: int = 27, budget_bytes: int = 1386) -> int:
    """How many alive messages fill one datagram's message budget."""
    return max(1, budget_bytes // alive_bytes)


# ----------------------------------------------------------------------------- results


@dataclass
class ModelResult:
    """One model run.  Times are seconds after the event (join, publish, crash)."""

    scenario: str
    n: int
    seed: int
    first_s: float  # the first peer (other than the source) with the news / seeing v dead
    all_s: float  # the last one (NEVER if someone never got it)
    reached: int  # peers that got it, out of ``targets``
    targets: int
    datagrams: int  # datagrams that carried the news (including lost ones)
    rounds_all: float = 0.0  # all_s in gossip intervals
    extra: dict[str, float] = field(default_factory=dict)
    times: FloatArray | None = None  # per peer (only with keep_times=True)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("times", "extra")}
        d.update(self.extra)
        return d


# ----------------------------------------------------------------------------- the mesh


class _Mesh:
    """Phases, the per-peer queue slot for the one broadcast, sending and delivery."""

    def __init__(
        self,
        n: int,
        config: SwimConfig,
        seed: int,
        *,
        slot_s: float,
        slots_per_round: int | None,
        loss: float,
        n_members: int,
    ) -> None:
        if n < 4:
            raise ValueError(f"the model needs at least 4 peers, got {n}")
        if not 0.0 <= loss < 1.0:
            raise ValueError(f"loss must be in [0, 1), got {loss}")
        self.n = n
        self.cfg = config
        self.rng = np.random.default_rng(seed)
        self.loss = loss
        if slots_per_round is not None:  # lock-step (1) or coarser phase resolution
            slot_s = config.gossip_interval_s / slots_per_round
        self.slot_s = slot_s
        self.k_gossip = self._steps(config.gossip_interval_s)
        self.k_probe = self._steps(config.probe_interval_s)
        # Sub-interval delays, rounded to whole slots (exact at the default 5 ms slot).
        timeout_s = min(config.probe_timeout_s, config.probe_interval_s)
        self.k_timeout = max(1, round(timeout_s / slot_s))
        self.k_nack = max(1, round(NACK_AT_TIMEOUT_FRACTION * config.probe_timeout_s / slot_s))
        self.limit = retransmit_limit(config.retransmit_mult, n_members)
        self.running: BoolArray = np.ones(n, dtype=bool)
        gphase = self.rng.integers(0, self.k_gossip, size=n)
        pphase = self.rng.integers(0, self.k_probe, size=n)
        self.pphase: IntArray = pphase
        self.gossip_groups = _groups(gphase, self.k_gossip)
        self.probe_groups = _groups(pphase, self.k_probe)
        self.qmsg: IntArray = np.full(n, _NONE, dtype=np.int64)
        self.qleft: IntArray = np.zeros(n, dtype=np.int64)
        # A peer whose queue holds other news too (the joiner): the chance that the
        # broadcast fits a given datagram of its.
        self.carry_p: FloatArray = np.ones(n)
        self.out_dst: list[IntArray] = []
        self.out_msg: list[IntArray] = []
        self.datagrams = 0
        self.dead: int | None = None  # the crashed peer, if any

    def _steps(self, seconds: float) -> int:
        steps = seconds / self.slot_s
        if abs(steps - round(steps)) > 1e-6 or round(steps) < 1:
            raise ValueError(f"{seconds} s is not a whole number of {self.slot_s} s slots")
        return round(steps)

    # ------------------------------------------------------------------ queue

    def queue(self, peers: IntArray, msgs: IntArray) -> None:
        """Queue news (``broadcasts.py: queue``: replaces what was queued under the key)."""
        self.qmsg[peers] = msgs
        self.qleft[peers] = self.limit

    def take(self, peers: IntArray) -> tuple[IntArray, IntArray]:
        """One datagram from each of ``peers`` (repeats allowed): which carry the news, and
        what.  Each carrying datagram is one transmission (``get_broadcasts``)."""
        if peers.size == 0:
            return peers, peers
        left = self.qleft[peers] > 0
        carry_p = self.carry_p[peers]
        partial = left & (carry_p < 1.0)
        if partial.any():
            left[partial] = self.rng.random(int(partial.sum())) < carry_p[partial]
        carrying = np.flatnonzero(left)
        if carrying.size == 0:
            return carrying, carrying
        src = peers[carrying]
        # Repeated sources take one transmission per datagram, in order.
        uniq, counts = np.unique(src, return_counts=True)
        if uniq.size == src.size:
            self.qleft[src] -= 1
            return carrying, self.qmsg[src]
        ok = np.ones(src.size, dtype=bool)
        for peer in uniq[counts > 1]:
            where = np.flatnonzero(src == peer)
            ok[where[int(self.qleft[peer]) :]] = False
        carrying, src = carrying[ok], src[ok]
        np.subtract.at(self.qleft, src, 1)
        return carrying, self.qmsg[src]

    def send(self, dst: IntArray, msgs: IntArray) -> None:
        """Datagrams carrying ``msgs`` to ``dst``, delivered next slot (or lost)."""
        if dst.size == 0:
            return
        self.datagrams += int(dst.size)
        keep = self.running[dst]
        if self.loss:
            keep &= self.rng.random(dst.size) >= self.loss
        self.out_dst.append(dst[keep])
        self.out_msg.append(msgs[keep])

    def drain(self) -> tuple[IntArray, IntArray]:
        if not self.out_dst:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        dst, msg = np.concatenate(self.out_dst), np.concatenate(self.out_msg)
        self.out_dst, self.out_msg = [], []
        return dst, msg

    # ------------------------------------------------------------------ random picks

    def others(self, src: IntArray, k: int, *, skip_dead: bool) -> IntArray:
        """``k`` distinct uniform peers per row, never the row's own ``src`` (nor the
        crashed peer with ``skip_dead``): ``members.py: random_entries``."""
        excl = self.dead if skip_dead else None
        pool = self.n - 1 - (excl is not None)
        if k > pool:
            raise ValueError("not enough peers to pick from")
        out = self._draw(src, k, pool, excl)
        while k > 1:
            srt = np.sort(out, axis=1)
            dup = (srt[:, 1:] == srt[:, :-1]).any(axis=1)
            if not dup.any():
                break
            rows = np.flatnonzero(dup)
            out[rows] = self._draw(src[rows], k, pool, excl)
        return out

    def _draw(self, src: IntArray, k: int, pool: int, excl: int | None) -> IntArray:
        out = self.rng.integers(0, pool, size=(src.size, k))
        if excl is None:
            return out + (out >= src[:, None])
        lo = np.minimum(src, excl)[:, None]
        hi = np.maximum(src, excl)[:, None]
        out = out + (out >= lo)
        return out + (out >= hi)

    # ------------------------------------------------------------------ traffic

    def gossip_tick(self, step: int) -> None:
        """``gossip.py: Gossip.tick`` for the peers whose tick falls in this slot."""
        group = self.gossip_groups[step % self.k_gossip]
        holders = group[(self.qleft[group] > 0) & self.running[group]]
        if holders.size == 0:
            return
        targets = self.others(holders, self.cfg.gossip_nodes, skip_dead=False)
        for col in range(self.cfg.gossip_nodes):
            carrying, msgs = self.take(holders)
            self.send(targets[carrying, col], msgs)
            # The tick stops once the queue is empty (``out.gossip`` sent nothing); the
            # joiner's backlog outlasts its own alive, so it goes on while that has
            # transmissions left, whether or not this datagram had room for it.
            more = self.qleft[holders] > 0
            holders, targets = holders[more], targets[more]
            if holders.size == 0:
                return

    def exchange(self, probers: IntArray, targets: IntArray) -> None:
        """Ping ``targets`` and get their acks: the piggyback both ways."""
        if probers.size == 0:
            return
        busy = (self.qleft[probers] > 0) | (self.qleft[targets] > 0)
        probers, targets = probers[busy], targets[busy]
        if probers.size == 0:
            return
        # The ack is built before the target reads the ping's piggyback.
        acking = np.ones(probers.size, dtype=bool)
        if self.loss:
            acking = self.rng.random(probers.size) >= self.loss  # the ping arrived
        a_carry, a_msgs = self.take(targets[acking])
        p_carry, p_msgs = self.take(probers)
        ping_dst, ping_msgs = targets[p_carry], p_msgs
        arrived = acking[p_carry]
        self.datagrams += int(ping_dst.size)
        self.out_dst.append(ping_dst[arrived])
        self.out_msg.append(ping_msgs[arrived])
        self.send(probers[acking][a_carry], a_msgs)


def _groups(phase: IntArray, k: int) -> list[IntArray]:
    order = np.argsort(phase, kind="stable")
    bounds = np.searchsorted(phase[order], np.arange(k + 1))
    return [order[bounds[i] : bounds[i + 1]] for i in range(k)]


# ----------------------------------------------------------------------------- dissemination


def _disseminate(
    mesh: _Mesh,
    has: BoolArray,
    queue_at: dict[int, IntArray],
    receivers: BoolArray,
    *,
    horizon_s: float,
) -> FloatArray:
    """Spread message 0 until every receiver has it; per-peer receive times.

    ``has``: who knows it at the start (and ignores it when it comes back: the joiner's
    own alive, ``members.py: _alive_about_us``; the owner's record, ``catalog.py:
    apply``).  ``queue_at``: step -> peers that start gossiping it then.
    """
    got = np.where(has, 0.0, NEVER)
    max_step = int(horizon_s / mesh.slot_s)
    remaining = int((receivers & ~has).sum())
    last_queue = max(queue_at, default=0)
    for step in range(max_step):
        t = step * mesh.slot_s
        dst, _ = mesh.drain()
        if dst.size:
            fresh = np.unique(dst[~has[dst]])
            if fresh.size:
                has[fresh] = True
                got[fresh] = t
                mesh.queue(fresh, np.zeros(fresh.size, dtype=np.int64))
                remaining -= int(receivers[fresh].sum())
        start = queue_at.get(step)
        if start is not None:
            mesh.queue(start, np.zeros(start.size, dtype=np.int64))
        if remaining <= 0:
            break
        group = mesh.probe_groups[step % mesh.k_probe]
        if group.size:
            mesh.exchange(group, mesh.others(group, 1, skip_dead=False)[:, 0])
        mesh.gossip_tick(step)
        if step >= last_queue and not mesh.out_dst and not (mesh.qleft > 0).any():
            break  # the broadcast died out before reaching everyone
    return got


def _dissemination_result(
    scenario: str,
    mesh: _Mesh,
    seed: int,
    got: FloatArray,
    receivers: BoolArray,
    keep_times: bool,
) -> ModelResult:
    times = got[receivers]
    reached = int(np.isfinite(times).sum())
    all_s = float(times.max()) if reached == times.size else NEVER
    return ModelResult(
        scenario,
        mesh.n,
        seed,
        first_s=float(times.min()),
        all_s=all_s,
        reached=reached,
        targets=int(times.size),
        datagrams=mesh.datagrams,
        rounds_all=all_s / mesh.cfg.gossip_interval_s,
        times=got if keep_times else None,
    )


def run_join(
    n: int,
    seed: int,
    config: SwimConfig | None = None,
    *,
    loss: float = 0.0,
    slot_s: float = DEFAULT_SLOT_S,
    slots_per_round: int | None = None,
    msgs_per_dgram: int = DEFAULT_MSGS_PER_DATAGRAM,
    horizon_s: float = 120.0,
    keep_times: bool = False,
) -> ModelResult:
    """The N-th peer joins a settled mesh of N - 1 through three seeds: until every one
    of the N - 1 sees it alive.

    ``swim.py: _join`` pushes the joiner's state to the seeds, which queue its alive on
    arrival; the joiner gossips once their reply (its member table) is back, a slot
    later, its own alive competing with the N - 1 alives it learned.
    """
    cfg = config if config is not None else SwimConfig.lan()
    mesh = _Mesh(
        n, cfg, seed, slot_s=slot_s, slots_per_round=slots_per_round, loss=loss, n_members=n
    )
    joiner = n - 1
    seeds = mesh.rng.choice(n - 1, size=JOIN_SEEDS, replace=False).astype(np.int64)
    mesh.carry_p[joiner] = min(1.0, msgs_per_dgram / n)
    receivers = np.ones(n, dtype=bool)
    receivers[joiner] = False
    has = ~receivers
    # The seeds take the joiner's push/pull at once (step 0, a few ms after the join);
    # the joiner gossips once their reply is back (step 1; lock-step: the first round).
    mesh.out_dst.append(seeds)
    mesh.out_msg.append(np.zeros(seeds.size, dtype=np.int64))
    later = 0 if mesh.slot_s >= cfg.gossip_interval_s else 1
    queue_at = {later: np.array([joiner], dtype=np.int64)}
    got = _disseminate(mesh, has, queue_at, receivers, horizon_s=horizon_s)
    return _dissemination_result("join", mesh, seed, got, receivers, keep_times)


def run_user(
    n: int,
    seed: int,
    config: SwimConfig | None = None,
    *,
    loss: float = 0.0,
    slot_s: float = DEFAULT_SLOT_S,
    slots_per_round: int | None = None,
    horizon_s: float = 120.0,
    keep_times: bool = False,
) -> ModelResult:
    """One peer publishes a catalog record (a SWIM user broadcast, relayed by every peer
    that finds it news): until the other N - 1 have it."""
    cfg = config if config is not None else SwimConfig.lan()
    mesh = _Mesh(
        n, cfg, seed, slot_s=slot_s, slots_per_round=slots_per_round, loss=loss, n_members=n
    )
    origin = int(mesh.rng.integers(0, n))
    receivers = np.ones(n, dtype=bool)
    receivers[origin] = False
    queue_at = {0: np.array([origin], dtype=np.int64)}
    got = _disseminate(mesh, ~receivers, queue_at, receivers, horizon_s=horizon_s)
    return _dissemination_result("user", mesh, seed, got, receivers, keep_times)


# ----------------------------------------------------------------------------- detection


class _Detection:
    """Failure detection of one crashed peer (index 0) by the other N - 1."""

    def __init__(self, mesh: _Mesh) -> None:
        n = mesh.n
        self.mesh = mesh
        self.victim = 0
        mesh.dead = self.victim
        mesh.running[self.victim] = False
        self.dead_msg = n  # message ids: a sender's index = Suspect from it; n = Dead
        self.k, self.min_s, self.max_s = suspicion_min_max(mesh.cfg, n)
        self.t_start = np.full(n, NEVER)
        self.deadline = np.full(n, NEVER)
        self.dead_at = np.full(n, NEVER)
        self.dead_at[self.victim] = 0.0
        self.n_conf = np.zeros(n, dtype=np.int64)
        self.senders = np.full((n, self.k + 1), -1, dtype=np.int64)
        self.events: defaultdict[int, list[tuple[str, IntArray]]] = defaultdict(list)
        self._hit_schedule()

    def _hit_schedule(self) -> None:
        """When each prober's walk reaches the victim (``probe.py: _next_target``)."""
        mesh = self.mesh
        n = mesh.n
        self.cycle = n - 1  # members other than itself, alive or suspect at the shuffle
        at = mesh.rng.integers(0, self.cycle, size=n)  # the position probed next
        pos = mesh.rng.integers(0, self.cycle, size=n)  # the victim's, this cycle
        passed = pos < at
        later = mesh.rng.integers(0, self.cycle, size=n)  # its position next cycle
        ticks = np.where(passed, self.cycle - at + later, pos - at)
        self.pos = np.where(passed, later, pos)
        self.hit_step = mesh.pphase + ticks * mesh.k_probe
        self.hit_step[self.victim] = np.iinfo(np.int64).max

    # ------------------------------------------------------------------ receiving

    def receive(self, dst: IntArray, msg: IntArray, t: float) -> None:
        dead = msg == self.dead_msg
        if dead.any():
            d = np.unique(dst[dead])
            self.declare_dead(d[~np.isfinite(self.dead_at[d])], t)
        dst, msg = dst[~dead], msg[~dead]
        while dst.size:  # one suspect per peer at a time, in arrival order
            uniq, first = np.unique(dst, return_index=True)
            self.suspect(uniq, msg[first], t)
            rest = np.ones(dst.size, dtype=bool)
            rest[first] = False
            dst, msg = dst[rest], msg[rest]

    def declare_dead(self, peers: IntArray, t: float) -> None:
        """``gossip.py: on_dead`` / ``expire_suspicions``: dead, timer dropped, re-gossiped."""
        if peers.size == 0:
            return
        self.dead_at[peers] = t
        self.deadline[peers] = NEVER
        self.mesh.queue(peers, np.full(peers.size, self.dead_msg, dtype=np.int64))

    def suspect(self, peers: IntArray, sender: IntArray, t: float) -> None:
        """``gossip.py: on_suspect`` for distinct ``peers``, each hearing one ``Suspect``."""
        live = ~np.isfinite(self.dead_at[peers])
        peers, sender = peers[live], sender[live]
        if peers.size == 0:
            return
        new = ~np.isfinite(self.t_start[peers])
        p, s = peers[new], sender[new]
        if p.size:  # Suspicion.start: the accuser never counts as a confirmation
            self.t_start[p] = t
            self.senders[p, 0] = s
            self.n_conf[p] = 0
            self.deadline[p] = t + (self.max_s if self.k >= 1 else self.min_s)
            self.mesh.queue(p, s)
        p, s = peers[~new], sender[~new]
        if p.size == 0:
            return
        fresh = (self.n_conf[p] < self.k) & ~(self.senders[p] == s[:, None]).any(axis=1)
        p, s = p[fresh], s[fresh]
        if p.size == 0:
            return
        self.n_conf[p] += 1
        self.senders[p, self.n_conf[p]] = s
        timeout = suspicion_timeout(self.n_conf[p], self.k, self.min_s, self.max_s)
        remaining = timeout - (t - self.t_start[p])
        self.deadline[p] = t + np.maximum(remaining, 0.0)
        self.mesh.queue(p, s)

    # ------------------------------------------------------------------ probing

    def probe_tick(self, step: int) -> None:
        mesh = self.mesh
        group = mesh.probe_groups[step % mesh.k_probe]
        group = group[mesh.running[group]]
        if group.size == 0:
            return
        hit = self.hit_step[group] == step
        hitters = group[hit]
        # A peer that already sees the victim dead skips it (and will not meet it again).
        knows = np.isfinite(self.dead_at[hitters])
        self.hit_step[hitters[knows]] = np.iinfo(np.int64).max
        probing = hitters[~knows]
        if probing.size:
            self.probe_victim(probing, step)
        regular = np.concatenate([group[~hit], hitters[knows]])
        if regular.size:
            mesh.exchange(regular, mesh.others(regular, 1, skip_dead=True)[:, 0])

    def probe_victim(self, probers: IntArray, step: int) -> None:
        mesh = self.mesh
        mesh.take(probers)  # the ping to the victim: lost, but it was a transmission
        self.events[step + mesh.k_timeout].append(("indirect", probers))
        self.events[step + mesh.k_probe].append(("finish", probers))
        nxt = mesh.rng.integers(0, self.cycle, size=probers.size)
        self.hit_step[probers] += (self.cycle - self.pos[probers] + nxt) * mesh.k_probe
        self.pos[probers] = nxt

    def run_events(self, step: int, t: float) -> None:
        mesh = self.mesh
        for kind, peers in self.events.pop(step, []):
            if kind == "finish":  # probe.py _finish: Suspect(v, prober) to ourselves
                self.suspect(peers, peers, t)
            elif kind == "indirect":  # _go_indirect: ping-reqs piggyback the prober's queue
                relays = mesh.others(peers, mesh.cfg.indirect_checks, skip_dead=True)
                src = np.repeat(peers, mesh.cfg.indirect_checks)
                dst = relays.reshape(-1)
                carrying, msgs = mesh.take(src)
                mesh.send(dst[carrying], msgs)
                self.events[step + 1].append(("relay", dst))
                self.events[step + 1 + mesh.k_nack].append(("nack", np.stack([dst, src])))
            elif kind == "relay":  # on_indirect_ping: the relay's ping to the victim, lost
                mesh.take(peers)
            elif kind == "nack":  # _expire_relays: the nack piggybacks the relay's queue
                relay, prober = peers[0], peers[1]
                carrying, msgs = mesh.take(relay)
                mesh.send(prober[carrying], msgs)

    def expire(self, t: float) -> None:
        due = np.flatnonzero(self.deadline <= t + 1e-9)
        self.declare_dead(due, t)


def run_detection(
    n: int,
    seed: int,
    config: SwimConfig | None = None,
    *,
    slot_s: float = DEFAULT_SLOT_S,
    slots_per_round: int | None = None,
    horizon_s: float | None = None,
    keep_times: bool = False,
) -> ModelResult:
    """One of N peers crashes: until each of the other N - 1 declares it dead."""
    cfg = config if config is not None else SwimConfig.lan()
    mesh = _Mesh(
        n, cfg, seed, slot_s=slot_s, slots_per_round=slots_per_round, loss=0.0, n_members=n
    )
    det = _Detection(mesh)
    if horizon_s is None:
        horizon_s = det.max_s + 10.0 * cfg.probe_interval_s
    max_step = int(horizon_s / mesh.slot_s)
    live = mesh.running.copy()
    for step in range(max_step):
        t = step * mesh.slot_s
        dst, msg = mesh.drain()
        if dst.size:
            det.receive(dst, msg, t)
        det.run_events(step, t)
        det.expire(t)
        if np.isfinite(det.dead_at[live]).all():
            break
        det.probe_tick(step)
        mesh.gossip_tick(step)
    times = det.dead_at[live]
    reached = int(np.isfinite(times).sum())
    all_s = float(times.max()) if reached == times.size else NEVER
    sus = det.t_start[live]
    return ModelResult(
        "detect",
        n,
        seed,
        first_s=float(times.min()),
        all_s=all_s,
        reached=reached,
        targets=int(times.size),
        datagrams=mesh.datagrams,
        rounds_all=all_s / cfg.gossip_interval_s,
        extra={
            "suspect_first_s": float(sus.min()),
            "suspect_all_s": float(sus.max()),
            "min_suspicion_s": det.min_s,
            "max_suspicion_s": det.max_s,
            "confirmed_at_first": float(det.n_conf[np.argmin(np.where(live, det.dead_at, NEVER))]),
        },
        times=det.dead_at if keep_times else None,
    )
