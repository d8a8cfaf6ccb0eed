"""Deterministic simulation of the replicated KV store, checked for linearizability.

Theory of operation
-------------------
``raft_sim.RaftSim`` (servers, faulty network, nemesis, Raft safety checkers after every
step) with a real state machine and real clients, as Jepsen tests etcd and Consul:

* every server applies NORMAL entries to a ``KVStore`` (``apply_entry``, the command
  ``stamp``-ed with the proposer's simulated clock), snapshots it with
  ``KVStore.snapshot`` when it compacts and rebuilds it with ``KVStore.restore`` from an
  installed snapshot or after a crash;
* 3-5 clients (``_raft_kv_clients.py``) send get, put, CAS and delete on 2-4 keys to the
  server they believe leads, over the same lossy, delaying network.  A server answers
  the way ``meshlite._raft_server_kv`` does: a write waits a moment (up to
  ``BATCH_WINDOW_S``, as writes wait for the leader's ready loop) and is proposed with
  the others that arrived meanwhile, sharing entries as ``_kv_batcher`` shares them
  (``batch_groups``: distinct keys per entry), and answered with its own ``KVResult``
  once the proposer applies that index *with the proposal's term*
  (``RaftNode.propose``; another term there means another leader's entry is
  committed at that index, so the proposal can never commit — Raft's State Machine
  Safety, which the checkers verify — and the client is told it surely failed, as
  ``NotLeaderError`` tells a real one); a get is a ReadIndex read
  (``RaftNode.read_barrier``: ``read_index``, then wait until the store has applied
  the confirmed index, then read locally);
  a follower answers "not leader" with its hint, a crashed server "connection
  refused".  No answer within ``op_timeout_s`` (a request or answer lost, a server
  that crashed or lost its leadership with the operation in hand) leaves the operation
  indeterminate;
* at the end the whole history is checked against a register per key
  (``linearizability.check``), and once the clients stop, every server must apply up
  to the same index and hold a byte-identical store there.

``flaws`` breaks the serving side on purpose, to show the check can fail:
``"stale_reads"`` serves gets from whatever server the client picked, from its local
store, without ReadIndex; ``"early_acks"`` acknowledges puts and deletes as soon as they
are proposed, before they commit.  Replay a seed with ``MESHLITE_SEED=<seed>``: the same
seed gives the same run and the same history (``KVSimResult.history``, a digest).
"""

from __future__ import annotations

import hashlib
from typing import Any

import attrs
import msgpack

from meshlite._core.kv import KVResult, KVStore, batch_groups, cmd_writes, stamp
from meshlite._core.raft import Entry, EntryKind, RaftCore, ReadState, Role
from meshlite.errors import ConfigError, NotLeaderError
from meshlite.testing._raft_kv_clients import ClientOp, KVWorkload, Reply, Tally
from meshlite.testing._raft_node import SimServer
from meshlite.testing.linearizability import DEFAULT_MAX_STEPS, CheckResult
from meshlite.testing.raft_sim import NEMESIS, RaftSafetyError, RaftSim, SimResult

__all__ = ["FLAWS", "KVSim", "KVSimResult", "KVSimServer", "LinearizabilityError", "run_kv_seed"]

REQUEST, RESPONSE, TIMEOUT, NEXT, FLUSH = 20, 21, 22, 23, 24
FLAWS = frozenset({"stale_reads", "early_acks"})
# A client gives up on an answer after this long: longer than an election (0.5-1 s with
# the default RaftConfig) would make few operations indeterminate but clients idle
# through every failover; shorter, and the checker gets many in-flight-forever writes.
OP_TIMEOUT_S = 1.0
# A leader proposes the writes that arrived within this long of each other together
# (its ready loop is busy saving or sending for a few milliseconds under load).
BATCH_WINDOW_S = (0.0, 0.02)
THINK_S = (0.0, 0.05)  # a client's pause between two operations
# ... and after a refusal that named no leader (an election is on): a real client backs
# off rather than spin through every server until one wins.
BACKOFF_S = (0.05, 0.2)
# After the clients stop, at most this long for every server to apply the last entry:
# forty heartbeats, so even the harsh network (30% loss) cannot plausibly hold one back.
DRAIN_S = 2.0


class LinearizabilityError(AssertionError):
    """The recorded KV history has no linearization (or could not be checked)."""


class KVSimServer(SimServer):
    """A simulated server whose state machine is a real ``KVStore``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kv = KVStore()
        self.restores = 0  # stores rebuilt from a snapshot (installed, or after a crash)

    def reset_state_machine(self) -> None:
        self.kv = KVStore()

    def apply_entry(self, entry: Entry) -> KVResult | None:
        if entry.kind is not EntryKind.NORMAL:
            return None
        return self.kv.apply_entry(entry.index, entry.data)

    def image(self) -> bytes:
        return msgpack.packb([self.sm_index, self.sm_digest, self.kv.snapshot()])

    def restore_image(self, data: bytes) -> tuple[int, bytes]:
        index, digest, kv = msgpack.unpackb(data)
        self.kv = KVStore.restore(kv)
        self.restores += 1
        if self.kv.last_index > index:
            raise RaftSafetyError(f"KV image at {index} has applied {self.kv.last_index}")
        return index, digest


@attrs.frozen
class KVSimResult:
    """One run: the Raft run's facts, what the clients saw, and the check's cost."""

    raft: SimResult
    clients: int
    keys: int
    ops: Tally
    reads_deferred: int  # reads that waited for the store to reach their read index
    kv_restores: int  # stores rebuilt from a snapshot image
    batched: int  # writes proposed in an entry shared with others
    checker_steps: int
    history: str  # digest of the recorded history: same seed, same history


class KVSim(RaftSim):
    """A seeded KV cluster under faults, with clients; see the module doc."""

    server_class = KVSimServer

    def __init__(
        self,
        seed: int,
        servers: int = 3,
        *,
        clients: int | None = None,
        keys: int | None = None,
        flaws: frozenset[str] = frozenset(),
        op_timeout_s: float = OP_TIMEOUT_S,
        **kwargs: Any,
    ) -> None:
        if unknown := set(flaws) - FLAWS:
            raise ConfigError(f"unknown flaws {sorted(unknown)}; known: {sorted(FLAWS)}")
        # Booting already applies entries: the bookkeeping must exist before it.
        # (server, incarnation, index) -> (op, term, place among the entry's writes) each
        self._proposals: dict[tuple[str, int, int], list[tuple[int, int, int]]] = {}
        self._batching: dict[tuple[str, int], list[int]] = {}  # writes waiting to propose
        self.batched = 0  # writes that shared an entry with others
        self._asked: dict[bytes, tuple[int, int]] = {}  # read ctx -> (op, commit known)
        self._serving: dict[tuple[str, int], list[tuple[int, int]]] = {}
        self.reads_deferred = 0  # ReadIndex reads that had to wait for the apply
        super().__init__(seed, servers, **kwargs)
        self.flaws = frozenset(flaws)
        self.op_timeout_s = op_timeout_s
        n_clients = clients if clients is not None else self.rng.randint(3, 5)
        n_keys = keys if keys is not None else self.rng.randint(2, 4)
        self.workload = KVWorkload(self.rng, n_clients, n_keys)
        self.handlers.update(
            {REQUEST: self._request, RESPONSE: self._response, TIMEOUT: self._timeout,
             NEXT: self._next, FLUSH: self._flush}
        )  # fmt: skip
        self.verdict: CheckResult | None = None

    def run_kv(
        self, duration_s: float = 10.0, settle_s: float = 6.0, calm_s: float = 1.0
    ) -> KVSimResult:
        """Faults for ``duration_s``; heal and require progress within ``settle_s``; a
        calm ``calm_s`` of traffic; then stop the clients and check everything."""
        self.at(self.rng.uniform(*self.faults.nemesis_every_s), NEMESIS, None)
        for cid in range(len(self.workload.clients)):
            self.at(self.rng.uniform(*THINK_S), NEXT, cid)
        self.run_until(duration_s)
        self._heal_all()
        self._settle(duration_s + settle_s)
        self.run_until(self.now + calm_s)
        self.drop_events(NEXT, REQUEST, RESPONSE, TIMEOUT, FLUSH)
        self.workload.stop()  # what is in flight stays indeterminate
        self.run_until(self.now + DRAIN_S, self._same_index)
        self._final_checks()
        self._check_images()
        self.verdict = verdict = self.workload.history.check(max_steps=DEFAULT_MAX_STEPS)
        if not verdict.ok:
            raise LinearizabilityError(f"KV history not linearizable: {verdict.explain()}")
        return self._result(verdict)

    def _result(self, verdict: CheckResult) -> KVSimResult:
        raft = self.result()
        ops = repr(self.workload.history.operations()).encode()
        return KVSimResult(
            raft,
            len(self.workload.clients),
            len(self.workload.keys),
            attrs.evolve(self.workload.tally),
            self.reads_deferred,
            sum(s.restores for s in self.servers.values() if isinstance(s, KVSimServer)),
            self.batched,
            verdict.steps,
            hashlib.blake2b(ops, digest_size=8).hexdigest(),
        )

    def _same_index(self) -> bool:
        return len({s.sm_index for s in self.servers.values()}) == 1

    def _check_images(self) -> None:
        """Once the clients stop, every server applies up to the same index and holds
        the same store there, byte for byte (``KVStore.snapshot`` is canonical)."""
        if not self._same_index():
            indexes = {s.name: s.sm_index for s in self.servers.values()}
            raise AssertionError(f"liveness: applied indexes still differ: {indexes}")
        images: dict[bytes, list[str]] = {}
        for server in self.servers.values():
            assert isinstance(server, KVSimServer)
            images.setdefault(server.kv.snapshot(), []).append(server.name)
        if len(images) > 1:
            groups = list(images.values())
            raise RaftSafetyError(f"KV stores differ at index {server.sm_index}: {groups}")

    # -- the clients' side -----------------------------------------------------------

    def _next(self, cid: int) -> None:
        op = self.workload.next_op(cid, self.now)
        server = self.workload.target(cid)
        if server is None or (op.kind == "get" and "stale_reads" in self.flaws):
            server = self.rng.choice(self.names)
            self.workload.aim(cid, server)
        self._transmit(REQUEST, (op.op_id, server))
        self.at(self.now + self.op_timeout_s, TIMEOUT, op.op_id)

    def _transmit(self, kind: int, payload: Any) -> None:
        """A client message or an answer, over the faulty network (never partitioned)."""
        f, rng = self.faults, self.rng
        if rng.random() < f.loss:
            return
        delay = rng.uniform(*f.delay_s)
        if rng.random() < f.reorder:
            delay += rng.uniform(0.0, f.reorder_delay_s)
        self.at(self.now + delay, kind, payload)

    def _response(self, payload: tuple[int, Reply]) -> None:
        op_id, reply = payload
        if self.workload.reply(op_id, reply, self.now):
            lost = reply.refused and reply.hint is None
            self._think(self.workload.op(op_id), BACKOFF_S if lost else THINK_S)

    def _timeout(self, op_id: int) -> None:
        if self.workload.timeout(op_id):
            self._think(self.workload.op(op_id), THINK_S)

    def _think(self, op: ClientOp, pause_s: tuple[float, float]) -> None:
        self.at(self.now + self.rng.uniform(*pause_s), NEXT, op.client)

    # -- the servers' side -----------------------------------------------------------

    def _request(self, payload: tuple[int, str]) -> None:
        op_id, name = payload
        op, server = self.workload.op(op_id), self.servers[name]
        core = server.core
        if core is None:  # connection refused: surely not done
            self._transmit(RESPONSE, (op_id, Reply(refused=True)))
            return
        try:
            if op.kind == "get":
                self._get(op, server, core)
            else:
                self._write(op, server, core)
        except NotLeaderError as exc:
            self._transmit(RESPONSE, (op_id, Reply(refused=True, hint=exc.leader_hint)))
            return
        self.process(server)

    def _get(self, op: ClientOp, server: SimServer, core: RaftCore) -> None:
        if "stale_reads" in self.flaws:
            self._serve(op.op_id, server)
            return
        ctx = f"kv-read:{op.op_id}".encode()
        core.read_index(ctx)
        self._asked[ctx] = (op.op_id, self.checker.max_committed)

    def _write(self, op: ClientOp, server: SimServer, core: RaftCore) -> None:
        if core.role is not Role.LEADER:
            raise NotLeaderError(core.leader)
        me = (server.name, server.incarnation)
        waiting = self._batching.setdefault(me, [])
        if not waiting:
            self.at(self.now + self.rng.uniform(*BATCH_WINDOW_S), FLUSH, me)
        waiting.append(op.op_id)

    def _flush(self, me: tuple[str, int]) -> None:
        """Propose the writes that queued on a server, in order, sharing entries."""
        op_ids = self._batching.pop(me, [])
        server = self.servers[me[0]]
        core = server.core
        if server.incarnation != me[1] or core is None:
            return  # crashed meanwhile: nothing was proposed, the clients time out
        ops = [self.workload.op(op_id) for op_id in op_ids]
        writes = [op.write() for op in ops]
        for group in batch_groups(writes):
            try:
                index = core.propose(stamp(cmd_writes([writes[i] for i in group]), self.now))
            except NotLeaderError as exc:
                refused = Reply(refused=True, hint=exc.leader_hint)
                for i in group:
                    self._transmit(RESPONSE, (ops[i].op_id, refused))
                continue
            self.proposed += 1
            self.batched += len(group) if len(group) > 1 else 0
            self._proposals[(*me, index)] = [
                (ops[i].op_id, core.term, slot) for slot, i in enumerate(group)
            ]
            for i in group:
                if "early_acks" in self.flaws and ops[i].kind != "cas":
                    self._transmit(RESPONSE, (ops[i].op_id, Reply(value=ops[i].value)))
        self.process(server)

    def _serve(self, op_id: int, server: SimServer) -> None:
        assert isinstance(server, KVSimServer)
        entry = server.kv.get(self.workload.op(op_id).key)
        value, index = (None, 0) if entry is None else (entry.value.decode(), entry.modify_index)
        self._transmit(RESPONSE, (op_id, Reply(value=value, modify_index=index)))

    def on_applied(self, server: SimServer, entry: Entry) -> None:
        super().on_applied(server, entry)  # the final marker's acknowledgement
        me = (server.name, server.incarnation)
        for op_id, term, slot in self._proposals.pop((*me, entry.index), ()):
            if entry.term != term:  # another leader's entry took the index
                reply = Reply(refused=True, hint=server.live().leader)
            else:
                result = server.sm_result
                if isinstance(result, KVResult):
                    result = result.of_write(slot)
                reply = self._write_reply(result)
                self.acked[entry.index] = entry.data
            self._transmit(RESPONSE, (op_id, reply))
        waiting = self._serving.get(me)
        if waiting:
            ready = [op_id for op_id, index in waiting if index <= server.sm_index]
            waiting[:] = [(o, i) for o, i in waiting if i > server.sm_index]
            for op_id in ready:
                self._serve(op_id, server)

    @staticmethod
    def _write_reply(result: Any) -> Reply:
        if not isinstance(result, KVResult) or result.error is not None:
            raise AssertionError(f"a client's write was refused by the store: {result}")
        entry = result.entry
        if entry is None:
            return Reply(ok=result.ok)
        return Reply(ok=result.ok, value=entry.value.decode(), modify_index=entry.modify_index)

    def on_read(self, server: SimServer, rs: ReadState) -> None:
        asked = self._asked.pop(rs.ctx, None)
        if asked is None:  # RaftSim's own workload (``run``) asked it
            super().on_read(server, rs)
            return
        op_id, at_least = asked
        if rs.index < at_least:
            raise RaftSafetyError(
                f"stale read on {server.name}: read index {rs.index} < commit {at_least}"
                " known when the read was asked"
            )
        self.reads_confirmed += 1
        if server.sm_index >= rs.index:
            self._serve(op_id, server)
        else:
            self.reads_deferred += 1
            self._serving.setdefault((server.name, server.incarnation), []).append(
                (op_id, rs.index)
            )


def run_kv_seed(seed: int, servers: int = 3, **kwargs: Any) -> KVSimResult:
    """One simulated KV run with default faults; raises on any violated property."""
    duration_s = kwargs.pop("duration_s", 10.0)
    return KVSim(seed, servers, **kwargs).run_kv(duration_s=duration_s)
