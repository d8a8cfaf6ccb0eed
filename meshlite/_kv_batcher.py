"""Single-key KV writes that reach the leader together share one Raft entry.

Theory of operation
-------------------
Much of what a write costs the servers is paid per Raft entry: encoding it into every
follower's Append, a row in each server's sqlite log, decoding and stepping it on each
follower, waking its proposer.  Under load many writes reach the leader at once (a
client's concurrent calls arrive in one read of its connection), so the leader lets
them share entries, as a transaction of independent writes.

:meth:`WriteBatcher.write` queues a put or delete of one key (``kv_commands.put_op`` /
``delete_op``) and kicks the Raft node's ready loop; just before that loop takes its next
Ready it calls :meth:`WriteBatcher.flush` (``RaftNode.before_ready``), which proposes all
that queued up since its last turn.  ``kv_commands.batch_groups`` cuts the queue, in
order, into entries of distinct keys (``cmd_batch``; a write alone is its plain command),
so every ModifyIndex still names one version of one key.  Nothing waits for a batch to
fill: an idle leader proposes a lone write in the same loop turn as it always did; a busy
one, whose ready loop is saving or sending, gathers what arrives meanwhile (etcd's raft
node batches proposals the same way, draining its proposal channel each turn).

Each writer waits for its entry to apply here and takes its own result from
``KVResult.batch``: the same outcome it would have had alone (distinct keys, applied in
queue order; concurrent writes may be ordered either way).  A writer cancelled before the
flush leaves the queue (nothing is proposed for it); after it, the write is in the log
and goes on without its writer, as a lone write does.  If this server no longer leads
when the flush runs, every queued write gets ``NotLeaderError``: nothing was proposed, so
the caller may safely retry at the leader.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio

from meshlite._core.kv import KVResult, TxnOp, batch_groups, cmd_writes, stamp
from meshlite._raft_node import Proposal, RaftNode
from meshlite.errors import ConfigError, NotLeaderError

__all__ = ["WriteBatcher"]


class _Queued:
    """One write between :meth:`WriteBatcher.write` and its flush."""

    __slots__ = ("error", "flushed", "op", "proposal", "slot")

    def __init__(self, op: TxnOp) -> None:
        self.op = op
        self.flushed = anyio.Event()
        self.proposal: Proposal | None = None  # the entry it went into
        self.slot = 0  # its place among that entry's writes
        self.error: Exception | None = None  # why it was not proposed


class WriteBatcher:
    """Queues single-key writes for the ready loop to propose together (module doc)."""

    def __init__(self, node: RaftNode, clock: Callable[[], float]) -> None:
        self._node = node
        self._clock = clock
        self._queue: list[_Queued] = []
        self.entries = self.writes = 0  # proposed so far: entries, and the writes in them
        node.before_ready = self.flush

    async def write(self, op: TxnOp) -> KVResult:
        """Propose ``op`` (a checked single-key write) and return its own result once
        applied here; ``NotLeaderError`` if this server does not lead."""
        (outcome,) = await self.write_many([op])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def write_many(self, ops: Sequence[TxnOp]) -> list[KVResult | Exception]:
        """:meth:`write` for several writes at once (a client's batch call): each one's
        result, or the ``NotLeaderError`` / ``ConfigError`` it alone would have raised."""
        queued = self._enqueue(ops)
        outcomes: list[KVResult | Exception] = []
        try:
            for q in queued:
                try:
                    outcomes.append(await self._outcome(q))
                except (NotLeaderError, ConfigError) as exc:
                    outcomes.append(exc)
        except BaseException:
            for q in queued[len(outcomes) :]:
                self._abandon(q)
            raise
        return outcomes

    def _enqueue(self, ops: Sequence[TxnOp]) -> list[_Queued]:
        queued = [_Queued(op) for op in ops]
        self._queue.extend(queued)
        self._node.kick()
        return queued

    async def _outcome(self, queued: _Queued) -> KVResult:
        # A batch's writes share their flush and their entry: only the first of them
        # waits, the rest find both done (and skip the turn of the loop a wait costs).
        if not queued.flushed.is_set():
            await queued.flushed.wait()
        if queued.error is not None:
            raise queued.error
        proposal = queued.proposal
        assert proposal is not None
        if not proposal.done.is_set():
            await proposal.done.wait()
        self._node.drop_proposal(proposal)
        queued.proposal = None  # answered: nothing to abandon
        result: KVResult = self._node.outcome(proposal)
        return result.of_write(queued.slot)

    def _abandon(self, queued: _Queued) -> None:
        """Its writer gave up (cancelled): forget it, before or after the flush."""
        if queued.proposal is not None:
            self._node.drop_proposal(queued.proposal)
            queued.proposal = None
        elif not queued.flushed.is_set():
            self._queue.remove(queued)

    def flush(self) -> None:
        """Propose everything queued, in order, in as few entries as the rules allow."""
        if not self._queue:
            return
        queue, self._queue = self._queue, []
        now = self._clock()
        for group in batch_groups([q.op for q in queue]):
            members = [queue[i] for i in group]
            ops = [m.op for m in members]
            try:
                proposal = self._node.start_proposal(stamp(cmd_writes(ops), now), len(members))
            except (NotLeaderError, ConfigError) as exc:
                for m in members:
                    m.error = exc
                    m.flushed.set()
                continue
            self.entries += 1
            self.writes += len(members)
            for slot, m in enumerate(members):
                m.proposal, m.slot = proposal, slot
                m.flushed.set()
