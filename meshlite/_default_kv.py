"""Synchronous KV and lock calls on the default mesh: ``meshlite.kv.get``, ``meshlite.lock``.

Theory of operation
-------------------
The twins of ``mesh.kv`` and ``mesh.lock`` for programs without an event loop, as
``_default_services`` does for services: each call hops onto the default mesh's loop
through its blocking portal and waits for the answer (a Raft round trip; the hop itself
costs tens of microseconds).  ``meshlite.lock(key)`` is a plain ``with`` block: the
portal runs the async lock's enter and exit on the loop, and its monitor task lives
there while the block runs in the caller's thread.
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from meshlite._core.kv import KVEntry, KVResult, Session, TxnOp
from meshlite._default import call, portal
from meshlite._default_services import _mesh
from meshlite._kv_client import KV
from meshlite._lock import Lock
from meshlite._raft_server_kv import Consistency

__all__ = ["SyncKV", "kv", "lock"]


class SyncKV:
    """``meshlite.kv``: ``mesh.kv``'s calls on the default mesh, blocking (started on first use)."""

    def _kv(self) -> KV:
        return _mesh().kv

    def put(self, key: str, value: bytes | str, **options: Any) -> bool:
        """``mesh.kv.put`` (options: ``flags``, ``cas``, ``acquire``, ``release``)."""
        return bool(call(functools.partial(self._kv().put, key, value, **options)))

    def get(
        self, key: str, *, consistency: Consistency = "default", **options: Any
    ) -> KVEntry | None:
        """``mesh.kv.get`` (options: ``index``, ``wait_s``)."""
        fn = functools.partial(self._kv().get, key, consistency=consistency, **options)
        return call(fn)  # type: ignore[no-any-return]

    def list(self, prefix: str = "", **options: Any) -> builtins.list[KVEntry]:
        """``mesh.kv.list``."""
        return call(functools.partial(self._kv().list, prefix, **options))  # type: ignore[no-any-return]

    def keys(
        self, prefix: str = "", separator: str | None = None, **options: Any
    ) -> builtins.list[str]:
        """``mesh.kv.keys``."""
        fn = functools.partial(self._kv().keys, prefix, separator, **options)
        return call(fn)  # type: ignore[no-any-return]

    def delete(self, key: str, *, recurse: bool = False, cas: int | None = None) -> bool:
        """``mesh.kv.delete``."""
        return bool(call(functools.partial(self._kv().delete, key, recurse=recurse, cas=cas)))

    def txn(self, ops: Sequence[TxnOp]) -> KVResult:
        """``mesh.kv.txn``."""
        return call(self._kv().txn, ops)  # type: ignore[no-any-return]

    def session_create(self, node: str | None = None, **options: Any) -> Session:
        """``mesh.kv.session_create``."""
        fn = functools.partial(self._kv().session_create, node, **options)
        return call(fn)  # type: ignore[no-any-return]

    def session_destroy(self, session_id: str) -> bool:
        """``mesh.kv.session_destroy``."""
        return bool(call(self._kv().session_destroy, session_id))

    def session_renew(self, session_id: str) -> Session | None:
        """``mesh.kv.session_renew``."""
        return call(self._kv().session_renew, session_id)  # type: ignore[no-any-return]


kv = SyncKV()


def lock(
    key: str, value: bytes = b"", *, lock_delay_s: float = 15.0, session_ttl_s: float = 0.0
) -> AbstractContextManager[Lock]:
    """``with meshlite.lock("jobs/nightly") as lock:`` — ``mesh.lock`` on the default mesh."""
    mesh = _mesh()
    held = mesh.lock(key, value, lock_delay_s=lock_delay_s, session_ttl_s=session_ttl_s)
    return portal().wrap_async_context_manager(held)
