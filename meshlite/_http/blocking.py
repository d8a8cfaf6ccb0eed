"""JSON responses, and Consul's blocking queries (``?index=&wait=``) over them.

Theory of operation
-------------------
Consul's read endpoints return ``X-Consul-Index``; a client that passes it back as
``?index=`` is held until the index moves or ``?wait`` runs out (default 5 minutes,
at most 10, plus a random ``wait/16`` so that many clients woken by one change do not
come back in lockstep: ``agent/consul/rpc.go`` ``blockingQuery``,
``lib.RandomStagger``).  A return is no promise that anything changed.

Our index is the directory's catalog-wide counter (``_core/directory.py``), bumped by
every change to a service, its health or the membership; ``Services.wait_changed`` is
the wake-up.  It starts at the process's start time in microseconds, so each life of an
agent counts in its own range.  A query blocks only while the current index *equals* the
one given: a smaller one means the client missed changes, a larger one comes from
elsewhere (another agent, a clock stepped back), and both are answered at once — where
Consul would hold the second until its wait ran out.

A held query also ends when its client disconnects (no task waits ten minutes for
nobody) and, answering at once, when the server closes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import attrs
from starlette.requests import Request
from starlette.responses import Response

from meshlite._http.context import Api, api_of
from meshlite._http.errors import HttpError, query_duration_s, query_uint
from meshlite._http.view import View

__all__ = [
    "DEFAULT_WAIT_S",
    "MAX_WAIT_S",
    "Blocking",
    "blocking_json",
    "hold",
    "jittered_wait_s",
    "json_response",
]

DEFAULT_WAIT_S = 300.0  # Consul's default ?wait
MAX_WAIT_S = 600.0  # Consul's cap: a longer ?wait is cut to this
JITTER_FRACTION = 16  # Consul adds up to wait/16 of random stagger
_CONSISTENCY = ("stale", "consistent", "cached")


def json_response(
    request: Request, body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``application/json``; indented with Consul's ``?pretty``."""
    pretty = "pretty" in request.query_params
    text = json.dumps(
        body,
        ensure_ascii=False,
        allow_nan=False,
        indent=4 if pretty else None,
        separators=None if pretty else (",", ":"),
    )
    return Response(text, status, headers=dict(headers or {}), media_type="application/json")


@attrs.frozen
class Blocking:
    """A request's blocking options: wait while the index is ``index`` (0: do not)."""

    index: int
    wait_s: float

    @classmethod
    def from_request(cls, request: Request) -> Blocking:
        index = query_uint(request, "index") or 0
        wait_s = query_duration_s(request, "wait")
        wait_s = DEFAULT_WAIT_S if wait_s is None or wait_s == 0 else min(wait_s, MAX_WAIT_S)
        if sum(name in request.query_params for name in _CONSISTENCY[:2]) > 1:
            raise HttpError(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
        return cls(index, wait_s)


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def jittered_wait_s(api: Api, blocking: Blocking) -> float:
    """``?wait`` plus Consul's random stagger of up to ``wait / JITTER_FRACTION``."""
    return blocking.wait_s + api.rng.uniform(0, blocking.wait_s / JITTER_FRACTION)


async def hold(
    request: Request, api: Api, wait: Callable[[], Awaitable[object]], timeout_s: float = math.inf
) -> None:
    """Run ``wait()`` until it returns, ``timeout_s`` passes, the client disconnects or the
    server closes (``api.stop_waits``), whichever is first.  ``wait`` must not raise.

    With ``api.max_waits`` queries held already, refuse this one (429) at once."""
    if len(api.waits) >= api.max_waits:
        raise HttpError(
            429, f"too many blocking queries held ({api.max_waits}); retry later or without ?index"
        )
    with anyio.move_on_after(timeout_s) as scope:
        api.waits.add(scope)
        try:
            async with anyio.create_task_group() as tg:

                async def done() -> None:
                    await wait()
                    tg.cancel_scope.cancel()

                async def gone() -> None:
                    await _until_disconnected(request)
                    tg.cancel_scope.cancel()

                tg.start_soon(done)
                tg.start_soon(gone)
        finally:
            api.waits.discard(scope)


def index_headers(api: Api, index: int) -> dict[str, str]:
    return {
        "X-Consul-Index": str(index),
        "X-Consul-KnownLeader": "true" if api.raft_status().leader else "false",
        "X-Consul-LastContact": "0",  # answered from this agent's memory
    }


async def blocking_json(
    request: Request, render: Callable[[View], Any], *, status: int = 200
) -> Response:
    """Answer ``render(view)`` with ``X-Consul-Index``, first holding a blocking query.

    Handlers validate their own parameters before calling this, so a bad one is a 400 at
    once, not after the wait.
    """
    api = api_of(request)
    blocking = Blocking.from_request(request)
    if blocking.index and blocking.index == api.services.directory.index and not api.closing:
        changed = lambda: api.services.wait_changed(blocking.index)  # noqa: E731
        await hold(request, api, changed, jittered_wait_s(api, blocking))
    view = api.view()
    return json_response(request, render(view), status, index_headers(api, view.index))
