"""The default mesh for synchronous programs: ``meshlite.start()``, ``members()``, ``stop()``.

Theory of operation
-------------------
A Flask app or a script has no event loop to host a :class:`Mesh`.  ``start()`` runs one
in a background thread through anyio's blocking portal (an asyncio loop in a daemon
thread); calls from any thread hop onto that loop with ``portal.call``, so the mesh's
state is only ever touched by its own loop.  One default mesh per process; ``stop()``
leaves gracefully and joins the thread.  Arguments not given are read from the
environment (``MESHLITE_NAME``, ``MESHLITE_BIND``, ``MESHLITE_JOIN`` as a comma-separated
list, ``MESHLITE_KEY``, ``MESHLITE_CLUSTER``), so a deployment can configure every process
without code changes.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from meshlite._core.events import Member
from meshlite._mesh import Mesh
from meshlite.errors import NotRunningError

__all__ = ["default_mesh", "members", "start", "stop"]

_ENV = {
    "name": "MESHLITE_NAME",
    "bind": "MESHLITE_BIND",
    "join": "MESHLITE_JOIN",
    "key": "MESHLITE_KEY",
    "cluster": "MESHLITE_CLUSTER",
}

_lock = threading.Lock()
_state: _Running | None = None


class _Running:
    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self._stack = contextlib.ExitStack()
        self.portal: BlockingPortal = self._stack.enter_context(start_blocking_portal())
        try:
            self._stack.enter_context(self.portal.wrap_async_context_manager(mesh))
        except BaseException:
            self._stack.close()
            raise

    def close(self) -> None:
        self._stack.close()


def _from_env(kwargs: dict[str, Any]) -> dict[str, Any]:
    for arg, var in _ENV.items():
        value = os.environ.get(var)
        if arg in kwargs or value is None or value == "":
            continue
        if arg == "join":
            kwargs[arg] = [part.strip() for part in value.split(",") if part.strip()]
        else:
            kwargs[arg] = value
    return kwargs


def start(
    name: str | None = None,
    bind: str | None = None,
    *,
    join: Sequence[str] | None = None,
    key: str | bytes | Sequence[str | bytes] | None = None,
    cluster: str | None = None,
    meta: Mapping[str, str] | None = None,
    **options: Any,
) -> Mesh:
    """Start the process's default mesh in a background thread and return it.

    Arguments left out come from ``MESHLITE_*`` environment variables, then from
    :class:`Mesh`'s defaults.  Raises ``ConfigError`` for bad settings and ``OSError`` if
    the address cannot be bound; calling it again while running raises ``RuntimeError``.
    """
    global _state
    given = {"name": name, "bind": bind, "join": join, "key": key, "cluster": cluster}
    kwargs = _from_env({k: v for k, v in given.items() if v is not None})
    if meta is not None:
        kwargs["meta"] = meta
    with _lock:
        if _state is not None:
            raise RuntimeError("the default mesh is already running; call meshlite.stop() first")
        _state = _Running(Mesh(**kwargs, **options))
        return _state.mesh


def default_mesh() -> Mesh:
    """The running default mesh (``NotRunningError`` if ``start()`` was not called)."""
    state = _state
    if state is None:
        raise NotRunningError("no default mesh: call meshlite.start(...) first")
    return state.mesh


def portal() -> BlockingPortal:
    """The portal onto the default mesh's event loop."""
    state = _state
    if state is None:
        raise NotRunningError("no default mesh: call meshlite.start(...) first")
    return state.portal


def call(fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` on the default mesh's loop (sync or async ``fn``) and return its result."""
    return portal().call(fn, *args)


def members() -> list[Member]:
    """Members of the default mesh, as ``Mesh.members()``."""
    return call(default_mesh().members)  # type: ignore[no-any-return]


def stop() -> None:
    """Leave gracefully and stop the default mesh; a no-op when none is running."""
    global _state
    with _lock:
        state, _state = _state, None
    if state is not None:
        state.close()


atexit.register(stop)
