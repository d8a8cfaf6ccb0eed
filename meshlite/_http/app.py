"""The Starlette application: routes, the ACL token guard, and the error policy.

Theory of operation
-------------------
The app is assembled from route modules, each a ``routes()`` list plus its OpenAPI
paths (``openapi.py``): agent, agent checks, catalog, health, status/operator.  Later
modules (KV, sessions, transactions with the replicated store) come in through
``build_app(..., extra_routes=..., extra_openapi=...)`` without touching these.

Error policy, outermost first:

1. :class:`CatchAll` — anything a handler did not mean to raise is a bug: logged with
   its traceback, answered ``500`` (if no response has started).  Bad input never gets
   here: every parser raises :class:`~meshlite._http.errors.HttpError` instead.
2. :class:`TokenGuard` — with a token configured, writes (and reads, if asked) without
   it are ``403 Permission denied`` (Consul's text).  The token travels as Consul's
   clients send it: ``X-Consul-Token``, ``Authorization: Bearer``, or ``?token=``.
   ``/v1/openapi.json``, ``/v1/status/*`` and the UI's static files (``ui.py``) need none
   (Consul's status endpoints need no ACL either).  Tokens are compared in constant time.
3. Starlette's exception layer — ``HttpError`` and routing's 404/405 become
   ``text/plain`` answers, as Consul's are; a request that finds the mesh closing
   (``NotRunningError``: a blocking query answered at close) gets ``503``.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from meshlite._http import agent, agent_checks, catalog, health, openapi, status, ui
from meshlite._http.blocking import json_response
from meshlite._http.context import Api
from meshlite._http.errors import HttpError
from meshlite.errors import NotRunningError

__all__ = ["CatchAll", "TokenGuard", "build_app"]

log = logging.getLogger("meshlite.http")

_READS = frozenset({"GET", "HEAD"})
_PUBLIC_PATHS = frozenset({"/v1/openapi.json", "/v1/status/leader", "/v1/status/peers"})
_DENIED = "Permission denied"  # Consul's acl.ErrPermissionDenied text


class CatchAll:
    """Pure ASGI: a genuine bug becomes a logged 500, never a dropped connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("HTTP API bug answering %s %s", scope.get("method"), scope.get("path"))
            if not started and scope["type"] == "http":
                text = "Internal error (a meshlite bug; see the agent's log)"
                await PlainTextResponse(text, 500)(scope, receive, send)


class TokenGuard:
    """Pure ASGI: ``403 Permission denied`` without the configured token."""

    def __init__(self, app: ASGIApp, token: str | None, token_reads: bool) -> None:
        self.app = app
        self.token = None if token is None else token.encode()
        self.token_reads = token_reads

    def _needs_token(self, scope: Scope) -> bool:
        if self.token is None or scope["path"] in _PUBLIC_PATHS or ui.is_ui_path(scope["path"]):
            return False  # the UI's static files are public; its API calls carry the token
        return self.token_reads or scope["method"] not in _READS

    def _presented(self, scope: Scope) -> bytes | None:
        headers = dict(scope["headers"])
        if b"x-consul-token" in headers:
            return bytes(headers[b"x-consul-token"])
        scheme, _, value = bytes(headers.get(b"authorization", b"")).partition(b" ")
        if scheme.lower() == b"bearer" and value:
            return value.strip()
        query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
        return query["token"][0].encode() if query.get("token") else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._needs_token(scope):
            presented = self._presented(scope)
            assert self.token is not None
            if presented is None or not hmac.compare_digest(presented, self.token):
                await PlainTextResponse(_DENIED, 403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpError)
    return PlainTextResponse(exc.text, exc.status, headers=exc.headers)


async def _not_running(_request: Request, _exc: Exception) -> Response:
    return PlainTextResponse("the agent is shutting down", 503)


async def _routing_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        text = f"method {request.method} not allowed"
    elif exc.status_code == 404:
        text = f"404 page not found: {request.url.path}"
    else:
        text = exc.detail
    return PlainTextResponse(text, exc.status_code, headers=exc.headers)


def build_app(
    api: Api,
    *,
    extra_routes: Sequence[BaseRoute] = (),
    extra_openapi: dict[str, Any] | None = None,
) -> Starlette:
    """The HTTP API of one mesh; ``extra_*`` add later modules' routes and their docs."""
    document = openapi.document({**openapi.PATHS, **(extra_openapi or {})}, api.datacenter)

    async def openapi_json(request: Request) -> Response:
        return json_response(request, document)

    routes: list[BaseRoute] = [
        *agent.routes(),
        *agent_checks.routes(),
        *catalog.routes(),
        *health.routes(),
        *status.routes(),
        Route("/v1/openapi.json", openapi_json, methods=["GET"]),
        *extra_routes,
        *ui.routes(),  # /ui/ (the web UI), and / and /ui redirecting to it
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(CatchAll),
            Middleware(TokenGuard, token=api.token, token_reads=api.token_reads),
        ],
        exception_handlers={
            HttpError: _http_error,
            HTTPException: _routing_error,
            NotRunningError: _not_running,
        },
    )
    app.router.redirect_slashes = False  # Consul does not redirect "/v1/agent/self/"
    app.state.api = api
    return app
