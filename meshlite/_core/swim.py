"""SWIM + Lifeguard membership core (sans-I/O).

The contract every driver relies on:

    core = SwimCore(name, addr, config, rng, now, meta=None, local_state=None)
    effects = core.handle(inp, now)      # inp: meshlite._core.events.Input
    core.next_deadline() -> float        # call handle(TimerFired(), t) once now >= t
    core.members() -> list[Member]       # every known member incl. self, sorted by name
    core.member(name) -> Member | None
    core.stats -> dict[str, int]         # counters: drops by reason, probes, suspicions...
    core.pending_broadcasts() -> int     # leave waits for this to reach 0 (or a timeout)
    core.health_score -> int             # Lifeguard local health (0 = healthy)

``local_state`` is a zero-argument callable returning opaque bytes sent in every push/pull
(the service catalog's full state, issue 3); received states come out as
``UserStateMerged`` effects.

Theory of operation
-------------------
SWIM (Das et al., DSN 2002) with Lifeguard (Dadgar et al., arXiv 1707.00788), following
HashiCorp memberlist's behaviour, split by concern:

* ``probe.py`` — failure detection: one probe per (health-scaled) interval, indirect
  probes with nacks, the TCP fallback ping, relaying probes for others;
* ``gossip.py`` — dissemination: applying alive/suspect/dead/user news to the member
  table (``members.py``), suspicion timers (``suspicion.py``), re-gossip through the
  transmit-limited queue (``broadcasts.py``) piggybacked on every datagram
  (``outbox.py``), and the gossip tick;
* ``reconnect.py`` — Serf's reconnect: failed members are retried with a push/pull
  every ``reconnect_interval_s`` so a partition outlasting ``gossip_to_the_dead_s``
  still heals;
* this module — the driver-facing surface: input dispatch, the timer schedule,
  push/pull anti-entropy over streams (join, periodic, reconnect, and answering
  peers), leave, meta changes.

Network input is never trusted: anything that does not decode, or decodes to something
unexpected, is dropped and counted in ``stats`` (``drop_*``); nothing raises.  Local
misuse (a bad name, oversized meta or user payload) raises ``ConfigError`` at once.

Streams the core answers: ``PushPull`` (reply with our state, then merge theirs —
memberlist's order) and ``Ping`` (the TCP fallback; reply ``Ack``).  Anything else gets
no ``ReplyStream``; the driver then closes the stream.  Keyring requests never reach
the core (the driver routes them first).
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Callable

import attrs

from meshlite._core.awareness import Awareness
from meshlite._core.broadcasts import TransmitLimitedQueue
from meshlite._core.config import SwimConfig
from meshlite._core.events import (
    Addr,
    Effect,
    Input,
    JoinRequested,
    LeaveRequested,
    Member,
    MemberEvent,
    MemberEventKind,
    MetaChanged,
    PacketReceived,
    ReplyStream,
    SendStream,
    Status,
    StreamReceived,
    StreamReplied,
    TimerFired,
    UserBroadcast,
    UserStateMerged,
)
from meshlite._core.gossip import Gossip, node_key
from meshlite._core.members import MemberTable, fmt_addr
from meshlite._core.outbox import DEBUG, INFO, WARNING, Outbox, message_budget_bytes
from meshlite._core.probe import Prober
from meshlite._core.reconnect import Reconnector
from meshlite._core.wire import (
    MAX_META_BYTES,
    MAX_NAME_BYTES,
    Ack,
    Alive,
    Dead,
    DecodeError,
    IndirectPing,
    KeyringRequest,
    KeyringResponse,
    Message,
    Nack,
    Ping,
    PushPull,
    Suspect,
    User,
    decode_message,
    decode_packet,
    encode_message,
)
from meshlite.errors import ConfigError

__all__ = ["SwimCore", "push_pull_scale_s"]

# memberlist pushPullScaleThreshold: up to 32 members, push/pull every interval; beyond,
# the interval grows by one unit per doubling so total push/pull traffic stays flat.
PUSH_PULL_SCALE_THRESHOLD = 32
# A User message wraps its payload in a msgpack array header, kind and bin header: at
# most 1 + 1 + 5 bytes.  The payload must fit one datagram with that framing.
_USER_MESSAGE_FRAMING_BYTES = 8


def push_pull_scale_s(interval_s: float, n_members: int) -> float:
    """memberlist ``pushPullScale``: ``interval * (ceil(log2(n) - log2(32)) + 1)``."""
    if n_members <= PUSH_PULL_SCALE_THRESHOLD:
        return interval_s
    multiplier = math.ceil(math.log2(n_members) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1
    return multiplier * interval_s


@attrs.define
class _Exchange:
    """A push/pull we started and await the reply to."""

    dst: Addr
    join: bool
    reconnect: bool = False  # a retry of a failed member: failing is the expected outcome


# Events after which a failed member is no longer retried: it is back, or it said goodbye.
_BACK_OR_GONE = frozenset({MemberEventKind.JOIN, MemberEventKind.ALIVE, MemberEventKind.LEFT})


class SwimCore:
    """One peer's SWIM + Lifeguard state machine.  See the module docstring."""

    def __init__(
        self,
        name: str,
        addr: Addr,
        config: SwimConfig,
        rng: random.Random,
        now: float,
        meta: dict[str, str] | None = None,
        local_state: Callable[[], bytes] | None = None,
    ) -> None:
        _check_name(name)
        meta = _check_meta(meta or {})
        self._cfg = config
        self._rng = rng
        self._addr = addr
        self._local_state = local_state
        self._stats: Counter[str] = Counter()
        self._req_ids = itertools.count(1)
        self._table = MemberTable(name, addr, meta, now)
        self._queue = TransmitLimitedQueue(config.retransmit_mult, self._table.__len__)
        self._awareness = Awareness(config.awareness_max_multiplier)
        self._prober = Prober(
            config, self._table, self._awareness, rng, self._stats, self._req_ids, now
        )
        self._gossip = Gossip(
            config, self._table, self._queue, self._awareness, self._prober, rng, self._stats, now
        )
        self._exchanges: dict[int, _Exchange] = {}
        self._budget_bytes = message_budget_bytes(name, config.udp_buffer_bytes)
        interval_s = config.push_pull_interval_s
        self._next_push_pull_s = now + rng.uniform(0.0, interval_s) if interval_s > 0 else math.inf
        self._reconnect = Reconnector(config.reconnect_interval_s, config.reconnect_timeout_s, now)
        # memberlist setAlive: our own alive goes out with the first datagrams.
        self._gossip.broadcast(node_key(name), self._table.local_alive())

    # ------------------------------------------------------------------ reading

    def members(self) -> list[Member]:
        """Every known member including ourselves, sorted by name."""
        return self._table.members()

    @property
    def members_version(self) -> int:
        """Moves whenever :meth:`members` would return something different."""
        return self._table.version

    def member(self, name: str) -> Member | None:
        entry = self._table.get(name)
        return None if entry is None else entry.to_member()

    @property
    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    def pending_broadcasts(self) -> int:
        """Broadcasts still queued; after a leave, only the goodbye (0 once it went out)."""
        return len(self._queue)

    @property
    def health_score(self) -> int:
        return self._awareness.score

    def next_deadline(self) -> float:
        """The earliest time ``handle(TimerFired(), t)`` has something to do."""
        t = min(
            self._prober.next_deadline(),
            self._gossip.next_suspicion_s(),
            self._gossip.next_gossip_s,
            self._next_push_pull_s,
        )
        if self._reconnect:
            t = min(t, self._reconnect.next_attempt)
        reap_s = self._table.next_reap_s(self._cfg.gossip_to_the_dead_s)
        return t if reap_s is None else min(t, reap_s)

    # ------------------------------------------------------------------ input

    def handle(self, inp: Input, now: float) -> list[Effect]:
        """Apply one input at time ``now``; the effects for the driver to carry out."""
        out = Outbox(self._table.local_name, self._budget_bytes, self._queue, self._stats)
        if isinstance(inp, PacketReceived):
            self._on_packet(inp, now, out)
        elif isinstance(inp, TimerFired):
            self._on_timer(now, out)
        elif isinstance(inp, StreamReceived):
            self._on_stream(inp, now, out)
        elif isinstance(inp, StreamReplied):
            self._on_stream_reply(inp, now, out)
        elif isinstance(inp, JoinRequested):
            self._join(inp.seeds, out)
        elif isinstance(inp, LeaveRequested):
            self._leave(now, out)
        elif isinstance(inp, MetaChanged):
            self._set_meta(inp.meta, out)
        elif isinstance(inp, UserBroadcast):
            self._user_broadcast(inp)
        else:
            raise TypeError(f"not a SWIM input: {inp!r}")
        if out.events:
            self._track_failures(out.events, now)
        return out.effects

    def _on_packet(self, inp: PacketReceived, now: float, out: Outbox) -> None:
        try:
            _sender, messages = decode_packet(inp.data)
        except DecodeError:
            self._stats["drop_decode"] += 1
            return
        self._stats["udp_received"] += 1
        for msg in messages:
            self._on_message(msg, now, out)

    def _on_message(self, msg: Message, now: float, out: Outbox) -> None:
        # Most common kinds first: piggybacked alives outnumber everything else.
        if isinstance(msg, Alive):
            self._gossip.on_alive(msg, now, out)
        elif isinstance(msg, Ping):
            self._prober.on_ping(msg, out)
        elif isinstance(msg, Ack):
            self._prober.on_ack(msg, out)
        elif isinstance(msg, IndirectPing):
            self._prober.on_indirect_ping(msg, now, out)
        elif isinstance(msg, Nack):
            self._prober.on_nack(msg)
        elif isinstance(msg, Suspect):
            self._gossip.on_suspect(msg, now, out)
        elif isinstance(msg, Dead):
            self._gossip.on_dead(msg, now, out)
        elif isinstance(msg, User):
            self._gossip.on_user(msg, out)
        else:  # PushPull and keyring messages belong on streams
            self._stats["drop_unexpected_kind"] += 1

    def _on_timer(self, now: float, out: Outbox) -> None:
        suspect = self._prober.on_timer(now, out)
        if suspect is not None:
            self._gossip.on_suspect(suspect, now, out)
        self._gossip.expire_suspicions(now, out)
        for event in self._table.reap(now, self._cfg.gossip_to_the_dead_s):
            out.event(event)
            self._stats["reaped"] += 1
        self._gossip.tick(now, out)
        if now >= self._next_push_pull_s:
            self._periodic_push_pull(now, out)
        if self._reconnect and now >= self._reconnect.next_attempt:
            self._reconnect_one(now, out)

    # ------------------------------------------------------------------ reconnect

    def _track_failures(self, events: list[MemberEvent], now: float) -> None:
        """Serf remembers members that failed (not those that left) to retry them."""
        if self._cfg.reconnect_interval_s <= 0:
            return
        for event in events:
            kind, member = event.kind, event.member
            if kind is MemberEventKind.DEAD:
                if not self._reconnect:  # the first failure starts the schedule afresh
                    self._reconnect.next_attempt = now + self._cfg.reconnect_interval_s
                self._reconnect.failed(member.name, (member.address, member.port), now)
            elif kind in _BACK_OR_GONE:
                self._reconnect.forget(member.name)

    def _reconnect_one(self, now: float, out: Outbox) -> None:
        alive = sum(1 for e in self._table if e.status is Status.ALIVE)
        dst = None if self._table.leaving else self._reconnect.attempt(now, alive, self._rng)
        if dst is not None:
            self._stats["reconnects"] += 1
            out.log(DEBUG, f"Reconnecting to failed member at {fmt_addr(dst)}")
            self._push_pull(dst, False, out, reconnect=True)

    # ------------------------------------------------------------------ streams

    def _on_stream(self, inp: StreamReceived, now: float, out: Outbox) -> None:
        try:
            msg = decode_message(inp.data)
        except DecodeError:
            self._stats["drop_stream_decode"] += 1
            return
        if isinstance(msg, PushPull):
            self._stats["push_pull_served"] += 1
            out.emit(ReplyStream(inp.stream_id, self._encode_state(msg.join)))
            self._merge(msg, now, out)
        elif isinstance(msg, Ping):
            reply = self._prober.stream_ping_reply(msg)
            if reply is not None:
                out.emit(ReplyStream(inp.stream_id, reply))
        elif isinstance(msg, KeyringRequest | KeyringResponse):
            self._stats["ignored_keyring_stream"] += 1
        else:
            self._stats["drop_unexpected_kind"] += 1

    def _on_stream_reply(self, inp: StreamReplied, now: float, out: Outbox) -> None:
        if self._prober.owns_stream(inp.req_id):
            self._prober.on_stream_reply(inp.req_id, inp.data)
            return
        exchange = self._exchanges.pop(inp.req_id, None)
        if exchange is None:
            self._stats["stream_reply_unmatched"] += 1
            return
        msg = self._decode_push_pull(inp.data)
        if msg is None:
            self._push_pull_failed(exchange, out)
            return
        self._stats["joins_ok" if exchange.join else "push_pulls_ok"] += 1
        self._merge(msg, now, out)
        if exchange.join:
            out.log(
                INFO, f"Joined through {fmt_addr(exchange.dst)}: {len(self._table)} members known"
            )

    def _decode_push_pull(self, data: bytes | None) -> PushPull | None:
        if data is None:
            return None
        try:
            msg = decode_message(data)
        except DecodeError:
            self._stats["drop_stream_decode"] += 1
            return None
        if not isinstance(msg, PushPull):
            self._stats["drop_unexpected_kind"] += 1
            return None
        return msg

    def _push_pull_failed(self, exchange: _Exchange, out: Outbox) -> None:
        what = (
            "Join through"
            if exchange.join
            else "Reconnect to"
            if exchange.reconnect
            else "Push/pull with"
        )
        self._stats["joins_failed" if exchange.join else "push_pulls_failed"] += 1
        level = DEBUG if exchange.reconnect else WARNING
        out.log(level, f"{what} {fmt_addr(exchange.dst)} failed (no valid reply)")

    def _merge(self, msg: PushPull, now: float, out: Outbox) -> None:
        self._gossip.merge(msg.nodes, now, out)
        if msg.user_state:
            out.emit(UserStateMerged(msg.user_state, msg.join))

    def _encode_state(self, join: bool) -> bytes:
        user_state = self._local_state() if self._local_state is not None else b""
        return encode_message(PushPull(join, self._table.node_states(), user_state))

    def _push_pull(self, dst: Addr, join: bool, out: Outbox, reconnect: bool = False) -> None:
        req_id = next(self._req_ids)
        self._exchanges[req_id] = _Exchange(dst, join, reconnect)
        out.emit(SendStream(req_id, dst, self._encode_state(join), self._cfg.tcp_timeout_s))

    def _periodic_push_pull(self, now: float, out: Outbox) -> None:
        interval_s = push_pull_scale_s(self._cfg.push_pull_interval_s, len(self._table))
        self._next_push_pull_s = now + interval_s
        if self._table.leaving:
            return
        me = self._table.local_name
        peers = self._table.random_entries(
            1, self._rng, lambda e: e.name == me or e.status != Status.ALIVE
        )
        if peers:
            self._stats["push_pulls"] += 1
            self._push_pull(peers[0].addr, False, out)

    # ------------------------------------------------------------------ local requests

    def _join(self, seeds: tuple[Addr, ...], out: Outbox) -> None:
        """memberlist ``Join``: a push/pull (join=True) with every seed but ourselves."""
        if self._table.leaving:
            return
        for seed in seeds:
            if seed != self._addr:
                self._stats["join_attempts"] += 1
                self._push_pull(seed, True, out)

    def _leave(self, now: float, out: Outbox) -> None:
        """Gossip our goodbye (dead from ourselves, incarnation + 1) and stop probing.

        Everything else queued is dropped: a leaving peer only spreads its departure, so
        ``pending_broadcasts()`` reaches 0 once the goodbye went out ``retransmit_limit``
        times.  Alone, there is nobody to tell: nothing is queued.
        """
        if self._table.leaving:
            return
        self._prober.stop()
        self._gossip.forget_suspicions()
        self._queue.clear()
        goodbye = self._table.leave_message()
        self._gossip.on_dead(goodbye, now, out)
        me = self._table.local_name
        if any(e.name != me and e.status in (Status.ALIVE, Status.SUSPECT) for e in self._table):
            self._queue.queue(node_key(me), encode_message(goodbye))

    def _set_meta(self, meta: dict[str, str], out: Outbox) -> None:
        meta = _check_meta(meta)
        if self._table.leaving:
            return
        alive = self._table.set_local_meta(meta)
        self._gossip.broadcast(node_key(alive.node), alive)
        me = self._table.local.to_member()
        out.event(MemberEvent(MemberEventKind.UPDATE, me))

    def _user_broadcast(self, inp: UserBroadcast) -> None:
        room = self._budget_bytes - _USER_MESSAGE_FRAMING_BYTES
        if len(inp.payload) > room:
            raise ConfigError(
                f"user broadcast {inp.key!r} is {len(inp.payload)} bytes; at most {room} "
                "fit in one datagram (raise udp_buffer_bytes, or send less per broadcast)"
            )
        self._gossip.user_broadcast(inp.key, inp.payload)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or len(name.encode()) > MAX_NAME_BYTES:
        raise ConfigError(
            f"node name must be a non-empty string of at most {MAX_NAME_BYTES} UTF-8 "
            f"bytes, got {name!r}"
        )


def _check_meta(meta: dict[str, str]) -> dict[str, str]:
    size = 0
    for k, v in meta.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ConfigError(f"meta keys and values must be strings, got {k!r}: {v!r}")
        size += len(k.encode()) + len(v.encode())
    if size > MAX_META_BYTES:
        raise ConfigError(
            f"meta is {size} bytes of keys and values; at most {MAX_META_BYTES} fit in a "
            "gossip message (keep meta small; put bulk data in the KV store)"
        )
    return dict(meta)
