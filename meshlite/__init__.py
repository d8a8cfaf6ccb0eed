"""meshlite: an embedded service mesh for Python.

Async: ``async with meshlite.Mesh(...) as mesh``; ``mesh.register(...)``,
``mesh.discover("db")``.  Sync: ``meshlite.start()``, ``meshlite.register(...)``,
``meshlite.discover("db")``, ``meshlite.stop()`` run a default mesh in a background thread.
"""

from __future__ import annotations

from meshlite._core.config import SwimConfig
from meshlite._core.events import Member, MemberEvent, MemberEventKind
from meshlite._core.kv import KVEntry, KVResult, Session, TxnOp
from meshlite._crypto import generate_key
from meshlite._default import default_mesh, members, start, stop
from meshlite._default_kv import SyncKV, kv, lock
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
from meshlite._kv_client import KV
from meshlite._lock import Lock
from meshlite._mesh import Mesh
from meshlite._raft_server_kv import KVRead
from meshlite.errors import (
    ConfigError,
    KeyringError,
    MeshliteError,
    NoLeaderError,
    NotLeaderError,
    NotRunningError,
    OutcomeUnknownError,
)

__all__ = [
    "KV",
    "CallableCheck",
    "ConfigError",
    "HTTPCheck",
    "Instance",
    "KVEntry",
    "KVRead",
    "KVResult",
    "KeyringError",
    "KeyringResult",
    "Lock",
    "Member",
    "MemberEvent",
    "MemberEventKind",
    "Mesh",
    "MeshliteError",
    "NoLeaderError",
    "NotLeaderError",
    "NotRunningError",
    "OutcomeUnknownError",
    "ScriptCheck",
    "Session",
    "Status",
    "SwimConfig",
    "SyncKV",
    "TCPCheck",
    "TTLCheck",
    "TxnOp",
    "Watch",
    "check",
    "default_mesh",
    "deregister",
    "discover",
    "generate_key",
    "kv",
    "lock",
    "members",
    "pick",
    "register",
    "start",
    "stop",
    "watch",
]

__version__ = "0.1.0.dev0"
