"""The sans-I/O Raft core: etcd-io/raft's shape (step, tick, ready, advance) in Python.

Modules, bottom up: ``types`` (entries, hard state, snapshots, Ready), ``messages`` and
``codec`` (the RPCs and their msgpack form), ``config`` (timing and flow control),
``log`` (the in-memory log and its marks), ``progress`` (what a leader knows of each
follower), ``state`` (fields and role transitions), ``replication`` (AppendEntries,
commit, snapshots, ReadIndex), ``election`` (terms, votes, ticks) and ``core``
(:class:`RaftCore`, the public API).  ``meshlite.testing.raft_sim`` runs clusters of
these cores deterministically under faults, with safety checkers after every step.

Driver contract, in short: restore with ``RaftCore(id, RaftConfig(), rng, *storage.load())``
(``bootstrap(voters)`` on a founding server's first boot), call ``tick()`` every
``tick_s``, ``step(decode_raft(bytes))`` for each peer message, then while
``has_ready()``: ``rd = ready()``; persist ``rd.hard_state``/``rd.snapshot``/``rd.entries``;
send ``rd.messages``; restore ``rd.snapshot`` and apply the NORMAL entries of
``rd.committed_entries``; serve ``rd.read_states`` once applied; ``advance(rd)``.
"""

from __future__ import annotations

from meshlite._core.raft.codec import MAX_RAFT_MESSAGE_BYTES, decode_raft, encode_raft
from meshlite._core.raft.config import RaftConfig
from meshlite._core.raft.core import RaftCore
from meshlite._core.raft.messages import (
    Append,
    AppendResp,
    Heartbeat,
    HeartbeatResp,
    InstallSnapshot,
    Message,
    TimeoutNow,
    Vote,
    VoteResp,
)
from meshlite._core.raft.types import (
    Entry,
    EntryKind,
    HardState,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SoftState,
    decode_voters,
    encode_voters,
)

__all__ = [
    "MAX_RAFT_MESSAGE_BYTES",
    "Append",
    "AppendResp",
    "Entry",
    "EntryKind",
    "HardState",
    "Heartbeat",
    "HeartbeatResp",
    "InstallSnapshot",
    "Message",
    "RaftConfig",
    "RaftCore",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SoftState",
    "TimeoutNow",
    "Vote",
    "VoteResp",
    "decode_raft",
    "decode_voters",
    "encode_raft",
    "encode_voters",
]
