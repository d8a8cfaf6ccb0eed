"""Drives one sans-I/O ``RaftCore`` on the mesh's loop: time, channels, storage, apply.

Theory of operation
-------------------
The loop of etcd-io/raft's ``raft.Node`` users (``contrib/raftexample``), on anyio:

* a tick task calls ``core.tick()`` every ``tick_s``;
* peer messages arrive on mesh *channels* (``_transport.py``: long-lived one-way sealed
  streams); ``on_message`` decodes and ``core.step``s them at once (never awaits);
* one ready task takes each ``Ready`` in order: **persist** hard state, entries and
  snapshot (``RaftStorage.save`` in a storage thread of its own, ``_serial_thread`` —
  while it runs, new proposals pile up in the core and the next Ready persists them
  together: group commit), then **send** the messages, then **apply** the snapshot and
  committed entries to the state machine, then ``advance``. Persist-before-send is what
  makes a vote or an acknowledgement survive a crash (thesis §3.8). A leader's Ready is
  sent first and persisted while the followers write theirs (``Ready.messages_first``,
  thesis §10.2.1): the leader's sync and the followers' overlap instead of adding up.
  On a leader, committed entries already on its disk (``Ready.durable_committed``) are
  applied, and their proposers woken, while the storage thread saves the rest: a write
  is answered one follower sync after it is proposed.  A follower applies after it
  has acknowledged: nobody waits on its apply, and the leader waits on its ack.  A
  Ready whose only news is a higher commit index persists nothing (etcd's
  ``MustSync``): Raft never needs the commit index back after a crash (it is learnt
  again from the leader, and a stale one only delays applying), so it rides along with
  the next save, or is written *unsynced* when the loop goes idle
  (``RaftStorage.save_commit``, queued to the storage thread and not waited for) — one
  sync fewer per replication round, and no sync for the next write to queue behind.
  In-memory storage is written on the loop itself: no sync to wait for, so a thread hop
  would only cost;
* outbound messages go to one queue per peer, drained by a task that keeps a channel
  open (reconnecting with backoff) and writes whatever has queued up as one batch; a
  full queue drops, as a lossy network would — Raft retransmits.  The channel seals
  each message itself (bound to the channel by an id and sequence numbers,
  ``_channel_seal.py``), so Raft traffic does not fill the mesh's replay cache.

``propose`` returns once the entry is applied on this server (the state machine's
result), or raises ``NotLeaderError`` if leadership moved and the entry was replaced.
Each proposer waits on its own index and is woken once, by the apply of that index (not
by every ``Ready``: with many writes in flight that was a wake-up per proposer per Ready).
``read_barrier`` is ReadIndex (thesis §6.4): a quorum confirms leadership, then we wait
until the state machine has applied the read index, so a read after it is linearizable.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from meshlite._core.raft import (
    Entry,
    EntryKind,
    HardState,
    Message,
    RaftCore,
    Ready,
    Role,
    Snapshot,
)
from meshlite._core.raft.codec import decode_raft, encode_raft
from meshlite._core.wire import Addr, DecodeError
from meshlite._raft_storage import RaftStorage
from meshlite._serial_thread import Job, SerialThread
from meshlite._transport import Channel, next_batch
from meshlite.errors import NotLeaderError

__all__ = ["CHANNEL_RAFT", "Proposal", "RaftNode"]

log = logging.getLogger("meshlite.raft")

# Channel frames start with one byte naming their user; Raft is the first.
CHANNEL_RAFT = b"R"
# Messages waiting for one peer's channel; beyond this we drop (Raft retransmits).
PEER_QUEUE_DEPTH = 1024
# Messages that queued up for a peer go out as one write, up to this many or this many
# bytes: one system call instead of one per message, ~1.5x the frames per CPU-second on
# loopback (benchmarks/bench_channels.py); bounded so a batch stays a small allocation.
PEER_BATCH_MESSAGES, PEER_BATCH_BYTES = 64, 1 << 20
# Turns of the event loop from queueing a message to its peer task's write system call.
PEER_WRITE_TURNS = 2
# Reconnect backoff to a peer whose channel failed, and the connect timeout.
RECONNECT_MIN_S, RECONNECT_MAX_S, CONNECT_TIMEOUT_S = 0.05, 2.0, 2.0

Apply = Callable[[Entry], Any]  # the state machine: a NORMAL entry in, its result out
Restore = Callable[[Snapshot], None]
# Connects a self-sealing channel (``Driver.open_channel``): ``None`` if unreachable in time.
OpenChannel = Callable[[Addr, float], Awaitable[Channel | None]]


async def _let_peers_write() -> None:
    """Give the peer tasks the turns of the loop they need to write what was just queued
    (woken, then the write after ``SocketStream.send``'s own checkpoint)."""
    for _ in range(PEER_WRITE_TURNS):
        await anyio.lowlevel.checkpoint()


class Proposal:
    """An entry this server appended, waited on until the entry at its index applies."""

    __slots__ = ("applied_term", "done", "index", "result", "term", "waiters")

    def __init__(self, index: int, term: int, waiters: int) -> None:
        self.index = index  # where it was appended
        self.term = term  # the term it was proposed in
        self.waiters = waiters  # callers still waiting for it (a batch has several)
        self.done = anyio.Event()
        self.applied_term = 0  # the term of the entry applied at its index
        self.result: Any = None

    def applied(self, term: int, result: Any) -> None:
        self.applied_term, self.result = term, result
        self.done.set()


class RaftNode:
    """One server's Raft, wired to the mesh driver's channels and a storage."""

    def __init__(
        self,
        core: RaftCore,
        storage: RaftStorage,
        apply: Apply,
        restore: Restore,
        *,
        open_channel: OpenChannel,
        address_of: Callable[[str], Addr | None],
        tick_s: float,
    ) -> None:
        self.core = core
        self._storage = storage
        self._storage_thread = SerialThread("meshlite-raft-storage")
        self._apply_fn = apply
        self._restore_fn = restore
        self._open_channel = open_channel
        self._address_of = address_of
        self._tick_s = tick_s
        self._wake = anyio.Event()
        self._progress = anyio.Event()  # set after every Ready is done
        self._proposals: dict[int, list[Proposal]] = {}  # by index: proposers waiting
        self._reads: dict[bytes, int] = {}  # read ctx -> confirmed index
        self._read_ids = itertools.count(1)
        self._peers: dict[str, MemoryObjectSendStream[bytes]] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self.applied = core.status()["applied"]
        self.dropped: dict[str, int] = {}
        # Called before each Ready is taken: a batcher proposes what queued up meanwhile.
        self.before_ready: Callable[[], None] = lambda: None
        self._saved_hs = core.hard_state()  # the hard state storage holds (as loaded)
        self._unsaved_hs: HardState | None = None  # a newer commit index, not saved yet
        self._commit_job: Job | None = None  # its unsynced write, not waited for yet

    # ------------------------------------------------------------------ running

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._tick_loop)
                tg.start_soon(self._ready_loop)
                task_status.started()
        finally:
            self._storage_thread.close()

    def kick(self) -> None:
        """Have the ready loop look for work (and call ``before_ready``) soon."""
        self._wake.set()

    async def _tick_loop(self) -> None:
        while True:
            await anyio.sleep(self._tick_s)
            self.core.tick()
            if self.core.has_ready():
                self.kick()

    async def _ready_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            self.before_ready()
            while self.core.has_ready():
                await self._handle(self.core.ready())
                self.before_ready()
            if self._unsaved_hs is not None:  # idle: write the commit index, unsynced
                self._save_commit(self._unsaved_hs)
                self._saved_hs, self._unsaved_hs = self._unsaved_hs, None

    async def _handle(self, rd: Ready) -> None:
        if rd.soft_state is not None and rd.soft_state.role is Role.LEADER:
            # Consul's "cluster leadership acquired"; the chaos checker reads the term.
            log.info("raft: leadership acquired for term %d", self.core.term)
        hs = rd.hard_state
        if (
            hs is not None
            and not rd.entries
            and rd.snapshot is None
            and (hs.term, hs.vote) == (self._saved_hs.term, self._saved_hs.vote)
        ):
            self._unsaved_hs, hs = hs, None  # only the commit moved: see the module doc
        if rd.messages_first:  # a leader: replicate while our own save runs
            for msg in rd.messages:
                self._send(msg)
        saving = hs is not None or bool(rd.entries) or rd.snapshot is not None
        job = self._start_save(hs or self._unsaved_hs, rd.entries, rd.snapshot) if saving else None
        # A leader applies the committed entries already on its disk at once, answering
        # their writers while the storage thread syncs the rest.  A follower saves and
        # acknowledges first: the leader waits on its acknowledgement, nobody on its apply.
        early = rd.durable_committed if rd.messages_first else 0
        for entry in rd.committed_entries[:early]:
            self._apply(entry)
        if early:  # their proposers are woken; wake reads and waits too, before the save
            self._progress.set()
            self._progress = anyio.Event()
        if saving:
            await self._end_save(job, hs)
        if not rd.messages_first:
            for msg in rd.messages:
                self._send(msg)
            if rd.messages and len(rd.committed_entries) > early:
                await _let_peers_write()  # the leader waits on our ack, nobody on our apply
        if rd.snapshot is not None:
            self._restore_fn(rd.snapshot)
            self.applied = rd.snapshot.index
        for entry in rd.committed_entries[early:]:
            self._apply(entry)
        for rs in rd.read_states:
            self._reads[rs.ctx] = rs.index
        self.core.advance(rd)
        self._progress.set()
        self._progress = anyio.Event()

    def _start_save(
        self, hs: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> Job | None:
        """Begin persisting; in memory it is done at once (``None``: nothing to wait for)."""
        if self._storage.in_memory:
            self._storage.save(hs, entries, snapshot)
            return None
        return self._storage_thread.submit(self._storage.save, hs, entries, snapshot)

    def _save_commit(self, hs: HardState) -> None:
        """Write a commit index unsynced (module doc).  On disk it is a job for the storage
        thread, behind the saves before it, that nobody waits for: the writers whose
        entries were just applied are answered first.  An error surfaces at the next save."""
        if self._storage.in_memory:
            self._storage.save_commit(hs)
        else:
            self._commit_job = self._storage_thread.submit(self._storage.save_commit, hs)

    async def _end_save(self, job: Job | None, hs: HardState | None) -> None:
        if job is not None:
            await self._storage_thread.wait(job)
        if self._commit_job is not None:  # it ran before ``job``: only an error is news
            commit_job, self._commit_job = self._commit_job, None
            await self._storage_thread.wait(commit_job)
        if hs is not None:
            self._saved_hs = hs
            if self._unsaved_hs is not None and self._unsaved_hs.commit <= hs.commit:
                self._unsaved_hs = None

    def _apply(self, entry: Entry) -> None:
        result = self._apply_fn(entry) if entry.kind is EntryKind.NORMAL else None
        self.applied = entry.index
        for proposal in self._proposals.pop(entry.index, ()):
            proposal.applied(entry.term, result)

    # ------------------------------------------------------------------ client side

    async def propose(self, data: bytes) -> Any:
        """Replicate ``data``; the state machine's result once applied here."""
        proposal = self.start_proposal(data)
        try:
            await proposal.done.wait()
        finally:
            self.drop_proposal(proposal)
        return self.outcome(proposal)

    def start_proposal(self, data: bytes, waiters: int = 1) -> Proposal:
        """Append ``data`` to the log now (``NotLeaderError`` on a follower).  Each of the
        ``waiters`` waits on the proposal's ``done``, takes :meth:`outcome` and then
        calls :meth:`drop_proposal` (also when cancelled)."""
        index = self.core.propose(data)
        proposal = Proposal(index, self.core.term, waiters)
        self._proposals.setdefault(index, []).append(proposal)
        self.kick()
        return proposal

    def drop_proposal(self, proposal: Proposal) -> None:
        """One waiter is done with ``proposal`` (answered, cancelled or timed out); once
        nobody waits, an unapplied proposal is forgotten."""
        proposal.waiters -= 1
        waiting = self._proposals.get(proposal.index, [])
        if proposal.waiters <= 0 and proposal in waiting:
            waiting.remove(proposal)
            if not waiting:
                del self._proposals[proposal.index]

    def outcome(self, proposal: Proposal) -> Any:
        """A done proposal's result; ``NotLeaderError`` if another leader's entry took
        its index (it can never commit)."""
        if proposal.applied_term != proposal.term:
            raise NotLeaderError(self.core.leader, "the proposal was overwritten by a new leader")
        return proposal.result

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds; re-checked after every Ready is handled."""
        while not predicate():
            await self._progress.wait()

    def propose_conf_change(self, *, add: str | None = None, remove: str | None = None) -> int:
        """Add or remove one voter (leader only); the index the change is appended at."""
        index = self.core.propose_conf_change(add=add, remove=remove)
        self.kick()
        return index

    def transfer_leadership(self, to: str) -> None:
        """Hand leadership to voter ``to`` (thesis §3.10); see ``RaftCore``."""
        self.core.transfer_leadership(to)
        self.kick()

    async def read_barrier(self) -> None:
        """Return once a read of the local state machine is linearizable (ReadIndex)."""
        ctx = next(self._read_ids).to_bytes(8, "big")
        self.core.read_index(ctx)  # NotLeaderError on a follower
        self.kick()
        try:
            while ctx not in self._reads or self.applied < self._reads[ctx]:
                await self._progress.wait()
        finally:
            self._reads.pop(ctx, None)

    # ------------------------------------------------------------------ network

    def on_message(self, payload: bytes) -> None:
        """A Raft message from a channel (without the channel prefix byte)."""
        try:
            msg = decode_raft(payload)
        except DecodeError:
            self.dropped["decode"] = self.dropped.get("decode", 0) + 1
            return
        self.core.step(msg)
        if self.core.has_ready():
            self.kick()

    def _send(self, msg: Message) -> None:
        queue = self._peers.get(msg.to)
        if queue is None:
            tx, rx = anyio.create_memory_object_stream[bytes](PEER_QUEUE_DEPTH)
            self._peers[msg.to] = queue = tx
            assert self._tg is not None
            self._tg.start_soon(self._peer_loop, msg.to, rx)
        try:
            queue.send_nowait(encode_raft(msg))
        except anyio.WouldBlock:
            self.dropped["queue_full"] = self.dropped.get("queue_full", 0) + 1

    async def _peer_loop(self, peer: str, rx: MemoryObjectReceiveStream[bytes]) -> None:
        delay = RECONNECT_MIN_S
        pending: list[bytes] = []  # a batch not yet written (retried on the next channel)
        while True:
            addr = self._address_of(peer)
            channel = None if addr is None else await self._open_channel(addr, CONNECT_TIMEOUT_S)
            if channel is None:
                await anyio.sleep(delay)
                delay = min(RECONNECT_MAX_S, delay * 2)
                continue
            delay = RECONNECT_MIN_S
            try:
                while True:
                    if not pending:
                        pending = await next_batch(rx, PEER_BATCH_MESSAGES, PEER_BATCH_BYTES)
                    await channel.send_many([CHANNEL_RAFT + m for m in pending])
                    pending = []
            except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                log.debug("raft channel to %s broke; reconnecting", peer)
            except ValueError:  # a message larger than a frame: drop the batch, reconnect
                log.exception("raft messages to %s dropped", peer)
                self.dropped["oversize"] = self.dropped.get("oversize", 0) + len(pending)
                pending = []
            finally:
                with anyio.CancelScope(shield=True):
                    await channel.aclose()
