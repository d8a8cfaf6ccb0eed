"""The transmit-limited broadcast queue: what every datagram piggybacks.

Theory of operation
-------------------
SWIM (Das et al. 2002, §4.1 "infection-style dissemination") spreads membership updates
by piggybacking them on the probe traffic that flows anyway, each update retransmitted a
bounded number of times: ``retransmit_mult * ceil(log10(n + 1))`` (memberlist
``util.go: retransmitLimit``) — enough, with high probability, for an epidemic to reach
all ``n`` members, and no more.

This is memberlist's ``TransmitLimitedQueue`` (``queue.go``):

* Every broadcast has a *key*.  Queueing a broadcast whose key is already queued
  replaces the old one (memberlist's named broadcasts / ``Invalidates``): a newer alive
  or dead message about node ``x`` makes the queued older one pointless, and so does a
  newer user broadcast with the same user key.
* :meth:`TransmitLimitedQueue.get_broadcasts` fills a byte budget preferring the
  least-transmitted broadcasts (freshest news first); inside a transmit tier it takes
  the largest first, then the newest.  Each pick counts as one transmission; a
  broadcast that reaches the limit leaves the queue.
* The queue is bounded (memberlist leaves this to the caller: Serf prunes its queues at
  ``max(2 * n, 1024)``, and so do we, on every insert).  When over the cap we drop in
  memberlist ``Prune`` order — most-transmitted first, then smallest, then oldest —
  because a broadcast that has already gone out many times is the one the cluster is
  most likely to have heard; push/pull anti-entropy repairs whatever was lost.

:class:`RecentSet` is the bounded memory of payload digests used to deliver each user
broadcast once.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Hashable

import attrs

__all__ = ["MIN_QUEUE_DEPTH", "RecentSet", "TransmitLimitedQueue", "retransmit_limit"]

# Serf's MinQueueDepth: the cap on queued broadcasts never falls below this, whatever
# the cluster size, so a burst of user broadcasts in a small cluster is not pruned at
# once.  Above 512 members the cap is 2 * n: every member may have an alive *and* a
# dead/suspect broadcast in flight at the same time.
MIN_QUEUE_DEPTH = 1024


def retransmit_limit(retransmit_mult: int, n_members: int) -> int:
    """memberlist ``retransmitLimit``: ``mult * ceil(log10(n + 1))``."""
    node_scale = math.ceil(math.log10(max(n_members, 0) + 1))
    return retransmit_mult * node_scale


_Rank = tuple[int, int, int, str]


@attrs.define
class _Item:
    key: str
    data: bytes
    seq: int  # insertion order: larger is newer
    transmits: int = 0

    def rank(self) -> _Rank:
        """Fewest transmits, then largest, then newest first (memberlist ``Less``).

        ``seq`` is unique, so the trailing key never takes part in a comparison.
        """
        return (self.transmits, -len(self.data), -self.seq, self.key)


class TransmitLimitedQueue:
    """Broadcasts waiting to be piggybacked, each sent at most ``retransmit_limit`` times.

    memberlist keeps a b-tree ordered by rank; a sorted Python list with ``bisect`` gives
    the same walk in order (inserts and removals are a C ``memmove``, cheap at the queue
    sizes the cap allows).
    """

    def __init__(self, retransmit_mult: int, num_nodes: Callable[[], int]) -> None:
        self._mult = retransmit_mult
        self._num_nodes = num_nodes
        self._items: dict[str, _Item] = {}
        self._ranked: list[_Rank] = []  # ascending: the next to send first
        self._seq = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def max_depth(self) -> int:
        """The current cap: ``max(MIN_QUEUE_DEPTH, 2 * n)`` (Serf's queue depth rule)."""
        return max(MIN_QUEUE_DEPTH, 2 * self._num_nodes())

    def queue(self, key: str, data: bytes) -> None:
        """Queue ``data``, replacing anything queued under the same ``key``."""
        old = self._items.pop(key, None)
        if old is not None:
            self._unrank(old)
        self._seq += 1
        item = _Item(key, data, self._seq)
        self._items[key] = item
        bisect.insort(self._ranked, item.rank())
        self.prune(self.max_depth())

    def prune(self, max_retain: int) -> int:
        """Drop the lowest-ranked items beyond ``max_retain`` (memberlist ``Prune``).

        The lowest rank is the most transmitted, then the smallest, then the oldest.
        Returns how many were dropped.
        """
        dropped = 0
        while len(self._ranked) > max(max_retain, 0):
            del self._items[self._ranked.pop()[3]]
            dropped += 1
        return dropped

    def clear(self) -> None:
        self._items.clear()
        self._ranked.clear()

    def get_broadcasts(self, overhead_per_msg: int, budget_bytes: int) -> list[bytes]:
        """Broadcasts to send now, at most ``budget_bytes`` counting the per-message overhead.

        memberlist's ``GetBroadcasts``: one pass over the queue in rank order taking
        everything that still fits.  (memberlist's tier-by-tier b-tree walk picks the
        same set: the room left only shrinks, so an item skipped as too large never fits
        later.)  Each pick counts as a transmission.
        """
        picked = self._pick(overhead_per_msg, budget_bytes)
        if not picked:
            return []
        limit = retransmit_limit(self._mult, self._num_nodes())
        items = [self._items[self._ranked[i][3]] for i in picked]
        for i in reversed(picked):
            del self._ranked[i]
        for item in items:
            item.transmits += 1
            if item.transmits >= limit:
                del self._items[item.key]
            else:
                bisect.insort(self._ranked, item.rank())
        return [item.data for item in items]

    def transmits(self, key: str) -> int | None:
        """How often the broadcast under ``key`` went out (``None`` if not queued)."""
        item = self._items.get(key)
        return None if item is None else item.transmits

    def _pick(self, overhead_per_msg: int, budget_bytes: int) -> list[int]:
        """Indexes into ``_ranked`` of what fits, in rank order.

        Like memberlist's ``AscendRange``, jump straight to the largest item of the
        current tier that still fits (a binary search: within a tier, ranks run from
        largest to smallest), so a nearly full datagram costs O(tiers x log n), not a
        walk over every queued item too large for the space left.
        """
        ranked = self._ranked
        used = 0
        picked: list[int] = []
        i = 0
        while i < len(ranked):
            free = budget_bytes - used - overhead_per_msg
            if free <= 0:
                break
            tier = ranked[i][0]
            j = bisect.bisect_left(ranked, (tier, -free), lo=i)
            if j < len(ranked) and ranked[j][0] == tier:
                used += overhead_per_msg - ranked[j][1]
                picked.append(j)
                j += 1
            i = j
        return picked

    def _unrank(self, item: _Item) -> None:
        rank = item.rank()
        i = bisect.bisect_left(self._ranked, rank)
        assert self._ranked[i] == rank, "queue rank index out of sync"
        del self._ranked[i]


class RecentSet:
    """A first-in-first-out bounded set: remembers the last ``capacity`` keys added."""

    __slots__ = ("_capacity", "_keys")

    def __init__(self, capacity: int) -> None:
        assert capacity > 0, "a RecentSet needs room for at least one key"
        self._capacity = capacity
        self._keys: dict[Hashable, None] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._keys

    def add(self, key: Hashable) -> bool:
        """Remember ``key``; ``False`` if it was already remembered."""
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > self._capacity:
            del self._keys[next(iter(self._keys))]
        return True
