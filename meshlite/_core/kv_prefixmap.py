"""A string-keyed map kept in key order, with prefix scans: the KV store's index.

Theory of operation
-------------------
Consul keeps its KV table in a radix tree (``go-memdb`` over ``go-immutable-radix``),
so ``list(prefix)``, ``keys(prefix)`` and ``delete-tree`` walk exactly the keys under
a prefix, in byte order.  Here a dict answers point lookups and a sorted list of the
keys answers prefix scans by bisection: the keys under ``p`` are the contiguous run
from ``bisect_left(keys, p)`` up to the first key that does not start with ``p``.
Python compares ``str`` by code point, which is the same order as comparing their
UTF-8 bytes, so listings come out in Consul's order.

Inserting a new key shifts the tail of the list (a ``memmove`` of pointers: about
50 µs at a million keys); updates of existing keys, the common case, touch only the
dict.  That is cheaper than a tree in pure Python for every size a Raft-replicated
store held in memory by every server can reasonably reach.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["PrefixMap"]

V = TypeVar("V")


class PrefixMap(Generic[V]):
    """A ``dict[str, V]`` that also lists the keys under a prefix, in order."""

    __slots__ = ("_keys", "_map")

    def __init__(self) -> None:
        self._map: dict[str, V] = {}
        self._keys: list[str] = []

    def __len__(self) -> int:
        return len(self._map)

    def __contains__(self, key: str) -> bool:
        return key in self._map

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def get(self, key: str) -> V | None:
        return self._map.get(key)

    def set(self, key: str, value: V) -> None:
        if key not in self._map:
            bisect.insort(self._keys, key)
        self._map[key] = value

    def pop(self, key: str) -> V | None:
        value = self._map.pop(key, None)
        if value is not None:
            del self._keys[bisect.bisect_left(self._keys, key)]
        return value

    def _span(self, prefix: str) -> tuple[int, int]:
        keys = self._keys
        lo = bisect.bisect_left(keys, prefix)
        hi = lo
        n = len(keys)
        while hi < n and keys[hi].startswith(prefix):
            hi += 1
        return lo, hi

    def keys_with_prefix(self, prefix: str) -> list[str]:
        lo, hi = self._span(prefix)
        return self._keys[lo:hi]

    def items_with_prefix(self, prefix: str) -> list[tuple[str, V]]:
        m = self._map
        return [(k, m[k]) for k in self.keys_with_prefix(prefix)]

    def items(self) -> list[tuple[str, V]]:
        m = self._map
        return [(k, m[k]) for k in self._keys]
