"""meshlite: an embedded service mesh for Python.

Async: ``async with meshlite.Mesh(...) as mesh``; ``mesh.register(...)``,
``mesh.discover("db")``.  Sync: ``meshlite.start()``, ``meshlite.register(...)``,
``meshlite.discover("db")``, ``meshlite.stop()`` run a default mesh in a background thread.
"""

from __future__ import annotations

from meshlite._core.config import SwimConfig
from meshlite._core.events import Member, MemberEvent, MemberEventKind
from meshlite._crypto import generate_key
from meshlite._default import default_mesh, members, start, stop
from meshlite._default_services import (
    Watch,
    check,
    deregister,
    discover,
    pick,
    register,
    watch,
)
from meshlite._health import (
    CallableCheck,
    HTTPCheck,
    Instance,
    ScriptCheck,
    Status,
    TCPCheck,
    TTLCheck,
)
from meshlite._keyring_ops import KeyringResult
from meshlite._mesh import Mesh
from meshlite.errors import ConfigError, KeyringError, MeshliteError, NotRunningError

__all__ = [
    "CallableCheck",
    "ConfigError",
    "HTTPCheck",
    "Instance",
    "KeyringError",
    "KeyringResult",
    "Member",
    "MemberEvent",
    "MemberEventKind",
    "Mesh",
    "MeshliteError",
    "NotRunningError",
    "ScriptCheck",
    "Status",
    "SwimConfig",
    "TCPCheck",
    "TTLCheck",
    "Watch",
    "check",
    "default_mesh",
    "deregister",
    "discover",
    "generate_key",
    "members",
    "pick",
    "register",
    "start",
    "stop",
    "watch",
]

__version__ = "0.1.0.dev0"
