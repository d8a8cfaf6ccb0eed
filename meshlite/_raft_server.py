"""One Raft server: storage, core, KV state machine and driver composed, with the KV API.

Theory of operation
-------------------
Consul's server (``agent/consul/server.go`` + ``fsm/``) in one object, not yet wired into
``Mesh`` (the lead does that, with forwarding):

* **Boot.**  ``RaftStorage`` (``data_dir/raft.db``, or memory) is loaded; a ``RaftCore`` is
  restored from its hard state, snapshot and log; the :class:`KVStore` is restored from
  the stored snapshot, and the committed entries after it are re-applied by the driver's
  first Readys (the core hands out every committed entry above its snapshot index).
* **Bootstrap** (``maybe_bootstrap``, Consul's ``maybeBootstrap``): a server with no stored
  state founds the cluster once it knows exactly ``bootstrap_expect`` servers, itself
  included.  Consul's rule is that ``bootstrap_expect`` must equal the number of initial
  servers and be the same on all of them; otherwise two groups could each bootstrap a
  cluster of their own.  A server with state never bootstraps again.
* **Apply.**  ``RaftNode`` applies NORMAL entries with ``KVStore.apply_entry``: the entry
  data is the command ``stamp``-ed with the leader's ``time.time()`` at proposal, so every
  server decides TTLs and lock delays on the same clock (``kv_commands.stamp``).
  Installed snapshots replace the store (``KVStore.restore``).
* **Snapshots** (thesis §5.1): every ``snapshot_threshold`` applied entries, the store is
  encoded at the applied index, the core compacts its log, and the snapshot is saved and
  the stored log trimmed in a worker thread.  A snapshot installed meanwhile by the leader
  is newer: storage refuses our older one, and we drop it.
* **KV API** (``_raft_server_kv.KVApi``): writes through the log, reads in Consul's
  default / consistent / stale modes, blocking reads by index.
* **Leader duties** (Consul's ``leader.go``): on winning a term, propose
  ``cmd_reset_session_timers`` (TTLs restart on failover); afterwards, propose
  ``cmd_expire_sessions`` whenever ``next_session_expiry_s`` is due.

Calls that need the leader raise ``NotLeaderError(leader_hint)`` on a follower.
"""

from __future__ import annotations

import builtins
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import attrs

from meshlite._core.kv import (
    KVResult,
    KVStore,
    cmd_expire_sessions,
    cmd_reset_session_timers,
)
from meshlite._core.raft import Entry, RaftConfig, RaftCore, Role, Snapshot
from meshlite._core.wire import Addr
from meshlite._kv_batcher import WriteBatcher
from meshlite._raft_node import OpenChannel, RaftNode
from meshlite._raft_server_kv import CONSISTENCY_MODES, Consistency, KVApi, KVRead
from meshlite._raft_storage import RaftStorage
from meshlite.errors import ConfigError, NotLeaderError

__all__ = ["CONSISTENCY_MODES", "Consistency", "KVRead", "RaftServer"]

log = logging.getLogger("meshlite.raft")

# The file inside data_dir (Consul keeps raft/raft.db too).
RAFT_DB_NAME = "raft.db"
# Snapshot after this many applied entries: Consul's SnapshotThreshold default.
DEFAULT_SNAPSHOT_THRESHOLD = 8192
# How often the server checks its duties (snapshots, session expiry): TTLs are >= 10 s,
# so a tenth of a second is far below any meaningful expiry error.
DUTY_INTERVAL_S = 0.1
# A duty proposal that does not commit in this long is abandoned and retried later.
DUTY_TIMEOUT_S = 5.0


class RaftServer(KVApi):
    """Storage, RaftCore, KVStore and RaftNode of one server, and the KV API on it."""

    def __init__(
        self,
        name: str,
        *,
        data_dir: str | os.PathLike[str] | None,
        open_channel: OpenChannel,
        address_of: Callable[[str], Addr | None],
        config: RaftConfig | None = None,
        snapshot_threshold: int = DEFAULT_SNAPSHOT_THRESHOLD,
        durable: bool = True,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if snapshot_threshold < 1:
            raise ConfigError(f"snapshot_threshold must be >= 1, got {snapshot_threshold!r}")
        self.name = name
        cfg = RaftConfig() if config is None else config
        path = None
        if data_dir is not None:
            os.makedirs(data_dir, exist_ok=True)
            path = os.path.join(os.fspath(data_dir), RAFT_DB_NAME)
        self._storage = RaftStorage.open(path, durable=durable)
        hard_state, snap, entries = self._storage.load()
        rng = random.Random() if rng is None else rng
        core = RaftCore(name, cfg, rng, hard_state, snap, entries)
        self.kv = KVStore() if snap is None else KVStore.restore(snap.data)
        self.node = RaftNode(
            core,
            self._storage,
            self._apply,
            self._restore,
            open_channel=open_channel,
            address_of=address_of,
            tick_s=cfg.tick_s,
        )
        self._threshold = snapshot_threshold
        self._clock = clock
        self._batcher = WriteBatcher(self.node, clock)
        self._changed = anyio.Event()  # set (and replaced) whenever a key changes
        self._reset_term = 0  # the term whose session timers reset was committed
        self.snapshots = 0  # snapshots taken by this server

    # ------------------------------------------------------------------ lifecycle

    @property
    def core(self) -> RaftCore:
        return self.node.core

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Drive the node and the server's duties until cancelled."""
        async with anyio.create_task_group() as tg:
            await tg.start(self.node.run)
            tg.start_soon(self._duties_loop)
            task_status.started()

    def on_message(self, payload: bytes) -> None:
        """A Raft message from a channel (without the ``CHANNEL_RAFT`` prefix byte)."""
        self.node.on_message(payload)

    def close(self) -> None:
        """Close the storage (after :meth:`run` ended); idempotent."""
        self._storage.close()

    def maybe_bootstrap(self, server_names: set[str], expect: int) -> bool:
        """Found the cluster if this server has no state and exactly ``expect`` servers
        (``server_names``, ourselves included) are known; True if it did.

        ``expect`` is Consul's ``bootstrap_expect``: it must equal the number of initial
        servers, the same on every one of them.  More servers than expected means the
        setting is wrong somewhere: we refuse (and log) rather than guess a voter set.
        """
        if expect < 1:
            raise ConfigError(f"bootstrap_expect must be >= 1, got {expect!r}")
        if self.name not in server_names:
            raise ConfigError(f"maybe_bootstrap: server_names must include {self.name!r}")
        status = self.core.status()
        if status["last_index"] != 0 or status["term"] != 0:
            return False  # stored state: bootstrapped before, or joined a cluster
        if len(server_names) > expect:
            log.warning(
                "raft: %d servers known but bootstrap_expect is %d; not bootstrapping"
                " (bootstrap_expect must equal the number of initial servers)",
                len(server_names),
                expect,
            )
            return False
        if len(server_names) < expect:
            return False
        self.core.bootstrap(sorted(server_names))
        return True

    # ------------------------------------------------------------------ state machine

    def _apply(self, entry: Entry) -> KVResult:
        result = self.kv.apply_entry(entry.index, entry.data)
        if result.touched:
            self._notify()
        return result

    def _restore(self, snapshot: Snapshot) -> None:
        self.kv = KVStore.restore(snapshot.data)
        self._notify()

    def _notify(self) -> None:
        # One event for all blocking readers: each re-checks its own index.  O(waiters)
        # per change; per-key wake-ups (KVResult.touched) are a later optimisation.
        self._changed.set()
        self._changed = anyio.Event()

    # ------------------------------------------------------------------ duties

    async def _duties_loop(self) -> None:
        while True:
            await anyio.sleep(DUTY_INTERVAL_S)
            await self._maybe_snapshot()
            if self.core.role is Role.LEADER:
                with anyio.move_on_after(DUTY_TIMEOUT_S):
                    await self._leader_duties()

    async def _maybe_snapshot(self) -> None:
        raft_log = self.core.log
        index = raft_log.applied  # the store holds exactly the entries up to here
        if index - raft_log.snap_index < self._threshold:
            return
        snap = self.core.compact(index, self.kv.snapshot())
        try:
            await anyio.to_thread.run_sync(self._persist_snapshot, snap)
        except ConfigError as exc:  # a newer snapshot was installed meanwhile
            log.debug("raft: snapshot at %d not stored: %s", index, exc)
            return
        self.snapshots += 1

    def _persist_snapshot(self, snap: Snapshot) -> None:
        self._storage.save(None, [], snap)
        self._storage.compact(snap.index)

    async def _leader_duties(self) -> None:
        term = self.core.term
        try:
            if self._reset_term != term:
                await self._propose(cmd_reset_session_timers())
                self._reset_term = term
                return
            due = self.kv.next_session_expiry_s()
            if due is not None and due <= self._clock():
                await self._propose(cmd_expire_sessions())
        except NotLeaderError:
            return

    def leader(self) -> str | None:
        """The leader this server knows (``/v1/status/leader``)."""
        return self.core.leader

    def peers(self) -> builtins.list[str]:
        """The voters (``/v1/status/peers``)."""
        return sorted(self.core.voters())

    async def stats(self) -> dict[str, Any]:
        """``core.status()`` plus storage counters, KV applied index and snapshots taken."""
        storage = await anyio.to_thread.run_sync(self._storage.stats)
        out = self.core.status()
        out["storage"] = attrs.asdict(storage)
        out["kv_applied"] = self.kv.last_index
        out["snapshots_taken"] = self.snapshots
        return out
