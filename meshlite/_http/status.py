"""``/v1/status/*`` (Raft leader and peers) and ``/v1/operator/keyring`` (key rotation).

Theory of operation
-------------------
``/v1/status/leader`` and ``/v1/status/peers`` report the Raft view through the seam in
``context.py`` (``Api.raft_status``): without Raft, ``""`` and ``[]`` — what Consul
answers while it has no leader.

``/v1/operator/keyring`` maps Consul's four verbs (``agent/operator_endpoint.go``
``OperatorKeyringEndpoint``) onto ``Mesh.keyring_*``: ``GET`` lists, ``POST`` installs,
``PUT`` makes primary, ``DELETE`` removes, the key in a ``{"Key": ...}`` body.  Each
applies here and on every member seen alive (``_keyring_ops.py``).  The list is one
entry — meshlite has one gossip ring, the LAN one — with Consul's fields, and
``Messages`` naming members that did not answer.  A write that some member did not
acknowledge is a 500 listing them, as in Consul (the operator must not take the next
rotation step); a malformed or refused key (removing the primary) is a 400.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from meshlite._http.blocking import json_response
from meshlite._http.context import Api, api_of
from meshlite._http.errors import HttpError, query_uint, read_json_object, show
from meshlite._keyring_ops import KeyringResult
from meshlite.errors import ConfigError, KeyringError

__all__ = ["routes"]

MAX_RELAY_FACTOR = 5  # Consul's limit on ?relay-factor (accepted; meshlite does not relay)
_VERBS = {"POST": "install", "PUT": "use", "DELETE": "remove"}


async def leader(request: Request) -> Response:
    return json_response(request, api_of(request).raft_status().leader)


async def peers(request: Request) -> Response:
    return json_response(request, list(api_of(request).raft_status().peers))


# ------------------------------------------------------------------------------ keyring


async def _run(api: Api, op: str, key: str | None) -> KeyringResult:
    mesh = api.mesh
    calls = {
        "install": mesh.keyring_install,
        "use": mesh.keyring_use,
        "remove": mesh.keyring_remove,
    }
    try:
        if key is None:
            return await mesh.keyring_list()
        return await calls[op](key)
    except (ConfigError, KeyringError) as exc:
        raise HttpError(400, f"keyring {op}: {exc}") from None


async def keyring(request: Request) -> Response:
    api = api_of(request)
    relay = query_uint(request, "relay-factor")
    if relay is not None and relay > MAX_RELAY_FACTOR:
        raise HttpError(400, f"Relay factor must be in range: [0, {MAX_RELAY_FACTOR}]")
    if request.method in ("GET", "HEAD"):
        result = await _run(api, "list", None)
        entry = {
            "WAN": False,
            "Datacenter": api.datacenter,
            "Segment": "",
            "Keys": result.keys,
            "PrimaryKeys": result.primary_keys,
            "NumNodes": result.members,
        }
        if result.errors:
            entry["Messages"] = result.errors
        return json_response(request, [entry])
    op = _VERBS[request.method]
    body = await read_json_object(request, what='{"Key": "<base64 key>"}')
    key = next((v for k, v in body.items() if k.lower() == "key"), None)
    if not isinstance(key, str) or not key:
        raise HttpError(400, f'Request decode failed: "Key" must be a base64 key, got {show(key)}')
    result = await _run(api, op, key)
    if not result.complete:
        failed = "; ".join(f"{name}: {why}" for name, why in sorted(result.errors.items()))
        raise HttpError(500, f"{len(result.errors)}/{result.members} nodes reported failure: "
                        f"{failed}")  # fmt: skip
    return Response(b"", 200)


def routes() -> list[Route]:
    return [
        Route("/v1/status/leader", leader, methods=["GET"]),
        Route("/v1/status/peers", peers, methods=["GET"]),
        Route("/v1/operator/keyring", keyring, methods=["GET", "POST", "PUT", "DELETE"]),
    ]
