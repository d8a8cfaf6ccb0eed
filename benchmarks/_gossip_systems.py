"""How each gossip system is launched and how its log lines are read.

Theory of operation
-------------------
The membership benchmark (``bench_membership_vs_serf.py``) measures two systems with one
piece of code; they differ only in a :class:`GossipSystem`: the command line that starts one
member, and a parser that turns one line of that member's output into a normalised
:class:`Sighting` ("I, the observer, now see member X as joined/suspect/failed/left/...").

- HashiCorp Serf (Debian's ``serf`` 0.9.4, which reports itself as ``0.8.2-dev``) logs
  ``[INFO] serf: EventMemberJoin: NAME ADDR`` (also ``Failed``/``Leave``/``Update``/``Reap``)
  and, on the prober only, ``[INFO] memberlist: Suspect NAME has failed, no acks received``.
- ``meshlite agent --log-json`` logs one JSON object per line with ``event`` (join/suspect/
  alive/dead/left/update/reap) and ``member`` (see ``meshlite/_agent_log.py``).

Neither program's own timestamps are trusted: the harness stamps each line with
``time.monotonic()`` as it arrives (``_gossip_harness.py``).
"""

from __future__ import annotations

import enum
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Protocol

import attrs

__all__ = ["SYSTEMS", "GossipSystem", "Kind", "MeshliteSystem", "SerfSystem", "Sighting", "Spec"]


class Kind(enum.Enum):
    """What an observer reports about a member, in words both systems share."""

    JOIN = "join"
    SUSPECT = "suspect"
    ALIVE = "alive"  # refuted a suspicion / came back
    FAILED = "failed"  # serf EventMemberFailed, meshlite "dead"
    LEFT = "left"
    UPDATE = "update"
    REAP = "reap"


@attrs.frozen
class Sighting:
    """One parsed log line: ``kind`` happened to ``member`` as seen by the line's writer."""

    kind: Kind
    member: str


@attrs.frozen
class Spec:
    """One member to launch: its name, gossip port, serf RPC port and accounting group id."""

    name: str
    port: int
    rpc_port: int
    gid: int | None


class GossipSystem(Protocol):
    @property
    def name(self) -> str:
        """Short name: the key in :data:`SYSTEMS` and in the results."""

    def unavailable(self) -> str | None:
        """Why this system cannot run here (e.g. not installed), or None."""

    def argv(self, spec: Spec, seed: Spec | None, key: str) -> list[str]:
        """The command line that starts ``spec`` (joining ``seed`` if given)."""

    def is_ready(self, line: str) -> bool:
        """True for the line that says the member is up and listening."""

    def parse(self, line: str) -> Sighting | None:
        """A membership sighting in one output line, or None for any other line."""

    def version(self) -> str:
        """The version string the program reports."""


_SERF_EVENT = re.compile(r"serf: EventMember(Join|Failed|Leave|Update|Reap): (\S+)")
_SERF_SUSPECT = re.compile(r"memberlist: Suspect (\S+) has failed")
_SERF_KINDS = {
    "Join": Kind.JOIN,
    "Failed": Kind.FAILED,
    "Leave": Kind.LEFT,
    "Update": Kind.UPDATE,
    "Reap": Kind.REAP,
}


@attrs.frozen
class SerfSystem:
    """HashiCorp Serf with its LAN defaults, encrypted, logging at info."""

    name: str = "serf"
    binary: str = "serf"

    def unavailable(self) -> str | None:
        if shutil.which(self.binary) is None:
            return f"{self.binary!r} not found (apt-get install -y serf)"
        return None

    def argv(self, spec: Spec, seed: Spec | None, key: str) -> list[str]:
        argv = [
            self.binary,
            "agent",
            f"-node={spec.name}",
            f"-bind=127.0.0.1:{spec.port}",
            f"-rpc-addr=127.0.0.1:{spec.rpc_port}",
            f"-encrypt={key}",
            "-log-level=info",
        ]
        if seed is not None:
            argv.append(f"-join=127.0.0.1:{seed.port}")
        return argv

    def is_ready(self, line: str) -> bool:
        return "Serf agent running!" in line

    def parse(self, line: str) -> Sighting | None:
        m = _SERF_EVENT.search(line)
        if m is not None:
            return Sighting(_SERF_KINDS[m.group(1)], m.group(2))
        m = _SERF_SUSPECT.search(line)
        if m is not None:
            return Sighting(Kind.SUSPECT, m.group(1))
        return None

    def version(self) -> str:
        # Debian's 0.9.4 build reports "0.8.2-dev"; the package version says which it is.
        deb = _first_line(["dpkg-query", "-W", "-f", "${Version}", "serf"])
        return f"{_first_line([self.binary, 'version'])} (Debian package {deb})"


_MESHLITE_KINDS = {
    "join": Kind.JOIN,
    "suspect": Kind.SUSPECT,
    "alive": Kind.ALIVE,
    "dead": Kind.FAILED,
    "left": Kind.LEFT,
    "update": Kind.UPDATE,
    "reap": Kind.REAP,
}


def _default_meshlite() -> str:
    beside = Path(sys.executable).parent / "meshlite"
    return str(beside) if beside.exists() else (shutil.which("meshlite") or "meshlite")


@attrs.frozen
class MeshliteSystem:
    """``meshlite agent`` with the LAN profile (memberlist's defaults), encrypted."""

    name: str = "meshlite"
    binary: str = attrs.field(factory=_default_meshlite)

    def unavailable(self) -> str | None:
        if shutil.which(self.binary) is None:
            return f"{self.binary!r} not found (pip install -e . in the venv)"
        return None

    def argv(self, spec: Spec, seed: Spec | None, key: str) -> list[str]:
        argv = [self.binary, "agent", "--name", spec.name, "--bind", f"127.0.0.1:{spec.port}"]
        argv += ["--key", key, "--cluster", "bench", "--profile", "lan", "--log-json"]
        if seed is not None:
            argv += ["--join", f"127.0.0.1:{seed.port}"]
        return argv

    def is_ready(self, line: str) -> bool:
        record = _json_object(line)
        return record is not None and record.get("event") == "start"

    def parse(self, line: str) -> Sighting | None:
        record = _json_object(line)
        if record is None:
            return None
        kind = _MESHLITE_KINDS.get(str(record.get("event")))
        member = record.get("member")
        if kind is None or not isinstance(member, str):
            return None
        return Sighting(kind, member)

    def version(self) -> str:
        return _first_line([self.binary, "--version"])


def _json_object(line: str) -> dict[str, object] | None:
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _first_line(argv: list[str]) -> str:
    import subprocess

    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


SYSTEMS: dict[str, type[SerfSystem] | type[MeshliteSystem]] = {
    "serf": SerfSystem,
    "meshlite": MeshliteSystem,
}
