"""meshlite: an embedded service mesh for Python.

Async: ``async with meshlite.Mesh(...) as mesh``; ``mesh.register(...)``,
``mesh.discover("db")``.  Sync: ``meshlite.start()``, ``meshlite.register(...)``,
``meshlite.discover("db")``, ``meshlite.stop()`` run a default mesh in a background thread.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Where each public name lives.  They are imported on first use (PEP 562), so a process
# that needs only part of meshlite — ``meshlite kv get`` talking to an agent over HTTP —
# does not pay for importing all of it.
_EXPORTS: dict[str, str] = {
    "SwimConfig": "meshlite._core.config",
    "Member": "meshlite._core.events",
    "MemberEvent": "meshlite._core.events",
    "MemberEventKind": "meshlite._core.events",
    "KVEntry": "meshlite._core.kv",
    "KVResult": "meshlite._core.kv",
    "Session": "meshlite._core.kv",
    "TxnOp": "meshlite._core.kv",
    "generate_key": "meshlite._crypto",
    "default_mesh": "meshlite._default",
    "members": "meshlite._default",
    "start": "meshlite._default",
    "stop": "meshlite._default",
    "SyncKV": "meshlite._default_kv",
    "kv": "meshlite._default_kv",
    "lock": "meshlite._default_kv",
    "Watch": "meshlite._default_services",
    "check": "meshlite._default_services",
    "deregister": "meshlite._default_services",
    "discover": "meshlite._default_services",
    "pick": "meshlite._default_services",
    "register": "meshlite._default_services",
    "watch": "meshlite._default_services",
    "CallableCheck": "meshlite._health",
    "HTTPCheck": "meshlite._health",
    "Instance": "meshlite._health",
    "ScriptCheck": "meshlite._health",
    "Status": "meshlite._health",
    "TCPCheck": "meshlite._health",
    "TTLCheck": "meshlite._health",
    "KeyringResult": "meshlite._keyring_ops",
    "KV": "meshlite._kv_client",
    "Lock": "meshlite._lock",
    "Mesh": "meshlite._mesh",
    "KVRead": "meshlite._raft_server_kv",
    "ConfigError": "meshlite.errors",
    "KeyringError": "meshlite.errors",
    "MeshliteError": "meshlite.errors",
    "NoLeaderError": "meshlite.errors",
    "NotLeaderError": "meshlite.errors",
    "NotRunningError": "meshlite.errors",
    "OutcomeUnknownError": "meshlite.errors",
}

if TYPE_CHECKING:
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
else:

    def __getattr__(name: str) -> Any:
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module 'meshlite' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *_EXPORTS})


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
