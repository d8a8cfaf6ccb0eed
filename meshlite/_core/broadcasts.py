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

:class:`RecentSet` is a bounded memory of recently seen keys (warnings already logged, say).
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Callable, Hashable

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


# Within a transmit tier, memberlist's order (largest first, then newest) is packed into
# one unsigned 64-bit sort key, so a tier is an ``array`` of machine words: sorting and
# searching it never touches a Python object (in a simulated mesh of a thousand peers,
# every object touched per broadcast sent is a cache miss).  A key holds the size in its
# high half and the seq in its low half; 2**32 seqs last months even for a very busy
# peer, and then the queued ones are renumbered in order (``_renumber``).
_HALF_BITS = 32
_HALF_MAX = (1 << _HALF_BITS) - 1  # a bytes object of 4 GiB is out of the question here


def _sort_key(size: int, seq: int) -> int:
    return ((_HALF_MAX - size) << _HALF_BITS) | (_HALF_MAX - seq)


def _size_of(key: int) -> int:
    return _HALF_MAX - (key >> _HALF_BITS)


def _seq_of(key: int) -> int:
    return _HALF_MAX - (key & _HALF_MAX)


class TransmitLimitedQueue:
    """Broadcasts waiting to be piggybacked, each sent at most ``retransmit_limit`` times.

    memberlist keeps a b-tree ordered by (transmits, -size, -seq); we keep one sorted
    array of sort keys per transmit count (``_tiers[t]``) and walk them in order with
    ``bisect``: the same order, and inserting a broadcast that just went out into the
    next tier shifts only that tier.  A broadcast itself is ``(user key, data)`` under
    its seq, which never changes; it is not an object of its own, so the garbage
    collector has nothing per broadcast to trace.
    """

    def __init__(self, retransmit_mult: int, num_nodes: Callable[[], int]) -> None:
        self._mult = retransmit_mult
        self._num_nodes = num_nodes
        self._seq_by_key: dict[str, int] = {}
        self._by_seq: dict[int, tuple[str, bytes]] = {}
        self._tiers: list[array[int]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._seq_by_key)

    def __contains__(self, key: object) -> bool:
        return key in self._seq_by_key

    @property
    def _ranked(self) -> list[tuple[int, int]]:
        """The whole order as (transmits, sort key), next to send first (tests, debugging)."""
        return [(t, k) for t, keys in enumerate(self._tiers) for k in keys]

    def max_depth(self) -> int:
        """The current cap: ``max(MIN_QUEUE_DEPTH, 2 * n)`` (Serf's queue depth rule)."""
        return max(MIN_QUEUE_DEPTH, 2 * self._num_nodes())

    def queue(self, key: str, data: bytes) -> None:
        """Queue ``data``, replacing anything queued under the same ``key``."""
        old = self._seq_by_key.pop(key, None)
        if old is not None:
            tier, i = self._find(old)
            del self._tiers[tier][i]
            del self._by_seq[old]
        if self._seq == _HALF_MAX:
            self._renumber()
        self._seq += 1
        self._seq_by_key[key] = self._seq
        self._by_seq[self._seq] = (key, data)
        bisect.insort(self._tier(0), _sort_key(len(data), self._seq))
        self.prune(self.max_depth())

    def prune(self, max_retain: int) -> int:
        """Drop the lowest-ranked items beyond ``max_retain`` (memberlist ``Prune``).

        The lowest rank is the most transmitted, then the smallest, then the oldest:
        the end of the highest tier.  Returns how many were dropped.
        """
        dropped = 0
        while len(self._seq_by_key) > max(max_retain, 0):
            keys = next(keys for keys in reversed(self._tiers) if keys)
            key, _ = self._by_seq.pop(_seq_of(keys.pop()))
            del self._seq_by_key[key]
            dropped += 1
        return dropped

    def clear(self) -> None:
        self._seq_by_key.clear()
        self._by_seq.clear()
        self._tiers.clear()

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
        sent = [(tier, self._tiers[tier][i]) for tier, i in picked]
        self._remove_picked(picked)
        out = []
        for tier, sort_key in sent:
            seq = _seq_of(sort_key)
            key, data = self._by_seq[seq]
            out.append(data)
            if tier + 1 >= limit:
                del self._by_seq[seq]
                del self._seq_by_key[key]
            else:
                bisect.insort(self._tier(tier + 1), sort_key)
        return out

    def transmits(self, key: str) -> int | None:
        """How often the broadcast under ``key`` went out (``None`` if not queued)."""
        seq = self._seq_by_key.get(key)
        return None if seq is None else self._find(seq)[0]

    def _tier(self, transmits: int) -> array[int]:
        while len(self._tiers) <= transmits:
            self._tiers.append(array("Q"))
        return self._tiers[transmits]

    def _pick(self, overhead_per_msg: int, budget_bytes: int) -> list[tuple[int, int]]:
        """``(tier, index)`` of what fits, in rank order.

        Like memberlist's ``AscendRange``, jump straight to the largest item of the
        current tier that still fits (a binary search: within a tier, keys run from
        largest to smallest), so a nearly full datagram costs O(tiers x log n), not a
        walk over every queued item too large for the space left.
        """
        used = 0
        picked: list[tuple[int, int]] = []
        for tier, keys in enumerate(self._tiers):
            n = len(keys)
            i = 0
            while i < n:
                free = budget_bytes - used - overhead_per_msg
                if free <= 0:
                    return picked
                size = _size_of(keys[i])
                if size > free:  # usually the next one fits: no search then
                    i = bisect.bisect_left(keys, _sort_key(free, _HALF_MAX), lo=i)
                    if i == n:
                        break  # nothing in this tier fits: on to the next
                    size = _size_of(keys[i])
                used += overhead_per_msg + size
                picked.append((tier, i))
                i += 1
        return picked

    def _remove_picked(self, picked: list[tuple[int, int]]) -> None:
        """Take the picked keys out of their tiers (indexes ascend within each tier)."""
        start = 0
        while start < len(picked):
            tier = picked[start][0]
            end = start
            while end < len(picked) and picked[end][0] == tier:
                end += 1
            keys = self._tiers[tier]
            if picked[end - 1][1] == end - start - 1:  # a prefix, the usual case
                del keys[: end - start]
            else:
                for _, i in reversed(picked[start:end]):
                    del keys[i]
            start = end

    def _find(self, seq: int) -> tuple[int, int]:
        """``(tier, index)`` of the broadcast ``seq``: one binary search per tier.

        Only replacing a queued key (and ``transmits``) needs this; sending does not.
        """
        sort_key = _sort_key(len(self._by_seq[seq][1]), seq)
        for tier, keys in enumerate(self._tiers):
            i = bisect.bisect_left(keys, sort_key)
            if i < len(keys) and keys[i] == sort_key:
                return tier, i
        raise AssertionError("queue index out of sync")

    def _renumber(self) -> None:
        """Give the queued broadcasts seqs 1..n in their order, once 2**32 were used.

        Renumbering keeps the relative order of seqs, hence of the sort keys in every
        tier: the arrays are rewritten in place, not re-sorted.
        """
        new_seq = {old: new for new, old in enumerate(sorted(self._by_seq), start=1)}
        self._by_seq = {new_seq[old]: item for old, item in self._by_seq.items()}
        self._seq_by_key = {key: new_seq[old] for key, old in self._seq_by_key.items()}
        for keys in self._tiers:
            for i, sort_key in enumerate(keys):
                keys[i] = _sort_key(_size_of(sort_key), new_seq[_seq_of(sort_key)])
        self._seq = len(new_seq)


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
