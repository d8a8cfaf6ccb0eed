"""Synchronous service calls on the default mesh: ``meshlite.register``, ``discover``, ...

Theory of operation
-------------------
The twins of :class:`~meshlite.Mesh`'s service methods for programs without an event loop
(Flask, Django, scripts).  Calls that change state (``register``, ``deregister``,
``check``, ``ttl_*``) hop onto the default mesh's loop through its blocking portal, as
``members()`` does, and start the default mesh (configured from ``MESHLITE_*``) on first
use.  ``discover`` and ``pick`` do *not* hop: they read the directory's current tuple of
instances, which the loop replaces whole and never mutates, so a read from any thread
sees one consistent list, at the cost of a dictionary lookup rather than a cross-thread
round trip.  ``watch`` runs its subscription on the loop and calls the callback in a
worker thread, one call at a time, so a slow callback never stalls the mesh.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from meshlite._default import _lock, call, default_mesh, portal, start
from meshlite._health import CheckSpec, Instance
from meshlite._mesh import Mesh
from meshlite.errors import NotRunningError

__all__ = ["Watch", "check", "deregister", "discover", "pick", "register", "watch"]

F = TypeVar("F", bound=Callable[..., Any])


def _mesh() -> Mesh:
    """The default mesh, started from the environment if it is not running yet."""
    with _lock:
        try:
            return default_mesh()
        except NotRunningError:
            pass
    try:
        return start()
    except RuntimeError:  # another thread started it between our check and start()
        return default_mesh()


def register(
    name: str,
    port: int,
    *,
    id: str | None = None,
    tags: Sequence[str] = (),
    meta: Mapping[str, str] | None = None,
    address: str | None = None,
    check: CheckSpec | Sequence[CheckSpec] | None = None,
) -> Instance:
    """``Mesh.register`` on the default mesh (started on first use)."""
    mesh = _mesh()
    fn = functools.partial(
        mesh.register, name, port, id=id, tags=tags, meta=meta, address=address, check=check
    )
    return call(fn)  # type: ignore[no-any-return]


def deregister(service_id: str) -> None:
    """``Mesh.deregister`` on the default mesh."""
    call(default_mesh().deregister, service_id)


def check(
    service: str, *, interval_s: float = 10.0, timeout_s: float = 10.0, **options: Any
) -> Callable[[F], F]:
    """``@meshlite.check("db", interval_s=10)``: ``Mesh.check`` on the default mesh."""

    def decorate(fn: F) -> F:
        mesh = _mesh()
        decorator = mesh.check(service, interval_s=interval_s, timeout_s=timeout_s, **options)
        call(decorator, fn)
        return fn

    return decorate


def discover(name: str, tag: str | None = None, passing_only: bool = True) -> list[Instance]:
    """``Mesh.discover`` on the default mesh (started on first use), from any thread."""
    return _mesh().discover(name, tag, passing_only)


def pick(name: str, tag: str | None = None) -> Instance | None:
    """``Mesh.pick`` on the default mesh (started on first use), from any thread."""
    return _mesh().pick(name, tag)


class Watch:
    """A running ``meshlite.watch``; ``cancel()`` stops it."""

    def __init__(self, future: Future[None]) -> None:
        self._future = future

    def cancel(self) -> None:
        self._future.cancel()

    @property
    def running(self) -> bool:
        return not self._future.done()


def watch(
    name: str,
    callback: Callable[[list[Instance]], object],
    *,
    tag: str | None = None,
    passing_only: bool = True,
) -> Watch:
    """Call ``callback(instances)`` with the current list of ``name`` and again after every
    change (coalesced), from a worker thread, until ``cancel()`` or the mesh stops."""
    mesh = _mesh()

    async def follow() -> None:
        async for instances in mesh.watch(name, tag, passing_only):
            await anyio.to_thread.run_sync(callback, instances)

    return Watch(portal().start_task_soon(follow))
