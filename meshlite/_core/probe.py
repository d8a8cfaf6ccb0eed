"""The probe state machine: direct ping, indirect ping-req, TCP fallback, relaying.

Theory of operation
-------------------
SWIM's failure detector (Das et al. 2002, §3.1), as memberlist runs it
(``state.go: probe, probeNode``; ``net.go: handlePing, handleIndirectPing``):

1. Once per probe interval, pick the next member of a shuffled list (reshuffled on each
   wrap-around, new members inserted at a random position — every member is probed
   within one round, in random order) and send it ``Ping(seq)``.  A member already
   suspect also gets the ``Suspect`` in the same datagram, to refute sooner.
2. No ``Ack(seq)`` within the probe timeout: ask ``indirect_checks`` random alive
   members to probe it for us (``IndirectPing``, with Lifeguard's nack request), and try
   one ping over TCP (memberlist's fallback for networks that drop UDP).
3. Still no ack when the probe interval ends: the target is suspect — unless the TCP
   ping got through, which means UDP is broken between us and that peer: warn once
   instead of accusing it.

Lifeguard (arXiv 1707.00788) adds local health (``awareness.py``): the probe interval
and the probe timeout are both scaled by ``health_score + 1`` (the paper's LHA-Probe
scales both; memberlist scales only the interval), each probe's outcome adjusts the
score, and relays answer ``Nack`` when they too get no ack, so that a prober whose relays
stay silent learns the problem is its own.  A relay nacks at 0.8 x its probe timeout so
the nack reaches the prober before the prober's own interval ends (with the default
timeout = interval / 2, a nack at the full timeout would race the deadline).

Ack handlers for relayed probes expire after the probe timeout (memberlist
``setAckHandler``) and are capped in number, so a flood of indirect pings cannot grow
memory.  The prober never sends anything itself: it writes to an :class:`Outbox`.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter

import attrs

from meshlite._core.awareness import Awareness, failed_probe_delta
from meshlite._core.broadcasts import RecentSet
from meshlite._core.config import SwimConfig
from meshlite._core.events import Addr, SendStream, Status
from meshlite._core.members import Entry, MemberTable
from meshlite._core.outbox import INFO, WARNING, Outbox
from meshlite._core.wire import (
    Ack,
    DecodeError,
    IndirectPing,
    Message,
    Nack,
    Ping,
    Suspect,
    decode_message,
    encode_message,
)

__all__ = ["Prober"]

# Relays in flight for other members.  Honest load is a few per failed member per probe
# timeout (each prober asks indirect_checks relays); 1,024 leaves room for a whole rack
# failing at once in a large cluster, and bounds what a flood of ping-reqs can allocate.
MAX_PENDING_RELAYS = 1024
# memberlist sends the nack at the relay's probe timeout; we send it a bit earlier so it
# arrives before the prober's interval (= 2 x timeout by default) runs out.
NACK_AT_TIMEOUT_FRACTION = 0.8
# Peers we already warned about ("reachable over TCP, not UDP"): log once each.
UDP_WARNINGS_REMEMBERED = 1024
# A stream reply is at most an encoded Ack; anything bigger is not one.
_MAX_ACK_BYTES = 4096


@attrs.define
class _Probe:
    target: str
    addr: Addr
    incarnation: int
    seq: int
    timeout_at_s: float
    deadline_s: float
    indirect: bool = False
    expected_nacks: int = 0
    nacks: int = 0
    tcp_ok: bool = False


@attrs.define
class _Relay:
    requester: Addr
    their_seq: int
    nack_at_s: float | None
    expires_s: float


class Prober:
    """Probes one member per interval and relays probes for others."""

    def __init__(
        self,
        config: SwimConfig,
        table: MemberTable,
        awareness: Awareness,
        rng: random.Random,
        stats: Counter[str],
        req_ids: itertools.count[int],
        now: float,
    ) -> None:
        self._cfg = config
        self._table = table
        self._awareness = awareness
        self._rng = rng
        self._stats = stats
        self._req_ids = req_ids
        self._order: list[str] = []
        self._index = 0
        self._seq = 0
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._tcp: dict[int, int] = {}  # stream req_id -> probe seq
        self._warned = RecentSet(UDP_WARNINGS_REMEMBERED)
        self.stopped = False
        # memberlist staggers its tickers randomly so peers started together do not
        # probe in lockstep.
        self.next_probe_s = now + rng.uniform(0.0, config.probe_interval_s)

    # ------------------------------------------------------------------ scheduling

    def next_deadline(self) -> float:
        t = float("inf") if self.stopped else self.next_probe_s
        p = self._probe
        if p is not None:
            t = min(t, p.deadline_s if p.indirect else p.timeout_at_s)
        for relay in self._relays.values():
            t = min(t, relay.expires_s if relay.nack_at_s is None else relay.nack_at_s)
        return t

    def on_timer(self, now: float, out: Outbox) -> Suspect | None:
        """Advance everything due at ``now``; a ``Suspect`` to raise if a probe failed."""
        self._expire_relays(now, out)
        suspect = None
        p = self._probe
        if p is not None and not p.indirect and now >= p.timeout_at_s:
            self._go_indirect(p, now, out)
        if p is not None and now >= p.deadline_s:
            suspect = self._finish(p, out)
        if not self.stopped and now >= self.next_probe_s:
            self._start(now, out)
        return suspect

    def note_member(self, name: str) -> None:
        """A member (re)appeared: put it at a random place in this round's order."""
        # randint(0, n) without its extra call layer: the same single draw.
        pos = self._rng.randrange(len(self._order) + 1)
        self._order.append(name)
        self._order[pos], self._order[-1] = self._order[-1], self._order[pos]

    def stop(self) -> None:
        """Leaving: no more probes of our own (we still answer and relay)."""
        self.stopped = True
        self._probe = None

    # ------------------------------------------------------------------ our probes

    def _start(self, now: float, out: Outbox) -> None:
        interval_s = self._awareness.scale_timeout(self._cfg.probe_interval_s)
        self.next_probe_s = now + interval_s
        self._probe = None
        target = self._next_target()
        if target is None:
            return
        self._seq += 1
        timeout_s = self._awareness.scale_timeout(self._cfg.probe_timeout_s)
        self._probe = _Probe(
            target.name,
            target.addr,
            target.incarnation,
            self._seq,
            now + min(timeout_s, interval_s),
            now + interval_s,
        )
        me = self._table.local
        msgs: list[Message] = [Ping(self._seq, target.name, me.name, me.addr)]
        if target.status == Status.SUSPECT:
            msgs.append(Suspect(target.incarnation, target.name, me.name))
        out.send(target.addr, msgs)
        self._stats["probes"] += 1

    def _next_target(self) -> Entry | None:
        """memberlist ``probe``: walk the shuffled order, skipping self and dead/left."""
        for _ in range(2 * len(self._order) + 2):
            if self._index >= len(self._order):
                self._reshuffle()
                if not self._order:
                    return None
            name = self._order[self._index]
            self._index += 1
            entry = self._table.get(name)
            if entry is not None and entry.status in (Status.ALIVE, Status.SUSPECT):
                return entry
        return None

    def _reshuffle(self) -> None:
        me = self._table.local_name
        self._order = [
            e.name
            for e in self._table
            if e.name != me and e.status in (Status.ALIVE, Status.SUSPECT)
        ]
        self._rng.shuffle(self._order)
        self._index = 0

    def _go_indirect(self, p: _Probe, now: float, out: Outbox) -> None:
        p.indirect = True
        me = self._table.local
        relays = self._table.random_entries(
            self._cfg.indirect_checks,
            self._rng,
            lambda e: e.name in (me.name, p.target) or e.status != Status.ALIVE,
        )
        req = IndirectPing(p.seq, p.target, p.addr, True, me.name, me.addr)
        for relay in relays:
            out.send(relay.addr, [req])
        p.expected_nacks = len(relays)
        self._stats["indirect_probes"] += 1
        self._stats["indirect_pings_sent"] += len(relays)
        if self._cfg.tcp_fallback:
            req_id = next(self._req_ids)
            self._tcp[req_id] = p.seq
            ping = encode_message(Ping(p.seq, p.target, me.name, me.addr))
            out.emit(SendStream(req_id, p.addr, ping, max(p.deadline_s - now, 0.001)))
            self._stats["tcp_pings"] += 1

    def _finish(self, p: _Probe, out: Outbox) -> Suspect | None:
        self._probe = None
        self._tcp = {r: s for r, s in self._tcp.items() if s != p.seq}
        if p.tcp_ok:
            self._awareness.apply_delta(-1)
            self._stats["probes_tcp_only"] += 1
            if self._warned.add(p.target):
                out.log(
                    WARNING,
                    f"Was able to connect to {p.target} over TCP but UDP probes failed: "
                    "UDP looks blocked between us and that peer (check firewalls for "
                    "UDP on the gossip port, both ways)",
                )
            return None
        self._awareness.apply_delta(failed_probe_delta(p.expected_nacks, p.nacks))
        self._stats["probes_failed"] += 1
        out.log(INFO, f"Suspect {p.target} has failed, no acks received")
        return Suspect(p.incarnation, p.target, self._table.local_name)

    # ------------------------------------------------------------------ messages

    def on_ping(self, msg: Ping, out: Outbox) -> None:
        if msg.target != self._table.local_name:
            self._stats["drop_wrong_target"] += 1
            return
        out.send(msg.source_addr, [Ack(msg.seq)])

    def stream_ping_reply(self, msg: Ping) -> bytes | None:
        """The answer to a TCP fallback ping (``None``: not for us, do not answer)."""
        if msg.target != self._table.local_name:
            self._stats["drop_wrong_target"] += 1
            return None
        return encode_message(Ack(msg.seq))

    def on_indirect_ping(self, msg: IndirectPing, now: float, out: Outbox) -> None:
        me = self._table.local
        if msg.target == me.name:  # asked to probe ourselves: we are the answer
            out.send(msg.source_addr, [Ack(msg.seq)])
            return
        if len(self._relays) >= MAX_PENDING_RELAYS:
            self._stats["drop_relay_full"] += 1
            return
        self._seq += 1
        timeout_s = self._cfg.probe_timeout_s
        nack_at = now + NACK_AT_TIMEOUT_FRACTION * timeout_s if msg.nack else None
        self._relays[self._seq] = _Relay(msg.source_addr, msg.seq, nack_at, now + timeout_s)
        out.send(msg.target_addr, [Ping(self._seq, msg.target, me.name, me.addr)])
        self._stats["relays"] += 1

    def on_ack(self, msg: Ack, out: Outbox) -> None:
        p = self._probe
        if p is not None and msg.seq == p.seq:
            self._probe = None
            self._tcp = {r: s for r, s in self._tcp.items() if s != p.seq}
            self._awareness.apply_delta(-1)
            self._stats["probes_acked"] += 1
            return
        relay = self._relays.pop(msg.seq, None)
        if relay is None:
            self._stats["ack_unmatched"] += 1
            return
        out.send(relay.requester, [Ack(relay.their_seq)])
        self._stats["relay_acks"] += 1

    def on_nack(self, msg: Nack) -> None:
        p = self._probe
        if p is not None and msg.seq == p.seq and p.nacks < p.expected_nacks:
            p.nacks += 1
            self._stats["nacks_received"] += 1
        else:
            self._stats["nack_unmatched"] += 1

    def owns_stream(self, req_id: int) -> bool:
        return req_id in self._tcp

    def on_stream_reply(self, req_id: int, data: bytes | None) -> None:
        """The TCP fallback ping's answer: an ``Ack`` with the probe's seq, or failure."""
        seq = self._tcp.pop(req_id)
        p = self._probe
        if data is None or p is None or p.seq != seq:
            return
        try:
            msg = decode_message(data, _MAX_ACK_BYTES)
        except DecodeError:
            self._stats["drop_stream_decode"] += 1
            return
        if isinstance(msg, Ack) and msg.seq == seq:
            p.tcp_ok = True

    def _expire_relays(self, now: float, out: Outbox) -> None:
        for seq, relay in list(self._relays.items()):
            if relay.nack_at_s is not None and now >= relay.nack_at_s:
                relay.nack_at_s = None
                out.send(relay.requester, [Nack(relay.their_seq)])
                self._stats["nacks_sent"] += 1
            if now >= relay.expires_s:
                del self._relays[seq]
