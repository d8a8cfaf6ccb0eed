"""The Raft side of :class:`~meshlite.Mesh`: servers, the leader, ``mesh.kv`` and ``mesh.lock``.

Theory of operation
-------------------
A peer started with ``server=True`` runs a :class:`RaftServer` on the mesh's loop:
Raft messages ride mesh *channels* (frames prefixed ``CHANNEL_RAFT``), forwarded KV
calls arrive as ``Kind.RPC`` calls on multiplexed connections (``_rpc_mux``,
``_kv_serve``), and the server's name in Raft is
its member name.  Servers find each other through gossip: a server's meta carries
``role=server`` (Consul's ``role=consul`` serf tag) and its Raft standing
(``raft=leader|voter|none``, and ``raft_term`` on the leader), which is how peers that
are not servers know the leader without asking (``leader()``).

One task per server (``_raft_loop``, every ``LOOP_S``) does what Consul's
``maybeBootstrap`` and leader loop do:

* **Bootstrap.**  A server with no Raft state founds the cluster once it sees exactly
  ``bootstrap_expect`` alive servers, itself included, and none of them reports Raft
  state (the ``state`` call; a server restarted without its data must not found a
  second cluster next to the first — it waits to be added instead).
* **Standing.**  When this server's role or term changes, its gossip meta is updated.
* **Leader duties** (``_core/autopilot.py``): add alive servers that are not voters,
  remove voters that left or stayed down for ``dead_server_s``, and invalidate the
  sessions of nodes the mesh declared dead or left (``cmd_node_failed``).

A graceful ``leave()`` of the leader first hands leadership to the most up-to-date
alive voter (thesis §3.10), so the cluster does not wait an election timeout.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from meshlite._core import events as ev
from meshlite._core.autopilot import AddVoter, Autopilot, NodeFailed, RemoveVoter, plan
from meshlite._core.kv import cmd_node_failed
from meshlite._core.raft import RaftConfig, Role
from meshlite._core.wire_checks import DecodeError
from meshlite._kv_client import KV
from meshlite._kv_serve import serve
from meshlite._kv_wire import decode_reply, encode_call
from meshlite._lock import Lock
from meshlite._raft_node import CHANNEL_RAFT
from meshlite._raft_server import RaftServer
from meshlite._transport import NotSentError
from meshlite.errors import ConfigError, MeshliteError, NotLeaderError

if TYPE_CHECKING:
    from meshlite._core.swim import SwimCore
    from meshlite._core.wire import Addr
    from meshlite._driver import Driver

__all__ = [
    "DEFAULT_DEAD_SERVER_S",
    "SERVER_META_KEY",
    "SERVER_META_VALUE",
    "RaftMethods",
    "is_server",
    "raft_settings",
]

log = logging.getLogger("meshlite.raft")

# How often a server checks bootstrap, its standing and the leader duties.  Sessions
# of a failed node are invalidated within this of the mesh declaring it dead.
LOOP_S = 0.2
# Autopilot's dead-server cleanup: a voter down this long is removed.  Long enough for
# a reboot or a rolling upgrade; short enough that a lost server does not hold a slot
# in the quorum for days.
DEFAULT_DEAD_SERVER_S = 300.0
# A node absent from the leader's member table is failed only after the leader has led
# this long: push/pull (every 30 s on a LAN) has told it about every member by then.
ABSENT_GRACE_S = 60.0
# How long a leaving leader waits for its hand-over (an election timeout is ~0.5-1 s).
TRANSFER_WAIT_S = 2.0
RAFT_META_KEY, RAFT_TERM_META_KEY = "raft", "raft_term"
# Servers announce themselves in their gossip meta, as Consul's servers carry serf tag
# ``role=consul``; ``Member.server`` is derived from it.
SERVER_META_KEY = "role"
SERVER_META_VALUE = "server"


def is_server(m: ev.Member) -> bool:
    return m.meta.get(SERVER_META_KEY) == SERVER_META_VALUE


@attrs.frozen
class _Routes:
    """What a peer derives from its member table to reach the servers.  Every forwarded
    KV call needs it, so it is kept until the table changes (``members_version``)."""

    core: SwimCore
    version: int
    servers: dict[str, Addr]  # alive servers' mesh addresses, by name
    leader: str | None  # the leader that alive servers gossip (the highest term wins)

    @classmethod
    def of(cls, core: SwimCore) -> _Routes:
        servers: dict[str, Addr] = {}
        best: tuple[int, str] | None = None
        for m in core.members():
            if m.status != "alive" or not is_server(m):
                continue
            servers[m.name] = (m.address, m.port)
            if m.meta.get(RAFT_META_KEY) == "leader":
                term = _term(m.meta.get(RAFT_TERM_META_KEY, ""))
                if best is None or term > best[0]:
                    best = (term, m.name)
        return cls(core, core.members_version, servers, None if best is None else best[1])


def raft_settings(
    server: bool,
    bootstrap_expect: int | None,
    data_dir: str | os.PathLike[str] | None,
    dead_server_s: float,
) -> None:
    """Validate the Raft arguments of ``Mesh.__init__`` (ConfigError says what to fix)."""
    if not server and (bootstrap_expect is not None or data_dir is not None):
        raise ConfigError("bootstrap_expect and data_dir are for servers: pass server=True")
    if bootstrap_expect is not None and (type(bootstrap_expect) is not int or bootstrap_expect < 1):
        raise ConfigError(f"bootstrap_expect must be an integer >= 1, got {bootstrap_expect!r}")
    if data_dir is not None and not isinstance(data_dir, str | os.PathLike):
        raise ConfigError(f"data_dir must be a path, got {data_dir!r}")
    if not dead_server_s > 0:
        raise ConfigError(f"dead_server_s must be > 0, got {dead_server_s!r}")


class RaftMethods:
    """Mixed into ``Mesh``; see the module docstring."""

    name: str
    server: bool
    _bootstrap_expect: int | None
    _data_dir: str | os.PathLike[str] | None
    _raft_config: RaftConfig | None
    _dead_server_s: float
    _raft: RaftServer | None
    _raft_meta: dict[str, str]
    _kv: KV | None
    _routes_seen: _Routes | None

    def _running(self) -> Driver:
        raise NotImplementedError  # Mesh's

    def _gossip_meta(self) -> dict[str, str]:
        raise NotImplementedError  # Mesh's

    def _public(self, m: ev.Member, leader: str | None = None) -> ev.Member:
        raise NotImplementedError  # Mesh's

    # ------------------------------------------------------------------ public

    @property
    def kv(self) -> KV:
        """The replicated KV store and sessions (``docs/kv.md``); any peer may use it."""
        if self._kv is None:
            self._running()  # NotRunningError before start
            self._kv = KV(self)
        return self._kv

    def lock(
        self,
        key: str,
        value: bytes = b"",
        *,
        lock_delay_s: float = 15.0,
        session_ttl_s: float = 0.0,
    ) -> Lock:
        """A distributed lock on ``key`` (``async with mesh.lock("jobs/nightly"):``),
        held by a session bound to this peer's health (``docs/kv.md``)."""
        return Lock(self.kv, key, value, lock_delay_s=lock_delay_s, session_ttl_s=session_ttl_s)

    def leader(self) -> ev.Member | None:
        """The Raft leader as a member (``/v1/status/leader``), or None during an election
        or in a mesh without servers."""
        name = self._raft_leader_name()
        if name is None:
            return None
        return next((self._public(m, name) for m in self._all() if m.name == name), None)

    def raft_peers(self) -> list[ev.Member]:
        """The Raft voters as members (``/v1/status/peers``)."""
        if self._raft is not None:
            names = set(self._raft.peers())
        else:
            names = {
                m.name for m in self._all() if m.meta.get(RAFT_META_KEY) in ("leader", "voter")
            }
        leader = self._raft_leader_name()
        return [self._public(m, leader) for m in self._all() if m.name in names]

    async def raft_stats(self) -> dict[str, Any]:
        """This server's Raft status and storage counters; ``{}`` on a non-server."""
        return {} if self._raft is None else await self._raft.stats()

    # ------------------------------------------------------------------ routing facts

    def _all(self) -> list[ev.Member]:
        return self._running().core.members()

    def _raft_local(self) -> RaftServer | None:
        return self._raft

    def _kv_sizes(self) -> tuple[int, int] | None:
        """``(keys, sessions)`` of this server's replica; None on a peer that is not one."""
        return None if self._raft is None else self._raft.kv.sizes()

    def _leads(self) -> bool:
        """This peer is a server and its Raft core is the leader now."""
        return self._raft is not None and self._raft.core.role is Role.LEADER

    def _routes(self) -> _Routes:
        core = self._running().core
        seen = self._routes_seen
        if seen is None or seen.core is not core or seen.version != core.members_version:
            seen = self._routes_seen = _Routes.of(core)
        return seen

    def _raft_leader_name(self) -> str | None:
        if self._raft is not None:
            return self._raft.leader()
        return self._routes().leader

    def _server_addrs(self) -> dict[str, Addr]:
        return dict(self._routes().servers)

    def _member_addr(self, name: str) -> Addr | None:
        for m in self._all():
            if m.name == name and m.status in ("alive", "suspect"):
                return (m.address, m.port)
        return None

    def _node_alive(self, name: str) -> bool:
        return self._member_addr(name) is not None

    # ------------------------------------------------------------------ lifecycle

    async def _start_raft(self, driver: Driver) -> None:
        server = RaftServer(
            self.name,
            data_dir=self._data_dir,
            open_channel=driver.open_channel,
            address_of=self._member_addr,
            config=self._raft_config,
            durable=self._data_dir is not None,
        )
        self._raft = server

        def on_channel(data: bytes, _src: Addr) -> None:
            if data[:1] == CHANNEL_RAFT:
                server.on_message(data[1:])

        async def on_rpc(data: bytes) -> bytes:
            return await serve(server, data, self._node_alive)

        driver.on_channel_message = on_channel
        driver.rpc_handler = on_rpc
        await driver.start(server.run)
        driver.spawn(self._raft_loop)
        log.info(
            "raft server started: data_dir=%s bootstrap_expect=%s",
            self._data_dir or "(memory)",
            self._bootstrap_expect,
        )

    def _close_raft(self) -> None:
        if self._raft is not None:
            self._raft.close()

    async def _leave_raft(self) -> None:
        """Hand leadership over before leaving (Consul's leader does the same)."""
        server = self._raft
        if server is None or server.core.role is not Role.LEADER:
            return
        progress = server.core.status()["progress"]
        alive = [v for v in server.peers() if v != self.name and self._node_alive(v)]
        if not alive:
            return
        to = max(alive, key=lambda v: progress.get(v, {}).get("match", 0))
        try:
            server.node.transfer_leadership(to)
        except (NotLeaderError, ConfigError):
            return
        with anyio.move_on_after(TRANSFER_WAIT_S):
            await server.node.wait_for(lambda: server.core.role is not Role.LEADER)
        log.info("raft: handed leadership to %s before leaving", to)

    # ------------------------------------------------------------------ the loop

    async def _raft_loop(self) -> None:
        server = self._raft
        assert server is not None
        pilot = Autopilot(self._dead_server_s, ABSENT_GRACE_S)
        while True:
            await anyio.sleep(LOOP_S)
            try:
                await self._raft_step(server, pilot)
            except MeshliteError as exc:  # a duty that cannot be done now is retried
                log.debug("raft loop: %s", exc)

    async def _raft_step(self, server: RaftServer, pilot: Autopilot) -> None:
        status = server.core.status()
        if not (status["term"] or status["last_index"]) and self._bootstrap_expect:
            await self._maybe_bootstrap(server, self._bootstrap_expect)
        self._update_standing(server)
        members = self._all()
        statuses = {m.name: m.status for m in members}
        leading = server.core.role is Role.LEADER
        pilot.observe(statuses, anyio.current_time(), leading)
        if not leading:
            return
        servers = {m.name for m in members if self._public(m).server}
        nodes = {s.node for s in server.kv.sessions()}
        actions = plan(
            self.name, set(server.peers()), statuses, servers, nodes, pilot, anyio.current_time()
        )
        changed_voters = False
        for action in actions:
            if isinstance(action, NodeFailed):
                log.info("raft: invalidating the sessions of failed node %s", action.node)
                await server._propose(cmd_node_failed(action.node))
            elif not changed_voters:
                changed_voters = True
                self._change_voters(server, action)

    def _change_voters(self, server: RaftServer, action: AddVoter | RemoveVoter) -> None:
        try:
            if isinstance(action, AddVoter):
                server.node.propose_conf_change(add=action.name)
                log.info("raft: adding server %s as a voter", action.name)
            else:
                server.node.propose_conf_change(remove=action.name)
                log.info("raft: removing server %s (%s)", action.name, action.reason)
        except (ConfigError, NotLeaderError) as exc:  # one change pending: next round
            log.debug("raft: voter change deferred: %s", exc)

    async def _maybe_bootstrap(self, server: RaftServer, expect: int) -> None:
        servers = self._server_addrs()
        names = set(servers) | {self.name}
        if len(names) != expect:
            server.maybe_bootstrap(names, expect)  # logs a refusal when there are too many
            return
        payload = encode_call("state")
        for name, addr in servers.items():
            if name == self.name:
                continue
            try:
                reply = await self._running().call(addr, payload, 2.0)
            except NotSentError:
                return
            try:
                has_state = None if reply is None else decode_reply("state", (), reply)
            except DecodeError:
                return
            if has_state is not False:
                return  # unknown, or it has state: wait to be added, never found twice
        if server.maybe_bootstrap(names, expect):
            log.info("raft: bootstrapped the cluster with %s", ", ".join(sorted(names)))

    def _update_standing(self, server: RaftServer) -> None:
        core = server.core
        if core.role is Role.LEADER:
            meta = {RAFT_META_KEY: "leader", RAFT_TERM_META_KEY: str(core.term)}
        else:
            meta = {RAFT_META_KEY: "voter" if self.name in core.voters() else "none"}
        if meta != self._raft_meta:
            self._raft_meta = meta
            self._running().feed(ev.MetaChanged(self._gossip_meta()))


def _term(text: str) -> int:
    """A term from remote gossip meta; garbage counts as term 0."""
    return int(text) if text.isdigit() and len(text) < 20 else 0
