"""The meshlite exception tree.

Every error meshlite raises on purpose derives from :class:`MeshliteError`, so an
application can catch the library's failures in one place.  Remote garbage never
raises (it becomes a counted drop); these are for local misuse and for operations
that cannot be completed.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "KeyringError",
    "MeshliteError",
    "NoLeaderError",
    "NotLeaderError",
    "NotRunningError",
    "OutcomeUnknownError",
]


class MeshliteError(Exception):
    """Base class of every error meshlite raises on purpose."""


class ConfigError(MeshliteError, ValueError):
    """A setting, address, key or option is malformed; the message says what to fix."""


class KeyringError(MeshliteError):
    """A keyring operation cannot be done (unknown key, removing the primary key, ...)."""


class NotRunningError(MeshliteError, RuntimeError):
    """The mesh is not running (not started yet, or already stopped)."""


class NotLeaderError(MeshliteError):
    """This Raft server is not the leader (or is handing leadership over).

    ``leader_hint`` names the server believed to lead, or ``None`` when unknown (an
    election is running): forward the request there, or retry shortly.
    """

    def __init__(self, leader_hint: str | None, reason: str = "not the Raft leader") -> None:
        where = f"; try {leader_hint!r}" if leader_hint is not None else "; no leader known yet"
        super().__init__(reason + where)
        self.leader_hint = leader_hint


class NoLeaderError(MeshliteError):
    """No Raft leader could be reached: the mesh has no servers, or an election did not
    finish within the forwarding deadline.  Nothing was applied; retrying is safe."""


class OutcomeUnknownError(MeshliteError):
    """A write reached a leader but no answer came back (it crashed or the connection
    broke): it may or may not have been applied.  Read before retrying a non-idempotent
    write (a ``cas`` put), as with any networked database."""
