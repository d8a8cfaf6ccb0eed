"""The client commands' side of the HTTP API: where the agent is, and what its answers mean.

Theory of operation
-------------------
Consul's CLI (``command/flags/http.go``) finds its agent in ``CONSUL_HTTP_ADDR`` and its
token in ``CONSUL_HTTP_TOKEN``, flags winning; meshlite's client commands do the same
with ``MESHLITE_HTTP_ADDR`` / ``--http-addr`` (``host:port`` or ``http://host:port``,
default ``127.0.0.1:8500``) and ``MESHLITE_HTTP_TOKEN`` / ``--token``, sent as
``X-Consul-Token``.  :class:`AgentClient` is a thin synchronous httpx client that turns
every failure into one :class:`ClientError` whose text is the whole error line the user
sees: the agent unreachable (naming the address and where it came from), a 403 (naming
the token setting), a 404, a 400 with the API's plain-text reason (``docs/http-api.md``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import attrs

from meshlite._addr import format_hostport, parse_hostport
from meshlite.errors import ConfigError

__all__ = [
    "ADDR_ENV",
    "DEFAULT_HTTP_ADDR",
    "TOKEN_ENV",
    "AgentClient",
    "ClientError",
    "NotFoundError",
    "Target",
    "resolve_target",
]

ADDR_ENV = "MESHLITE_HTTP_ADDR"
TOKEN_ENV = "MESHLITE_HTTP_TOKEN"
DEFAULT_HTTP_ADDR = "127.0.0.1:8500"  # consul agent -dev's, and meshlite agent --dev's
DEFAULT_HTTP_PORT = 8500  # when the address names only a host
DEFAULT_SOURCE = "the default address"  # Target.source when neither flag nor variable is set
# Every answer but a blocking query's comes at once from the agent's memory; 10 s covers a
# loaded machine while still failing promptly against a host that drops packets.
REQUEST_TIMEOUT_S = 10.0
_SCHEMES = ("http", "https")
_REASON_MAX_CHARS = 300  # an error body longer than this is cut, so the error stays one line


class ClientError(Exception):
    """A failure the command reports as one line (``meshlite: error: <text>``), exit 1."""


class NotFoundError(ClientError):
    """A 404 from the agent: the caller may know better what was not found."""


@attrs.frozen
class Target:
    """Where the agent's HTTP API is (``base_url``), whence that came, and the token."""

    base_url: str
    source: str  # "--http-addr", "MESHLITE_HTTP_ADDR" or DEFAULT_SOURCE
    token: str | None


def parse_http_addr(text: str, source: str) -> str:
    """``host:port``, ``host`` or ``http://host:port`` as a base URL; else ClientError."""
    rest = text.strip()
    scheme = "http"
    if "://" in rest:
        scheme, _, rest = rest.partition("://")
        if scheme.lower() not in _SCHEMES:
            raise ClientError(
                f"{source} {text!r}: expected 'host:port' or 'http://host:port', "
                f"e.g. '{DEFAULT_HTTP_ADDR}'"
            )
        rest = rest.rstrip("/")
    if "/" in rest:
        raise ClientError(f"{source} {text!r}: give the agent's address only, without a path")
    try:
        host, port = parse_hostport(rest, default_port=DEFAULT_HTTP_PORT, what=source)
    except ConfigError as exc:
        raise ClientError(str(exc)) from None
    return f"{scheme.lower()}://{format_hostport(host, port)}"


def resolve_target(
    http_addr: str | None, token: str | None, environ: Mapping[str, str] = os.environ
) -> Target:
    """Flags first, then the environment, then the default (Consul's order)."""
    if http_addr is not None:
        text, source = http_addr, "--http-addr"
    elif environ.get(ADDR_ENV):
        text, source = environ[ADDR_ENV], ADDR_ENV
    else:
        text, source = DEFAULT_HTTP_ADDR, DEFAULT_SOURCE
    token = token if token is not None else environ.get(TOKEN_ENV) or None
    return Target(parse_http_addr(text, source), source, token)


class AgentClient:
    """Synchronous requests to one agent; every failure becomes a :class:`ClientError`."""

    def __init__(self, target: Target) -> None:
        import httpx

        self.target = target
        headers = {"X-Consul-Token": target.token} if target.token else {}
        self._http = httpx.Client(
            base_url=target.base_url, headers=headers, timeout=REQUEST_TIMEOUT_S
        )

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content: bytes | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> tuple[Any, Mapping[str, str]]:
        """``(decoded JSON or None, headers)`` of a 2xx answer; ``body`` is sent as JSON,
        ``content`` as raw bytes (a KV value)."""
        import httpx

        try:
            response = self._http.request(
                method, path, params=params, json=body, content=content, timeout=timeout_s
            )
        except httpx.TransportError as exc:
            raise ClientError(self._unreachable(exc, timeout_s)) from None
        if response.status_code >= 300:
            raise self._refused(response.status_code, response.text, method, path)
        if not response.content:
            return None, response.headers
        try:
            return response.json(), response.headers
        except ValueError:
            raise ClientError(
                f"the agent at {self.target.base_url} answered {path} with something "
                "that is not JSON: is it a meshlite (or Consul) HTTP API?"
            ) from None

    def _unreachable(self, exc: Exception, timeout_s: float) -> str:
        import httpx

        url = self.target.base_url
        if isinstance(exc, httpx.TimeoutException):
            why = f"no answer within {timeout_s:g} s"
        elif "refused" in str(exc).lower():
            why = "connection refused"
        else:
            why = str(exc) or type(exc).__name__
        return (
            f"cannot reach the agent's HTTP API at {url} ({why}; {self._origin()}): "
            "start one with 'meshlite agent --http ...' "
            f"or set {ADDR_ENV} / --http-addr"
        )

    def _origin(self) -> str:
        source = self.target.source
        return source if source == DEFAULT_SOURCE else f"address from {source}"

    def _refused(self, status: int, text: str, method: str, path: str) -> ClientError:
        reason = " ".join(text.split())[:_REASON_MAX_CHARS]
        if status == 403:
            if self.target.token:
                return ClientError(
                    f"the agent refused the token (403 {reason or 'Permission denied'}): "
                    f"check {TOKEN_ENV} / --token"
                )
            return ClientError(
                f"the agent requires an ACL token (403 {reason or 'Permission denied'}): "
                f"set {TOKEN_ENV} / --token"
            )
        if status == 404:
            return NotFoundError(f"not found: {method} {path} (404 {reason})".rstrip())
        return ClientError(f"the agent refused {method} {path}: {status} {reason}".rstrip())
