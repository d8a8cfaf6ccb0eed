"""What the Raft leader should change next: voters and sessions of failed nodes.

Theory of operation
-------------------
Consul's leader reconciles Serf membership into Raft (``agent/consul/leader.go``
``reconcileMember``) and its autopilot cleans up dead servers
(``raft-autopilot``).  :func:`plan` is that policy as a pure function of what the
leader sees — the voters, each member's gossip status, since when it has been down,
and the nodes that own sessions — returning the changes to propose, most urgent first.
The driver proposes the first voter change only (Raft changes one voter at a time,
thesis §4.1; the core refuses another until it commits) and every session
invalidation.

Rules:

* a voter whose member *left* is removed at once (a graceful leave is a decision);
* an alive server that is not a voter is added (a new or restarted server);
* a voter down (dead, or gone from the member table) for ``dead_server_s`` is removed,
  one at a time, never the leader itself, and only while the rest still form a
  quorum of the current voters (otherwise the change could not commit anyway);
* a node that owns sessions and is dead or left has its sessions invalidated
  (``cmd_node_failed``), as Consul does when the node's ``serfHealth`` check fails.
  A node merely absent from the table is invalidated only after ``absent_grace_s``
  of leadership, so a leader that has just started (and not yet heard of everyone
  through push/pull) does not invalidate healthy nodes' sessions.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

import attrs

__all__ = ["AddVoter", "Autopilot", "NodeFailed", "RemoveVoter", "plan"]

DOWN = ("dead", "left")


@attrs.frozen
class AddVoter:
    name: str


@attrs.frozen
class RemoveVoter:
    name: str
    reason: str


@attrs.frozen
class NodeFailed:
    node: str


Action = AddVoter | RemoveVoter | NodeFailed


@attrs.define
class Autopilot:
    """The leader's memory between plans: since when each member has been down."""

    dead_server_s: float
    absent_grace_s: float
    down_since: dict[str, float] = attrs.field(factory=dict)
    leading_since: float | None = None

    def observe(self, statuses: Mapping[str, str], now: float, leading: bool) -> None:
        """Record the members' gossip statuses (name -> alive|suspect|dead|left) at ``now``."""
        if not leading:
            self.leading_since = None
        elif self.leading_since is None:
            self.leading_since = now
        for name, status in statuses.items():
            if status in DOWN:
                self.down_since.setdefault(name, now)
            else:
                self.down_since.pop(name, None)


def plan(
    me: str,
    voters: Set[str],
    statuses: Mapping[str, str],
    servers: Set[str],
    session_nodes: Set[str],
    pilot: Autopilot,
    now: float,
) -> list[Action]:
    """The changes the leader ``me`` should propose, most urgent first (module doc)."""
    out: list[Action] = [
        RemoveVoter(name, "left the mesh")
        for name in sorted(voters - {me})
        if statuses.get(name) == "left"
    ]
    out.extend(
        AddVoter(name)
        for name in sorted(servers - voters)
        if statuses.get(name) in ("alive", "suspect")
    )
    up = {v for v in voters if statuses.get(v) in ("alive", "suspect") or v == me}
    quorum_left = len(up) >= len(voters) // 2 + 1
    for name in sorted(voters - up - {me}):
        since = pilot.down_since.get(name)
        if since is None and name not in statuses:
            since = pilot.down_since.setdefault(name, now)
        if quorum_left and since is not None and now - since >= pilot.dead_server_s:
            out.append(RemoveVoter(name, f"down for {now - since:.0f}s"))
    grace_over = pilot.leading_since is not None and now - pilot.leading_since >= (
        pilot.absent_grace_s
    )
    for node in sorted(session_nodes):
        status = statuses.get(node)
        if status in DOWN or (status is None and grace_over):
            out.append(NodeFailed(node))
    return out
