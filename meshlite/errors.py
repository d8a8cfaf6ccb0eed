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
    "NotRunningError",
]


class MeshliteError(Exception):
    """Base class of every error meshlite raises on purpose."""


class ConfigError(MeshliteError, ValueError):
    """A setting, address, key or option is malformed; the message says what to fix."""


class KeyringError(MeshliteError):
    """A keyring operation cannot be done (unknown key, removing the primary key, ...)."""


class NotRunningError(MeshliteError, RuntimeError):
    """The mesh is not running (not started yet, or already stopped)."""
