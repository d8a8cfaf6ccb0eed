"""meshlite's Consul-compatible HTTP API (Starlette; uvicorn on asyncio, Hypercorn on trio).

Theory of operation
-------------------
``Mesh(http="127.0.0.1:8500")`` starts an :class:`HttpServer` as a task of the mesh's
driver (``server.py``); the Starlette app (``app.py``) routes Consul's paths to small
modules — ``agent``/``agent_checks``/``agent_check_register``, ``catalog``, ``health``,
``status`` (status and operator/keyring) — which read the mesh through ``view.py`` and
answer in Consul's JSON shapes (``shapes.py``), blocking where Consul blocks
(``blocking.py``), failing as Consul fails (``errors.py``).  ``/v1/openapi.json``
describes it all (``openapi.py``).

Seams for the Raft integration: ``HttpServer(..., raft_status=...)`` for
``/v1/status/*``, ``extra_routes``/``extra_openapi`` for the KV, session and txn routes
and ``/v1/agent/metrics`` (``metrics.py``).  Only ``Mesh`` imports this package, and only
when ``http=`` is given, so the web stack is not loaded otherwise.  See
``docs/http-api.md``.
"""

from __future__ import annotations

from meshlite._http.context import Api, LeaderInfo, RaftStatus, no_raft
from meshlite._http.server import HttpServer

__all__ = ["Api", "HttpServer", "LeaderInfo", "RaftStatus", "no_raft"]
