"""Raft tunables, in ticks of ``tick_s`` as etcd-io/raft counts them.

Theory of operation
-------------------
The core never reads a clock: the driver calls ``RaftCore.tick()`` every ``tick_s`` and
every timeout is a number of ticks (etcd-io/raft ``Config.ElectionTick`` /
``HeartbeatTick``).  A follower that hears no leader for a randomized timeout in
``[election_ticks, 2 * election_ticks)`` starts an election (thesis §3.4: randomization
makes split votes rare); the leader heartbeats every ``heartbeat_ticks``.  Defaults: 50 ms
ticks, elections after 0.5-1 s of silence, heartbeats every 50 ms.  Consul's are slower:
hashicorp/raft ``config.go`` ``DefaultConfig`` has a 1 s heartbeat timeout and a 1 s
election timeout, which Consul multiplies by ``raft_multiplier`` (5 by default); on a LAN
or loopback a round trip is well under a millisecond, so ten heartbeats fit in the
shortest election timeout and a failover takes about a second.

Replication flow control follows etcd-io/raft: at most ``max_append_entries`` entries and
``max_append_bytes`` bytes per Append (``MaxSizePerMsg``; Consul's ``MaxAppendEntries`` is
64), and at most ``max_inflight_msgs`` unacknowledged Appends per follower
(``MaxInflightMsgs``): the pipeline window.  Only full batches are pipelined
(``hold_partial_appends``): while an Append is in flight to a follower, entries that would
not fill one wait for its acknowledgement and then go together — Nagle's rule for Raft.
Under load this turns many small Appends (one per proposal burst, each a follower sync,
an acknowledgement and a commit round) into fewer, larger ones, which is what a
CPU-bound server needs; a follower catching up, or a stream that fills whole batches,
still gets the full window.  The price: an Append that is lost holds the entries behind
it until the follower's next heartbeat response (one heartbeat, 50 ms), which frees its
slot; a leadership transfer's target is never held.  hashicorp/raft ``replication.go`` pipelines
only while things look healthy and falls back to one RPC at a time on any error; here a
rejection drops just that follower back to probing (one Append per heartbeat) until an
Append is accepted again.

``unsafe_mutations`` deliberately breaks the algorithm.  It exists only so the tests can
show that the simulation's checkers catch a broken core (a checker that cannot fail
proves nothing); nothing else may set it.
"""

from __future__ import annotations

from typing import Any

import attrs

from meshlite.errors import ConfigError

__all__ = ["MUTATIONS", "RaftConfig"]

# Known mutations: grant votes without the "log at least as up-to-date" check (thesis
# §3.6.1); commit entries of earlier terms by counting replicas (thesis §3.6.2, Figure
# 3.7 — the "figure 8" scenario); answer ReadIndex at once, without asking a quorum
# whether we still lead (thesis §6.4 step 3); let every server, not only a leader, send
# before it persists (votes and acknowledgements that a crash can take back: §3.8).
MUTATIONS = frozenset(
    {"vote_without_log_check", "commit_any_term", "read_without_quorum", "send_before_persist"}
)


def _at_least_one(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 1:
        raise ConfigError(f"RaftConfig.{attribute.name} must be >= 1, got {value!r}")


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ConfigError(f"RaftConfig.{attribute.name} must be > 0, got {value!r}")


def _mutations(_inst: object, _attribute: attrs.Attribute[Any], value: frozenset[str]) -> None:
    if unknown := set(value) - MUTATIONS:
        raise ConfigError(f"unknown Raft mutations {sorted(unknown)}; known: {sorted(MUTATIONS)}")


@attrs.frozen
class RaftConfig:
    """Timing and flow control of one Raft server (see the module docstring)."""

    tick_s: float = attrs.field(default=0.05, validator=_positive)
    election_ticks: int = attrs.field(default=10, validator=_at_least_one)
    heartbeat_ticks: int = attrs.field(default=1, validator=_at_least_one)
    # Pre-vote (thesis §9.6) keeps a partitioned server from raising everyone's term when
    # it comes back; check-quorum (§6.2) makes a leader that cannot hear a majority step
    # down, and makes followers ignore votes while their leader is alive (a lease).
    pre_vote: bool = True
    check_quorum: bool = True
    max_append_entries: int = attrs.field(default=64, validator=_at_least_one)
    # 1 MiB per Append: large enough to amortise per-message costs, small enough that
    # one slow follower's catch-up does not delay heartbeats behind it on the stream.
    max_append_bytes: int = attrs.field(default=1024 * 1024, validator=_at_least_one)
    # 256 Appends in flight per follower: etcd's server uses 512 (MaxInflightMsgs); 256
    # batches of 64 entries keep a loopback pipe full.
    max_inflight_msgs: int = attrs.field(default=256, validator=_at_least_one)
    # Entries that would not fill an Append wait for the one in flight (see above).
    # Three servers on loopback, interleaved A/B (docs/benchmarks.md): 16 writers 1.19x
    # the writes per second with 0.71x the servers' CPU per write, 64 writers 1.31x,
    # one writer unchanged (nothing is in flight when it writes).
    hold_partial_appends: bool = True
    unsafe_mutations: frozenset[str] = attrs.field(
        default=frozenset(), converter=frozenset, validator=_mutations
    )

    def __attrs_post_init__(self) -> None:
        if self.election_ticks <= self.heartbeat_ticks:
            raise ConfigError(
                f"RaftConfig.election_ticks ({self.election_ticks}) must exceed"
                f" heartbeat_ticks ({self.heartbeat_ticks}): followers would time out"
                " between heartbeats"
            )

    @property
    def election_timeout_s(self) -> float:
        """The shortest election timeout, in seconds (the longest is twice this)."""
        return self.election_ticks * self.tick_s
