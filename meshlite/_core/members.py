"""The member table: who is alive, suspect, dead or left, by incarnation.

Theory of operation
-------------------
SWIM (Das et al. 2002, §4.2) orders news about a member by its *incarnation number*,
which only that member increments (to refute a suspicion, or to publish new meta).
This table applies memberlist's precedence rules (``state.go: aliveNode, suspectNode,
deadNode``):

* **alive** ``(i)`` is news about a known member only if ``i > incarnation`` (so it
  overrides suspect/dead only with a strictly higher number); an unknown member is
  added whatever ``i``.  Alive about ourselves with a higher ``i``, or with our ``i``
  but different meta, is somebody's stale or false view: we *refute*.
* **suspect** ``(i)`` applies to an *alive* member when ``i >= incarnation``.  (The
  caller handles confirmations of an already-suspect member: ``suspicion.py``.)
* **dead** ``(i)`` applies to a member not already dead/left when ``i >= incarnation``;
  it is a graceful **left** when the sender is the member itself.
* Suspect or dead about ourselves is refuted with ``incarnation = max(mine, i) + 1``,
  except dead while we are leaving (that is our own goodbye).

**Name conflicts.**  An alive message can carry a known name with another address:
memberlist refuses it unless the old entry is left/dead.  We also refuse it while the old
entry is alive or suspect, *unless its incarnation is strictly higher* — a restarted
peer on a new port (say, bound to port 0) refutes the suspicion its old address earns
and so wins with a higher incarnation, while two live processes sharing one name never
out-bid each other (neither refutes an address conflict) and the older claim stays.
Each refused conflict is reported once per (name, address) as a warning ``Log``.

Dead and left entries stay for ``gossip_to_the_dead_s`` (so we keep telling a possibly
partitioned member it is dead, letting it refute), then :meth:`MemberTable.reap`
forgets them.  The table is pure: time is an argument, changes come back as
:class:`Verdict` values for the SWIM core to act on.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator

import attrs

from meshlite._core.broadcasts import RecentSet
from meshlite._core.events import Addr, Log, Member, MemberEvent, MemberEventKind, Status
from meshlite._core.outbox import INFO, WARNING
from meshlite._core.wire import Alive, Dead, NodeState, Suspect

__all__ = ["IGNORED", "Entry", "MemberTable", "Verdict", "fmt_addr"]

# Distinct (name, address) conflicts reported; a flood of conflicting alives (say, a
# misconfigured fleet where every process has the same name) logs this many lines at
# most before older ones are forgotten and may be reported again.
CONFLICTS_REMEMBERED = 256

_GONE = (Status.DEAD, Status.LEFT)
# str(status), looked up: every membership event renders one.
_STATUS_NAMES = {s: str(s) for s in Status}


@attrs.define
class Entry:
    """One member as this peer sees it (mutable; the table owns it)."""

    name: str
    addr: Addr
    incarnation: int
    status: Status
    meta: dict[str, str]
    state_change_s: float
    order_index: int = -1  # where the table's _order list holds this name

    def to_member(self) -> Member:
        host, port = self.addr
        status = _STATUS_NAMES[self.status]
        return Member(self.name, host, port, status, self.incarnation, dict(self.meta))

    def node_state(self) -> NodeState:
        return NodeState(self.name, self.addr, self.incarnation, int(self.status), self.meta)


@attrs.frozen
class Verdict:
    """What applying one message did.

    ``accepted``: the table changed; re-gossip the message.  ``refuted``: the message
    accused us; we now carry this incarnation and must broadcast our alive.  ``event``
    and ``log`` go to the application and the operator.
    """

    accepted: bool = False
    event: MemberEvent | None = None
    refuted: int | None = None
    log: Log | None = None


IGNORED = Verdict()


class MemberTable:
    """Members by name, including the local member."""

    def __init__(
        self, name: str, addr: Addr, meta: dict[str, str], now: float, incarnation: int = 0
    ) -> None:
        self.local_name = name
        self.leaving = False
        self._entries: dict[str, Entry] = {}
        self._order: list[str] = []  # the names again, for O(1) random picks
        self._gone_since: dict[str, float] = {}  # dead/left peers -> state_change_s
        # min(_gone_since.values()), None once a change made it stale: asked after every
        # input, it must not cost a walk over every dead peer of a large mesh.
        self._oldest_gone_s: float | None = math.inf
        self._conflicts = RecentSet(CONFLICTS_REMEMBERED)
        # Moves with every change to what members() returns: a reader that derives
        # something from the table (a client's route to the Raft leader) recomputes it
        # only when this moved.
        self.version = 0
        self._insert(Entry(name, addr, incarnation, Status.ALIVE, dict(meta), now))

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def get(self, name: str) -> Entry | None:
        return self._entries.get(name)

    @property
    def local(self) -> Entry:
        return self._entries[self.local_name]

    def members(self) -> list[Member]:
        return [self._entries[n].to_member() for n in sorted(self._entries)]

    def node_states(self) -> tuple[NodeState, ...]:
        """The full table as push/pull carries it."""
        return tuple(e.node_state() for e in self._entries.values())

    def local_alive(self) -> Alive:
        me = self.local
        return Alive(me.incarnation, me.name, me.addr, dict(me.meta))

    def random_entries(
        self, k: int, rng: random.Random, exclude: Callable[[Entry], bool]
    ) -> list[Entry]:
        """Up to ``k`` distinct random entries not excluded (memberlist ``kRandomNodes``).

        At most ``3 * n`` random draws: exhaustive enough for small tables, and O(k)
        rather than O(n) for large ones where ``k << n``.
        """
        n = len(self._order)
        picked: dict[str, Entry] = {}
        for _ in range(3 * n):
            if len(picked) >= k:
                break
            entry = self._entries[self._order[rng.randrange(n)]]
            if entry.name not in picked and not exclude(entry):
                picked[entry.name] = entry
        return list(picked.values())

    # ------------------------------------------------------------------ messages

    def is_old_alive(self, name: str, incarnation: int, addr: Addr) -> bool:
        """Whether an alive about ``name`` would be ignored as old news (see below)."""
        entry = self._entries.get(name)
        return (
            entry is not None
            and incarnation <= entry.incarnation
            and addr == entry.addr
            and name != self.local_name
        )

    def apply_alive(self, msg: Alive, now: float) -> Verdict:
        entry = self._entries.get(msg.node)
        is_local = msg.node == self.local_name
        # Old news about a peer at the address we know: each broadcast reaches every peer
        # about retransmit_limit times and only the first is news, so this is most
        # messages of a busy mesh.  The rules below would ignore it too; decide it first
        # (is_old_alive, written out: this runs for every message received).
        if (
            entry is not None
            and msg.incarnation <= entry.incarnation
            and msg.addr == entry.addr
            and not is_local
        ):
            return IGNORED
        if is_local and self.leaving:
            return IGNORED
        if entry is None:
            entry = Entry(msg.node, msg.addr, msg.incarnation, Status.ALIVE, dict(msg.meta), now)
            self._insert(entry)
            return Verdict(True, MemberEvent(MemberEventKind.JOIN, entry.to_member()))
        log = None
        moved = False
        if entry.addr != msg.addr:
            moved, log = self._address_conflict(entry, msg)
            if not moved:
                return Verdict(log=log)
        if is_local:
            return self._alive_about_us(entry, msg)
        if msg.incarnation <= entry.incarnation and not moved:
            return IGNORED
        old_status, old_meta, old_addr = entry.status, entry.meta, entry.addr
        entry.incarnation, entry.meta, entry.addr = msg.incarnation, dict(msg.meta), msg.addr
        self.version += 1
        if old_status != Status.ALIVE:
            self._set_status(entry, Status.ALIVE, now)
        if old_status in _GONE:
            kind: MemberEventKind | None = MemberEventKind.JOIN
        elif old_status == Status.SUSPECT:
            kind = MemberEventKind.ALIVE
        elif old_meta != entry.meta or old_addr != entry.addr:
            kind = MemberEventKind.UPDATE
        else:
            kind = None
        event = None if kind is None else MemberEvent(kind, entry.to_member())
        return Verdict(True, event, log=log)

    def apply_suspect(self, msg: Suspect, now: float) -> Verdict:
        entry = self._entries.get(msg.node)
        if entry is None or msg.incarnation < entry.incarnation or entry.status != Status.ALIVE:
            return IGNORED
        if msg.node == self.local_name:
            inc = self.refute(msg.incarnation)
            return Verdict(
                refuted=inc, log=Log(WARNING, f"Refuting a suspect message (from: {msg.sender})")
            )
        entry.incarnation = msg.incarnation
        self._set_status(entry, Status.SUSPECT, now)
        return Verdict(True, MemberEvent(MemberEventKind.SUSPECT, entry.to_member()))

    def apply_dead(self, msg: Dead, now: float) -> Verdict:
        entry = self._entries.get(msg.node)
        if entry is None or msg.incarnation < entry.incarnation or entry.status in _GONE:
            return IGNORED
        if msg.node == self.local_name and not self.leaving:
            inc = self.refute(msg.incarnation)
            return Verdict(
                refuted=inc, log=Log(WARNING, f"Refuting a dead message (from: {msg.sender})")
            )
        left = msg.sender == msg.node
        entry.incarnation = msg.incarnation
        self._set_status(entry, Status.LEFT if left else Status.DEAD, now)
        kind = MemberEventKind.LEFT if left else MemberEventKind.DEAD
        return Verdict(True, MemberEvent(kind, entry.to_member()))

    # ------------------------------------------------------------------ local member

    def refute(self, accused_incarnation: int) -> int:
        """Take an incarnation beating ``accused_incarnation`` (memberlist ``refute``)."""
        me = self.local
        me.incarnation = max(me.incarnation + 1, accused_incarnation + 1)
        self.version += 1
        return me.incarnation

    def set_local_meta(self, meta: dict[str, str]) -> Alive:
        """New meta under a new incarnation; the alive message to broadcast."""
        me = self.local
        me.meta = dict(meta)
        me.incarnation += 1
        self.version += 1
        return self.local_alive()

    def leave_message(self) -> Dead:
        """Start leaving: our goodbye, ``Dead`` from ourselves with incarnation + 1."""
        self.leaving = True
        me = self.local
        return Dead(me.incarnation + 1, me.name, me.name)

    # ------------------------------------------------------------------ reaping

    def next_reap_s(self, keep_s: float) -> float | None:
        """When the oldest dead/left peer is due to be forgotten (``None``: nobody)."""
        if not self._gone_since:
            return None
        return self._oldest_gone() + keep_s

    def reap(self, now: float, keep_s: float) -> list[MemberEvent]:
        """Forget peers dead or left for ``keep_s``; their ``REAP`` events."""
        if not self._gone_since or self._oldest_gone() + keep_s > now:
            return []
        due = [n for n, since in self._gone_since.items() if since + keep_s <= now]
        events = []
        for name in due:
            entry = self._remove(name)
            events.append(MemberEvent(MemberEventKind.REAP, entry.to_member()))
        return events

    # ------------------------------------------------------------------ internals

    def _alive_about_us(self, me: Entry, msg: Alive) -> Verdict:
        if msg.incarnation < me.incarnation:
            return IGNORED
        if msg.incarnation == me.incarnation and msg.meta == me.meta:
            return IGNORED
        inc = self.refute(msg.incarnation)
        text = (
            f"Refuting an alive message for {msg.node} (incarnation {msg.incarnation}, "
            f"meta {msg.meta!r}); ours is now {inc} with meta {me.meta!r}"
        )
        return Verdict(refuted=inc, log=Log(WARNING, text))

    def _address_conflict(self, entry: Entry, msg: Alive) -> tuple[bool, Log | None]:
        """Whether an alive with a new address may move ``entry``, and what to log."""
        old, new = fmt_addr(entry.addr), fmt_addr(msg.addr)
        if entry.name != self.local_name and entry.status in _GONE:
            text = f"Updating address for {entry.status} node {entry.name} from {old} to {new}"
            return True, Log(INFO, text)
        if entry.name != self.local_name and msg.incarnation > entry.incarnation:
            text = (
                f"Node {entry.name} moved from {old} to {new} (incarnation "
                f"{msg.incarnation} > {entry.incarnation}): accepting the newer claim"
            )
            return True, Log(WARNING, text)
        if not self._conflicts.add((entry.name, msg.addr)):
            return False, None
        text = (
            f"Name conflict: node {entry.name} is {entry.status} at {old} (incarnation "
            f"{entry.incarnation}) but a peer at {new} claims the same name (incarnation "
            f"{msg.incarnation}); keeping {old}. A restarted peer takes the name over once "
            "the old address stops answering; two live processes never will: give every "
            "process a unique name."
        )
        return False, Log(WARNING, text)

    def _set_status(self, entry: Entry, status: Status, now: float) -> None:
        entry.status = status
        self.version += 1
        entry.state_change_s = now
        if status in _GONE and entry.name != self.local_name:
            self._set_gone(entry.name, now)
        else:
            self._set_gone(entry.name, None)

    def _set_gone(self, name: str, since: float | None) -> None:
        """Record (or, with ``None``, forget) when ``name`` died or left."""
        old = self._gone_since.pop(name, None)
        if since is not None:
            self._gone_since[name] = since
        oldest = self._oldest_gone_s
        if oldest is not None and (old is None or old > oldest):
            self._oldest_gone_s = oldest if since is None else min(oldest, since)
        else:  # the oldest may be gone: find it again when asked
            self._oldest_gone_s = None

    def _oldest_gone(self) -> float:
        if self._oldest_gone_s is None:
            self._oldest_gone_s = min(self._gone_since.values(), default=math.inf)
        return self._oldest_gone_s

    def _insert(self, entry: Entry) -> None:
        self.version += 1
        self._entries[entry.name] = entry
        entry.order_index = len(self._order)
        self._order.append(entry.name)

    def _remove(self, name: str) -> Entry:
        """Forget ``name``: the last name of ``_order`` takes its place (O(1))."""
        entry = self._entries.pop(name)
        self.version += 1
        self._set_gone(name, None)
        last = self._order.pop()
        if last != name:
            self._order[entry.order_index] = last
            self._entries[last].order_index = entry.order_index
        return entry


def fmt_addr(addr: Addr) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
