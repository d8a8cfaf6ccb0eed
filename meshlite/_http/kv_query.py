"""What the KV, session and txn routes share: errors, consistency, blocking reads, shapes.

Theory of operation
-------------------
The replicated store is reached through ``mesh.kv`` (``_kv_client.py``): on a leading
server directly, anywhere else forwarded to the leader.  Its errors become Consul's
answers (:func:`store_errors`): ``ConfigError`` — a bad argument or a refused command,
e.g. an unknown session — is a ``400`` with the reason; ``NoLeaderError`` is Consul's
``500 No cluster leader`` (``structs.ErrNoLeader``: not bad input, the cluster cannot
answer; clients retry); ``OutcomeUnknownError`` is a ``500`` saying the write may or may
not have applied.

Reads take Consul's consistency modes from ``?stale`` / ``?consistent`` (default:
served by the leader) and its blocking queries from ``?index=&wait=``
(``blocking.Blocking``: the same parsing, cap and jitter as the catalog's).  Where the
catalog holds a request on the directory's index, a store read blocks inside
``mesh.kv.read`` (``_raft_server_kv.KVApi._read``, woken by each applied entry), so
:func:`blocking_read` only adds what the HTTP layer owns: the jitter, ending the wait
when the client disconnects, and answering at once when the server closes.  The answer
carries ``X-Consul-Index`` (the read's index: Consul's ``ModifyIndex`` / table index),
``X-Consul-KnownLeader`` and ``X-Consul-LastContact`` (0: meshlite does not track the
time since a follower last heard from its leader; a stale read's lag is in entries).

Entries and sessions are rendered as Consul's ``structs.DirEntry`` (base64 ``Value``,
``null`` when empty, ``Session`` omitted when unlocked) and ``structs.Session``
(``LockDelay`` in nanoseconds, ``TTL`` as a Go duration).  ``/v1/status/*`` answers from
:func:`raft_status` (the seam in ``context.py``).
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from meshlite._addr import format_hostport
from meshlite._duration import format_duration
from meshlite._http.blocking import Blocking, hold, jittered_wait_s
from meshlite._http.context import LeaderInfo, RaftStatus, api_of
from meshlite._http.errors import HttpError
from meshlite.errors import ConfigError, NoLeaderError, OutcomeUnknownError

if TYPE_CHECKING:
    from meshlite._core.events import Member
    from meshlite._core.kv_types import KVEntry, Session
    from meshlite._mesh import Mesh
    from meshlite._raft_server_kv import Consistency, KVRead

__all__ = [
    "NO_LEADER",
    "Reader",
    "blocking_read",
    "consistency_of",
    "entry_json",
    "raft_status",
    "read_headers",
    "session_json",
    "store_errors",
]

NO_LEADER = "No cluster leader"  # Consul's structs.ErrNoLeader text, answered with a 500
# Sessions are bound to the node's gossip health: Consul's default check list.
SERF_CHECKS = ["serfHealth"]
NS_PER_S = 1_000_000_000

# A read of the store: (index, wait_s) -> the answer with its query meta.  index None:
# answer now; otherwise block while the read's index is at most ``index``.
Reader = Callable[[int | None, float | None], Awaitable["KVRead[Any]"]]


@contextmanager
def store_errors() -> Iterator[None]:
    """``mesh.kv``'s errors as Consul's answers (see the module docstring)."""
    try:
        yield
    except NoLeaderError:
        raise HttpError(500, NO_LEADER) from None
    except OutcomeUnknownError as exc:
        raise HttpError(500, f"the outcome is unknown (read before retrying): {exc}") from None
    except ConfigError as exc:
        raise HttpError(400, str(exc)) from None


def consistency_of(request: Request) -> Consistency:
    """``?stale`` / ``?consistent`` (both: a 400 from ``Blocking``), else ``default``."""
    if "consistent" in request.query_params:
        return "consistent"
    return "stale" if "stale" in request.query_params else "default"


async def blocking_read(request: Request, blocking: Blocking, read: Reader) -> KVRead[Any]:
    """``read``, as a blocking query when ``?index`` is given (see the module docstring)."""
    api = api_of(request)
    if not blocking.index or api.closing:
        with store_errors():
            return await read(None, None)
    wait_s = jittered_wait_s(api, blocking)
    outcome: list[KVRead[Any] | Exception] = []

    async def held() -> None:  # the read bounds its own wait
        try:
            outcome.append(await read(blocking.index, wait_s))
        except Exception as exc:  # re-raised below, not as an exception group
            outcome.append(exc)

    await hold(request, api, held)
    with store_errors():
        if not outcome:  # the server is closing, or nobody is listening: answer now
            return await read(None, None)
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]


def read_headers(read: KVRead[Any]) -> dict[str, str]:
    """Consul's query meta of a store read."""
    return {
        "X-Consul-Index": str(read.index),
        "X-Consul-KnownLeader": "true" if read.leader is not None else "false",
        "X-Consul-LastContact": "0",
    }


def entry_json(entry: KVEntry) -> dict[str, Any]:
    """Consul's ``DirEntry``: ``Value`` base64 (``null`` when empty, as Go's nil slice)."""
    out: dict[str, Any] = {
        "LockIndex": entry.lock_index,
        "Key": entry.key,
        "Flags": entry.flags,
        "Value": base64.b64encode(entry.value).decode() if entry.value else None,
    }
    if entry.session is not None:
        out["Session"] = entry.session
    out["CreateIndex"] = entry.create_index
    out["ModifyIndex"] = entry.modify_index
    return out


def session_json(session: Session) -> dict[str, Any]:
    """Consul's ``structs.Session`` (``LockDelay`` is a ``time.Duration``: nanoseconds)."""
    ttl = format_duration(round(session.ttl_s * NS_PER_S)) if session.ttl_s else ""
    return {
        "ID": session.id,
        "Name": session.name,
        "Node": session.node,
        "LockDelay": round(session.lock_delay_s * NS_PER_S),
        "Behavior": session.behavior,
        "TTL": ttl,
        "NodeChecks": SERF_CHECKS,
        "ServiceChecks": None,
        "Checks": SERF_CHECKS,  # the pre-1.7 field, still read by older clients
        "CreateIndex": session.create_index,
        "ModifyIndex": session.modify_index,
    }


def _hostport(member: Member) -> str:
    return format_hostport(member.address, member.port)


def raft_status(mesh: Mesh) -> RaftStatus:
    """The ``/v1/status/*`` seam: the leader and voters as ``ip:port`` of their mesh
    port (Consul gives the servers' RPC address; meshlite's Raft rides the mesh port)."""

    def status() -> LeaderInfo:
        leader = mesh.leader()
        peers = sorted(_hostport(m) for m in mesh.raft_peers())
        return LeaderInfo("" if leader is None else _hostport(leader), tuple(peers))

    return status
