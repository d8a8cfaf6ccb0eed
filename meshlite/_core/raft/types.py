"""Raft value types: log entries, hard state, snapshots, and what a ``Ready`` hands out.

Theory of operation
-------------------
These are the nouns of Raft as etcd-io/raft names them (``raftpb.Entry``,
``raftpb.HardState``, ``raftpb.Snapshot``, ``raft.Ready``), as frozen attrs values so a
driver, a storage layer and a simulator can hold them without copying.

- :class:`HardState` is what must be on stable storage before a server answers anyone:
  ``currentTerm`` and ``votedFor`` (Ongaro's thesis, Figure 3.1), plus the commit index,
  which is not needed for safety but lets a restart re-apply without waiting for a leader.
- :class:`Entry` kinds: ``NORMAL`` carries the state machine's command; ``CONFIG`` carries
  the voter set after a single-server membership change (thesis §4.1: a server uses the
  latest configuration in its log, committed or not), encoded by :func:`encode_voters`;
  ``NOOP`` is the entry a new leader appends so that it can commit entries of earlier
  terms (thesis §3.6.2, §6.4).  Drivers apply only ``NORMAL`` entries to their state
  machine; the other two only move the applied index.
- :class:`Snapshot` is a state machine image at ``index``/``term`` with the voters of that
  index (thesis §5.1), replacing every entry up to it.
- :class:`Ready` is one batch of work for the driver (etcd-io/raft ``node.go``): persist
  ``hard_state``, ``snapshot`` and ``entries`` (in that order of importance: a snapshot
  that the stored log disagrees with replaces the whole stored log), then send
  ``messages``, then apply ``snapshot`` and ``committed_entries`` in order, then
  ``advance``.  Messages must not leave before their Ready is durable: a vote or an
  acknowledgement must survive a crash of the server that gave it.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import attrs
import msgpack

from meshlite._core.wire_checks import DecodeError, check_name, unpack

if TYPE_CHECKING:
    from meshlite._core.raft.messages import Message

__all__ = [
    "EMPTY_HARD_STATE",
    "MAX_VOTERS",
    "Entry",
    "EntryKind",
    "HardState",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SoftState",
    "decode_voters",
    "encode_voters",
]

# At most this many voters: Raft clusters are 3, 5 or 7 servers; anything much larger is
# a mistake or garbage, and bounds what a CONFIG entry may make us allocate.
MAX_VOTERS = 64


class EntryKind(enum.IntEnum):
    """What a log entry carries (append-only numbering: it is stored and sent)."""

    NORMAL = 0
    CONFIG = 1
    NOOP = 2


@attrs.frozen
class Entry:
    """One log entry: ``data`` is opaque to Raft (a command, a voter set, or empty)."""

    index: int
    term: int
    kind: EntryKind
    data: bytes


@attrs.frozen
class HardState:
    """The state a server persists before it sends anything (thesis Figure 3.1)."""

    term: int
    vote: str | None
    commit: int


EMPTY_HARD_STATE = HardState(term=0, vote=None, commit=0)


@attrs.frozen
class Snapshot:
    """A state machine image covering the log up to ``index`` (whose term is ``term``)."""

    index: int
    term: int
    voters: tuple[str, ...]
    data: bytes


class Role(enum.Enum):
    """A server's role (etcd-io/raft ``StateType``; pre-candidate from thesis §9.6)."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@attrs.frozen
class SoftState:
    """Volatile facts a driver may want to show: who leads, and our role."""

    leader: str | None
    role: Role


@attrs.frozen
class ReadState:
    """A confirmed read (thesis §6.4): reads for ``ctx`` may be served once the state
    machine has applied ``index``."""

    index: int
    ctx: bytes


@attrs.frozen
class Ready:
    """One batch of work for the driver; see the module docstring for the order."""

    hard_state: HardState | None
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None
    committed_entries: tuple[Entry, ...]
    messages: tuple[Message, ...]
    read_states: tuple[ReadState, ...]
    soft_state: SoftState | None
    # The messages may leave before this Ready is persisted (thesis §10.2.1, etcd's
    # raftNode): set only on a leader whose term and vote are already on disk.  See
    # ``RaftCore.ready``.
    messages_first: bool = False
    # How many of ``committed_entries`` (the first ones) this server had persisted before
    # this Ready: committed and durable here, they may be applied — and answered — while
    # the Ready's own entries are being saved (etcd applies alongside its WAL write).
    durable_committed: int = 0


def encode_voters(voters: tuple[str, ...]) -> bytes:
    """The data of a ``CONFIG`` entry: the whole voter set after the change, sorted."""
    return msgpack.packb(sorted(voters))


def decode_voters(data: bytes) -> tuple[str, ...]:
    """Inverse of :func:`encode_voters`; anything malformed raises :class:`DecodeError`."""
    value = unpack(data, "voter set", max_str_len=4096, max_bin_len=0, max_array_len=MAX_VOTERS)
    if type(value) is not list:
        raise DecodeError("voter set must be a list")
    voters = tuple(check_name(v) for v in value)
    if len(set(voters)) != len(voters):
        raise DecodeError("voter set has duplicates")
    return voters
