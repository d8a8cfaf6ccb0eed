"""What every route handler shares: the mesh, its services, and the seams for Raft.

Theory of operation
-------------------
One :class:`Api` per running HTTP server, stored on the Starlette app
(``app.state.api``) and fetched by handlers with :func:`api_of`.  It holds the running
:class:`~meshlite.Mesh` and its :class:`~meshlite._services.Services` (the directory the
catalog and health routes read, and the change signal blocking queries wait on).

The Raft seam: ``/v1/status/leader`` and ``/v1/status/peers`` ask ``raft_status()`` for a
:class:`LeaderInfo`.  Until the replicated KV lands, :func:`no_raft` answers what Consul
answers without a leader (``""`` and ``[]``).  The Raft integration passes its own callable
(``HttpServer(..., raft_status=...)``), and its KV/session/txn routes as ``extra_routes``
(see ``app.py``) — nothing here needs to change for them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import anyio
import attrs
from starlette.requests import Request

from meshlite._http.view import View

if TYPE_CHECKING:
    from meshlite._mesh import Mesh
    from meshlite._services import Services

__all__ = [
    "DEFAULT_DATACENTER",
    "MAX_BLOCKING_QUERIES",
    "Api",
    "LeaderInfo",
    "RaftStatus",
    "api_of",
    "no_raft",
]

# Blocking queries held at once, over every client.  Each holds a connection (a file
# descriptor: the default soft limit is 1,024) and three tasks for up to ten minutes;
# past this a new one is refused with 429, as Consul's limiter refuses a client over
# ``http_max_conns_per_client``, instead of the process running out of descriptors.
MAX_BLOCKING_QUERIES = 1024

# Consul's default datacenter name; a mesh with a cluster label reports the label instead.
DEFAULT_DATACENTER = "dc1"


@attrs.frozen
class LeaderInfo:
    """The Raft view ``/v1/status/*`` reports: addresses as ``"host:port"``."""

    leader: str = ""  # "" when there is no leader (Consul's answer then)
    peers: tuple[str, ...] = ()


RaftStatus = Callable[[], LeaderInfo]


def no_raft() -> LeaderInfo:
    """The status before Raft: no leader, no peers."""
    return LeaderInfo()


@attrs.define(eq=False)
class Api:
    """The state shared by the handlers of one HTTP server."""

    mesh: Mesh
    services: Services
    token: str | None = None
    token_reads: bool = False
    raft_status: RaftStatus = no_raft
    rng: random.Random = attrs.field(factory=random.Random)  # blocking-query jitter
    # Blocking queries in progress: cancelled (they answer at once) when the server closes.
    waits: set[anyio.CancelScope] = attrs.field(factory=set)
    max_waits: int = MAX_BLOCKING_QUERIES
    closing: bool = False

    @property
    def datacenter(self) -> str:
        return self.mesh.cluster or DEFAULT_DATACENTER

    def view(self) -> View:
        return View(self.mesh, self.services)

    def stop_waits(self) -> None:
        """Answer every blocking query now (the server is closing)."""
        self.closing = True
        for scope in list(self.waits):
            scope.cancel()


def api_of(request: Request) -> Api:
    return cast(Api, request.app.state.api)
