"""The web UI at ``/ui/``: static files, served as they are, with no build step.

Theory of operation
-------------------
The UI is three files in ``meshlite/_http/ui/`` (``index.html``, ``app.js``,
``style.css``), shipped as package data in the wheel.  They run in the browser and read
the same Consul API every other client does — members, catalog and health, KV with
check-and-set — holding blocking queries (``?index=&wait=``) on the view shown, as
Consul's own UI does.  See ``docs/ui.md``.

Consul's paths: ``/ui/`` serves the app, ``/ui`` and ``/`` redirect to it
(``agent/http.go`` registers ``/`` as a redirect to ``/ui/``).  The files are public —
the ACL token guards the API, not the page that asks for it — so :func:`is_ui_path`
tells the token guard (``app.py``) to let them through; the app itself sends the token
the user gives it with every API call.

Each file goes out with headers that keep a page showing mesh data safe even if the
rendering missed an escape: a Content-Security-Policy allowing scripts, styles and
fetches from this origin only (no inline script, no ``eval``), ``nosniff``, no
referrer, no framing.  ``Cache-Control: no-cache`` makes the browser revalidate (the
ETag makes that cheap), so an upgraded agent never runs a stale ``app.js``.

The redirects are a :class:`BaseRoute` rather than ``Route``s so that the OpenAPI
document, which describes the API, need not list them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Match, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

__all__ = ["UI_DIRECTORY", "UI_PREFIX", "is_ui_path", "routes"]

UI_PREFIX = "/ui/"
UI_DIRECTORY = Path(__file__).with_name("ui")
_REDIRECTED = frozenset({"/", "/ui"})  # both answered 301 -> /ui/, as Consul does
_READS = frozenset({"GET", "HEAD"})
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",  # revalidate every time (cheap: ETag / If-None-Match)
}


def is_ui_path(path: str) -> bool:
    """``/``, ``/ui`` and everything under ``/ui/``: public, no token needed."""
    return path in _REDIRECTED or path.startswith(UI_PREFIX)


class UiFiles(StaticFiles):
    """The UI's static files, each answered with :data:`SECURITY_HEADERS`."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


class _Redirects(BaseRoute):
    """``GET /`` and ``GET /ui``: ``301`` to ``/ui/``; other methods: ``405``."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and scope["path"] in _REDIRECTED:
            return Match.FULL, {}
        return Match.NONE, {}

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NotImplementedError("the UI redirects have no name")

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        response: Response
        if scope["method"] in _READS:
            response = RedirectResponse(UI_PREFIX, 301)
        else:
            text = f"method {scope['method']} not allowed"
            response = PlainTextResponse(text, 405, headers={"Allow": "GET, HEAD"})
        await response(scope, receive, send)


def routes() -> list[BaseRoute]:
    return [
        _Redirects(),
        Mount(UI_PREFIX.rstrip("/"), app=UiFiles(directory=UI_DIRECTORY, html=True)),
    ]
