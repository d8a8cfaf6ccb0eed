"""Dissemination: applying alive/suspect/dead/user news, suspicion timers, gossip ticks.

Theory of operation
-------------------
News about a member arrives as ``Alive``/``Suspect``/``Dead`` messages piggybacked on any
datagram (SWIM §4.1), or as a push/pull full state (memberlist ``mergeState``).  Each is
applied to the member table (``members.py``); if it changed the table, it is queued for
re-gossip under the member's name, so newer news about a member replaces older news
still in the queue (``broadcasts.py``).  An accusation against ourselves is refuted with
a higher incarnation, which also costs a point of local health (Lifeguard §IV-A).

Suspicions (Lifeguard §IV-B, ``suspicion.py``) run per suspect member: a ``Suspect``
about an already-suspect member from a new sender is a *confirmation* that shortens the
timer and is re-gossiped, so confirmations keep flowing; on expiry we declare the member
dead and gossip that.

A push/pull state is merged as memberlist does: alive -> alive message, left -> dead
from the member itself, and dead or suspect -> *suspect* from us (a remote peer's
belief that a member is dead is not enough to kill it here; it gets a suspicion it can
refute).

Every ``gossip_interval_s`` we also send a datagram of pure broadcasts to
``gossip_nodes`` random members that are alive, suspect, or dead for less than
``gossip_to_the_dead_s`` (memberlist ``gossip``: telling the "dead" lets a partitioned
member learn it and refute).

User broadcasts ride the same queue, under the application's key.  Every ``User``
message received is delivered, and none is relayed by the core: as with memberlist's
``NotifyMsg``/``GetBroadcasts`` under Serf, the application decides what is news and
broadcasts it on (the catalog relays a record it stored: ``directory.py``).  Deduplication
then follows the application's state rather than a bounded memory of digests — a record
forgotten with its reaped node is news again when the node comes back, and an older
version that arrives after a newer one is dropped instead of re-gossiped.
"""

from __future__ import annotations

import math
import random
from collections import Counter

from meshlite._core.awareness import Awareness
from meshlite._core.broadcasts import TransmitLimitedQueue
from meshlite._core.config import SwimConfig
from meshlite._core.events import MemberEventKind, Status, UserMessage
from meshlite._core.members import IGNORED, Entry, MemberTable, Verdict
from meshlite._core.outbox import INFO, Outbox
from meshlite._core.probe import Prober
from meshlite._core.suspicion import Suspicion, suspicion_params
from meshlite._core.wire import Alive, Dead, Message, NodeState, Suspect, User, encode_message

__all__ = ["Gossip"]

# Incarnations only grow by refutations and meta changes: no honest peer gets near 2**48
# (a refutation a second for nine million years).  Bigger numbers are hostile or corrupt,
# and would let one message push ours to the wire format's 2**64 ceiling: dropped.
MAX_INCARNATION = 2**48


def node_key(name: str) -> str:
    """Queue key of news about a member: newer news about it replaces older."""
    return "node:" + name


class Gossip:
    """Applies membership news, runs suspicions, and gossips the broadcast queue."""

    def __init__(
        self,
        config: SwimConfig,
        table: MemberTable,
        queue: TransmitLimitedQueue,
        awareness: Awareness,
        prober: Prober,
        rng: random.Random,
        stats: Counter[str],
        now: float,
    ) -> None:
        self._cfg = config
        self._table = table
        self._queue = queue
        self._awareness = awareness
        self._prober = prober
        self._rng = rng
        self._stats = stats
        self._suspicions: dict[str, Suspicion] = {}
        # min(deadline_s) of the suspicions, None once a change made it stale: asked after
        # every input, it must not cost a walk over every suspect of a large mesh.
        self._next_suspicion_s: float | None = math.inf
        self.next_gossip_s = now + rng.uniform(0.0, config.gossip_interval_s)

    # ------------------------------------------------------------------ membership news

    def _implausible(self, incarnation: int) -> bool:
        if incarnation > MAX_INCARNATION:
            self._stats["drop_bad_incarnation"] += 1
            return True
        return False

    def on_alive(self, msg: Alive, now: float, out: Outbox) -> None:
        if self._implausible(msg.incarnation):
            return
        verdict = self._table.apply_alive(msg, now)
        if verdict is IGNORED:  # old news, the common case: nothing to settle
            return
        if verdict.accepted:
            self._drop_suspicion(msg.node)
        self._settle(verdict, msg, out)

    def on_suspect(self, msg: Suspect, now: float, out: Outbox) -> None:
        if self._implausible(msg.incarnation):
            return
        entry = self._table.get(msg.node)
        if entry is None or msg.incarnation < entry.incarnation:
            return
        timer = self._suspicions.get(msg.node)
        if timer is not None:
            if timer.confirm(msg.sender, now):
                self._next_suspicion_s = None
                self._stats["suspicion_confirmations"] += 1
                self.broadcast(node_key(msg.node), msg)
            return
        verdict = self._table.apply_suspect(msg, now)
        if verdict.accepted:
            self._start_suspicion(msg, now)
        self._settle(verdict, msg, out)

    def on_dead(self, msg: Dead, now: float, out: Outbox) -> None:
        if self._implausible(msg.incarnation):
            return
        entry = self._table.get(msg.node)
        if entry is None or msg.incarnation < entry.incarnation:
            return
        self._drop_suspicion(msg.node)
        self._settle(self._table.apply_dead(msg, now), msg, out)

    def merge(self, nodes: tuple[NodeState, ...], now: float, out: Outbox) -> None:
        """memberlist ``mergeState``: a push/pull peer's full table, as messages."""
        me = self._table.local_name
        for n in nodes:
            if n.state == Status.ALIVE:
                # Most of a peer's state is what we know already: skip building its
                # message (on_alive would ignore it).
                if not self._table.is_old_alive(n.name, n.incarnation, n.addr):
                    self.on_alive(Alive(n.incarnation, n.name, n.addr, n.meta), now, out)
            elif n.state == Status.LEFT:
                self.on_dead(Dead(n.incarnation, n.name, n.name), now, out)
            elif n.state in (Status.DEAD, Status.SUSPECT):
                self.on_suspect(Suspect(n.incarnation, n.name, me), now, out)
            else:
                self._stats["drop_bad_node_state"] += 1

    def _settle(self, verdict: Verdict, msg: Alive | Suspect | Dead, out: Outbox) -> None:
        """Carry out a table verdict: log, refute, re-gossip, notify."""
        if verdict.log is not None:
            out.emit(verdict.log)
        if verdict.refuted is not None:
            self._awareness.apply_delta(1)
            self._stats["refutes"] += 1
            self.broadcast(node_key(self._table.local_name), self._table.local_alive())
        if verdict.accepted:
            self.broadcast(node_key(msg.node), msg)
        if verdict.event is not None:
            out.event(verdict.event)
            self._count_event(verdict.event.kind, verdict.event.member.name)

    def _count_event(self, kind: MemberEventKind, name: str) -> None:
        if kind == MemberEventKind.JOIN:
            self._prober.note_member(name)
        elif kind == MemberEventKind.SUSPECT:
            self._stats["suspicions"] += 1
        elif kind == MemberEventKind.DEAD:
            self._stats["deaths"] += 1

    def broadcast(self, key: str, msg: Message) -> None:
        """Queue ``msg`` for piggybacking; a leaving peer spreads only its goodbye."""
        if not self._table.leaving:
            self._queue.queue(key, encode_message(msg))

    # ------------------------------------------------------------------ suspicions

    def _start_suspicion(self, msg: Suspect, now: float) -> None:
        k, min_s, max_s = suspicion_params(
            self._cfg.suspicion_mult,
            self._cfg.suspicion_max_timeout_mult,
            len(self._table),
            self._cfg.probe_interval_s,
        )
        self._suspicions[msg.node] = Suspicion.start(msg.sender, k, min_s, max_s, now)
        self._next_suspicion_s = None

    def _drop_suspicion(self, name: str) -> None:
        if self._suspicions.pop(name, None) is not None:
            self._next_suspicion_s = None

    def next_suspicion_s(self) -> float:
        if self._next_suspicion_s is None:
            deadlines = (s.deadline_s for s in self._suspicions.values())
            self._next_suspicion_s = min(deadlines, default=math.inf)
        return self._next_suspicion_s

    def expire_suspicions(self, now: float, out: Outbox) -> None:
        """Declare dead every suspect whose timer ran out (memberlist ``suspectTimeout``)."""
        if now < self.next_suspicion_s():
            return
        due = [n for n, s in self._suspicions.items() if now >= s.deadline_s]
        self._next_suspicion_s = None
        for name in due:
            timer = self._suspicions.pop(name)
            entry = self._table.get(name)
            if entry is None or entry.status != Status.SUSPECT:
                continue
            out.log(
                INFO,
                f"Marking {name} as failed, suspect timeout reached ({timer.n} peer confirmations)",
            )
            self.on_dead(Dead(entry.incarnation, name, self._table.local_name), now, out)

    def forget_suspicions(self) -> None:
        self._suspicions.clear()
        self._next_suspicion_s = math.inf

    # ------------------------------------------------------------------ user messages

    def user_broadcast(self, key: str, payload: bytes) -> None:
        """The application's broadcast (its own news, or news it relays), queued by key."""
        self.broadcast("user:" + key, User(payload))

    def on_user(self, msg: User, out: Outbox) -> None:
        self._stats["user_delivered"] += 1
        out.emit(UserMessage(msg.payload))

    # ------------------------------------------------------------------ gossip tick

    def tick(self, now: float, out: Outbox) -> None:
        """memberlist ``gossip``: broadcasts to a few live (or recently dead) members."""
        if now < self.next_gossip_s:
            return
        self.next_gossip_s += self._cfg.gossip_interval_s
        if self.next_gossip_s <= now:  # fell behind (a stalled driver): do not catch up
            self.next_gossip_s = now + self._cfg.gossip_interval_s
        if not len(self._queue):
            return
        targets = self._table.random_entries(
            self._cfg.gossip_nodes, self._rng, lambda e: not self._gossip_to(e, now)
        )
        for entry in targets:
            if not out.gossip(entry.addr):
                return

    def _gossip_to(self, entry: Entry, now: float) -> bool:
        if entry.name == self._table.local_name:
            return False
        if entry.status in (Status.ALIVE, Status.SUSPECT):
            return True
        keep_s = self._cfg.gossip_to_the_dead_s
        return entry.status == Status.DEAD and now - entry.state_change_s <= keep_s
