"""The service methods of :class:`~meshlite.Mesh`: register, check, discover, watch.

Theory of operation
-------------------
A mixin so ``_mesh.py`` stays about membership and lifecycle; the work is done by
``_services.py`` (registrations, the checks of services and of the node, watches) and
the sans-I/O directory (``_core/directory.py``).  ``discover`` reads the directory's
ready tuples directly: it is the one call on the hot path of every request a user's
program makes, so it is a dictionary lookup and a list copy, with no await, lock or
network round trip.

Ordering: ``discover`` returns instances sorted by (node, id), the same on every peer.
Spread load with :meth:`pick` (a random passing instance) or ``random.choice``.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeVar

from meshlite._core.directory import Directory
from meshlite._health import CallableCheck, CheckSpec, Instance, Status
from meshlite._services import Services
from meshlite.errors import ConfigError, NotRunningError

__all__ = ["ServiceMethods"]

F = TypeVar("F", bound=Callable[..., Any])
_pick_rng = random.Random()


class ServiceMethods:
    """Mixed into ``Mesh``; see the module docstring."""

    _services: Services | None
    _directory: Directory | None

    def _svc(self) -> Services:
        if self._services is None or self._directory is None:
            raise NotRunningError("the mesh is not running; use `async with Mesh(...)` first")
        return self._services

    async def register(
        self,
        name: str,
        port: int,
        *,
        id: str | None = None,
        tags: Sequence[str] = (),
        meta: Mapping[str, str] | None = None,
        address: str | None = None,
        check: CheckSpec | Sequence[CheckSpec] | None = None,
    ) -> Instance:
        """Register a service instance owned by this peer; returns it (``.id`` to deregister).

        ``id`` defaults to ``name`` (Consul's default): registering an id again replaces
        that instance.  ``address`` defaults to this peer's advertised address.  The status
        is the worst of its checks' statuses (passing with no checks).
        """
        checks = [] if check is None else [check] if not isinstance(check, Sequence) else check
        return self._svc().register(
            name, port, id=id, tags=tags, meta=meta, address=address, checks=list(checks)
        )

    async def deregister(self, service_id: str) -> None:
        """Remove a service this peer registered; peers drop it at the next gossip."""
        self._svc().deregister(service_id)

    def check(
        self, service: str, *, interval_s: float = 10.0, timeout_s: float = 10.0, **options: Any
    ) -> Callable[[F], F]:
        """Decorator: run the function as a health check of ``service`` (an id or a name:
        every local instance of that name, including ones registered later).  Returns the
        function unchanged.  ``options``: the common check options (``name``,
        ``initial_status``, ``success_before_passing``, ...)."""

        def decorate(fn: F) -> F:
            spec = CallableCheck(fn, interval_s, timeout_s, **options)
            self._svc().add_callable_check(service, spec)
            return fn

        return decorate

    async def register_check(
        self, check: CheckSpec, *, id: str | None = None, service_id: str | None = None
    ) -> str:
        """Run one more check, by itself (Consul's ``/v1/agent/check/register``); returns
        its id.

        With ``service_id`` (a service registered on this peer) it is one more check of
        that service, and goes when the service is deregistered or re-registered.  Without,
        it is a *node check*: its status counts in the status of every service on this
        peer, present and future — a critical node check makes them all critical, on every
        peer's ``discover`` — until :meth:`deregister_check`.  ``id`` defaults to the check's
        ``name``; a check with that id (any check of this peer) is replaced.
        """
        check_id = id if id is not None else getattr(check, "name", "")
        if not check_id:
            raise ConfigError("a check registered by itself needs an id, or a name to be its id")
        self._svc().add_check(check, check_id, service_id)
        return check_id

    async def deregister_check(self, check_id: str) -> None:
        """Stop and remove a check of this peer: a node check, or any check of a local
        service (``"service:web-1"`` included; the service stays)."""
        self._svc().remove_check(check_id)

    def discover(
        self, name: str, tag: str | None = None, passing_only: bool = True
    ) -> list[Instance]:
        """The instances of ``name`` on live nodes, passing ones only by default; from
        local memory.  Sorted by (node, id); see :meth:`pick` to spread load."""
        directory = self._directory
        if directory is None:
            raise NotRunningError("the mesh is not running; use `async with Mesh(...)` first")
        return list(directory.discover(name, tag, passing_only))

    def pick(self, name: str, tag: str | None = None) -> Instance | None:
        """A random passing instance of ``name`` (``None`` if there is none)."""
        directory = self._directory
        if directory is None:
            raise NotRunningError("the mesh is not running; use `async with Mesh(...)` first")
        found = directory.discover(name, tag, True)
        return _pick_rng.choice(found) if found else None

    def watch(
        self, name: str, tag: str | None = None, passing_only: bool = True
    ) -> AsyncIterator[list[Instance]]:
        """The current instance list of ``name`` at once, then the new list after every
        change (coalesced: a burst of changes yields the latest list once)."""
        return self._svc().watch(name, tag, passing_only)

    def services(self) -> list[Instance]:
        """The services registered on this peer, with their current status."""
        return self._svc().local()

    def ttl_pass(self, check_id: str, note: str = "") -> None:
        """Report a TTL check passing (Consul's ``/v1/agent/check/pass``)."""
        self._ttl(check_id, Status.PASSING, note)

    def ttl_warn(self, check_id: str, note: str = "") -> None:
        self._ttl(check_id, Status.WARNING, note)

    def ttl_fail(self, check_id: str, note: str = "") -> None:
        self._ttl(check_id, Status.CRITICAL, note)

    def _ttl(self, check_id: str, status: Status, note: str) -> None:
        if not isinstance(note, str):
            raise ConfigError(f"note must be a string, got {note!r}")
        self._svc().ttl_update(check_id, status, note)
