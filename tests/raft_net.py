"""A hand-driven network of Raft servers for unit tests (etcd-io/raft's ``network``).

Messages queue in FIFO order and are delivered only when the test says so
(:meth:`RaftNet.deliver`), through directional cuts and an optional drop filter, so a
test can build exactly the interleaving it wants (the Raft paper's Figure 3.7, a
partitioned node rejoining...).  Servers are ``SimServer``s from the simulator: every
Ready is persisted before its messages leave, a crash keeps only storage, and the
simulator's safety checker watches every change here too.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from meshlite._core.raft import (
    Entry,
    EntryKind,
    HardState,
    Message,
    RaftConfig,
    RaftCore,
    ReadState,
    Role,
)
from meshlite.testing._raft_checks import SafetyChecker
from meshlite.testing._raft_node import SimServer

__all__ = ["RaftNet"]


class RaftNet:
    def __init__(
        self,
        names: Iterable[str],
        config: RaftConfig | None = None,
        *,
        bootstrap: bool = True,
        seed: int = 0,
    ) -> None:
        self.config = config if config is not None else RaftConfig()
        self.seed = seed
        self.checker = SafetyChecker()
        self.names = list(names)
        self.servers: dict[str, SimServer] = {}
        self.queue: deque[Message] = deque()
        self.sent: list[Message] = []  # everything any server sent, for inspection
        self.cut_links: set[tuple[str, str]] = set()
        self.drop: Callable[[Message], bool] | None = None
        self.applied: dict[str, list[Entry]] = {}
        self.reads: dict[str, list[ReadState]] = {}
        for name in self.names:
            self.add_server(name, voters=self.names if bootstrap else None)

    # -- servers ---------------------------------------------------------------------

    def add_server(
        self,
        name: str,
        voters: list[str] | None = None,
        *,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
    ) -> RaftCore:
        """A new server; with ``hard_state``/``entries`` it boots from that storage."""
        server = SimServer(name, self.config, self.checker)
        if hard_state is not None:
            server.storage.save(hard_state, entries, None)
        self.servers[name] = server
        if name not in self.names:
            self.names.append(name)
        self.applied[name] = []
        self.reads[name] = []
        core = server.start(random.Random(f"{self.seed}/{name}"))
        if voters is not None:
            core.bootstrap(voters)
        self.process(name)
        return core

    def core(self, name: str) -> RaftCore:
        return self.servers[name].live()

    def process(self, name: str) -> None:
        self.servers[name].process(self._send, self._applied, self._read)

    def _send(self, msg: Message) -> None:
        self.sent.append(msg)
        if (msg.frm, msg.to) in self.cut_links or (self.drop is not None and self.drop(msg)):
            return
        self.queue.append(msg)

    def _applied(self, server: SimServer, entry: Entry) -> None:
        self.applied[server.name].append(entry)

    def _read(self, server: SimServer, rs: ReadState) -> None:
        self.reads[server.name].append(rs)

    def crash(self, name: str) -> None:
        self.servers[name].crash()

    def restart(self, name: str, seed: int = 1) -> RaftCore:
        server = self.servers[name]
        core = server.start(random.Random(f"{self.seed}/{name}/{seed}"))
        self.process(name)
        return core

    # -- network ---------------------------------------------------------------------

    def cut(self, a: str, b: str) -> None:
        self.cut_links |= {(a, b), (b, a)}

    def isolate(self, name: str) -> None:
        for other in self.names:
            if other != name:
                self.cut(name, other)

    def heal(self) -> None:
        self.cut_links.clear()
        self.drop = None

    def deliver(self, until: Callable[[], bool] | None = None, limit: int = 100_000) -> int:
        """Deliver queued messages (and what they cause) until none is left, or ``until``."""
        count = 0
        while self.queue and count < limit:
            if until is not None and until():
                return count
            msg = self.queue.popleft()
            server = self.servers.get(msg.to)
            if server is None or server.core is None or (msg.frm, msg.to) in self.cut_links:
                continue
            count += 1
            server.core.step(msg)
            self.process(msg.to)
        assert count < limit, "messages keep flowing: livelock?"
        return count

    # -- time and requests ---------------------------------------------------------------

    def tick(self, names: Iterable[str] | None = None, n: int = 1, deliver: bool = True) -> None:
        for _ in range(n):
            for name in self.names if names is None else names:
                server = self.servers[name]
                if server.core is not None:
                    server.core.tick()
                    self.process(name)
            if deliver:
                self.deliver()

    def elect(self, name: str) -> RaftCore:
        core = self.core(name)
        core.campaign()
        self.process(name)
        self.deliver()
        assert core.role is Role.LEADER, core.status()
        return core

    def campaign_until_leader(self, name: str, attempts: int = 3) -> RaftCore:
        """Campaign (no ticks) until ``name`` wins; a lost round teaches it the term."""
        core = self.core(name)
        for _ in range(attempts):
            core.campaign()
            self.process(name)
            self.deliver()
            if core.role is Role.LEADER:
                return core
        raise AssertionError(f"{name} cannot win: {core.status()}")

    def leaders(self) -> list[str]:
        return [
            n for n, s in self.servers.items() if s.core is not None and s.core.role is Role.LEADER
        ]

    def propose(self, name: str, data: bytes) -> int:
        index = self.core(name).propose(data)
        self.process(name)
        return index

    def normal_data(self, name: str) -> list[bytes]:
        return [e.data for e in self.applied[name] if e.kind is EntryKind.NORMAL]
