"""meshlite: an embedded service mesh for Python.

Async: ``async with meshlite.Mesh(...) as mesh``.  Sync: ``meshlite.start()``,
``meshlite.members()``, ``meshlite.stop()`` run a default mesh in a background thread.
"""

from __future__ import annotations

from meshlite._core.config import SwimConfig
from meshlite._core.events import Member, MemberEvent, MemberEventKind
from meshlite._crypto import generate_key
from meshlite._default import default_mesh, members, start, stop
from meshlite._keyring_ops import KeyringResult
from meshlite._mesh import Mesh
from meshlite.errors import ConfigError, KeyringError, MeshliteError, NotRunningError

__all__ = [
    "ConfigError",
    "KeyringError",
    "KeyringResult",
    "Member",
    "MemberEvent",
    "MemberEventKind",
    "Mesh",
    "MeshliteError",
    "NotRunningError",
    "SwimConfig",
    "default_mesh",
    "generate_key",
    "members",
    "start",
    "stop",
]

__version__ = "0.1.0.dev0"
