"""meshlite: an embedded service mesh for Python."""

from __future__ import annotations

from meshlite._core.config import SwimConfig
from meshlite._core.events import Member, MemberEvent, MemberEventKind
from meshlite.errors import ConfigError, KeyringError, MeshliteError, NotRunningError

__all__ = [
    "ConfigError",
    "KeyringError",
    "Member",
    "MemberEvent",
    "MemberEventKind",
    "MeshliteError",
    "NotRunningError",
    "SwimConfig",
]

__version__ = "0.1.0.dev0"
