"""The services half of a peer: registrations, their checks, discovery and watches.

Theory of operation
-------------------
A :class:`Services` lives inside a running :class:`~meshlite.Mesh` and is the only code
that touches its sans-I/O :class:`~meshlite._core.directory.Directory`:

* ``register`` validates a service, starts its checks (``_check_runner.py``) and publishes
  the instance's record — aggregate status = the worst of its checks (Consul), passing
  with no checks — as a SWIM user broadcast; every later status change of a check
  republishes it with a new version.  ``deregister`` publishes a tombstone.
* ``add_check`` registers one check by itself (Consul's ``/v1/agent/check/register``),
  under the id its registrant chose: one more check of a local service, or a *node
  check*.  A node check belongs to this peer, not to one service; as in Consul, it counts
  in the health of every service instance on the node, so its status folds into the
  aggregate of every local service — present and future — and so reaches every peer's
  discovery, DNS and ``?passing`` through the ordinary records.  (Only the aggregate is
  gossiped: the node check itself is shown by this peer's HTTP API alone.)  A service's
  checks, registered with it or later, go when it is deregistered or re-registered
  (Consul drops the checks a new definition does not list); node checks stay until
  ``remove_check``.
* Records from peers arrive through the driver (``on_broadcast``, ``on_state`` for
  push/pull) and SWIM membership events through ``on_member``; corrections the
  directory asks for (refuting a stray record about us) go straight back out.
* ``discover`` is the directory's ready tuple, copied into a list: no await, no I/O.
* ``watch`` subscribers sleep on one event per service name, set only when that name's
  results really changed; a subscriber compares what it last delivered with the current
  results, so bursts coalesce into one delivery and nothing is missed.
* ``wait_changed`` is the same for the whole directory (the HTTP API's blocking
  queries): one event, set when the directory's catalog-wide ``index`` has moved.  Every
  change to this peer's checks moves it — added, removed, a new status or output — even
  when no record changes, since this peer's HTTP view shows each check.

Everything runs on the mesh's event loop; nothing here blocks it.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import anyio
import anyio.abc
import attrs

from meshlite._addr import is_ip
from meshlite._check_runner import CheckRunner
from meshlite._core.catalog import MAX_RECORD_BYTES, Record, encode_record
from meshlite._core.directory import Directory, instance_of
from meshlite._core.events import MemberEvent, UserBroadcast
from meshlite._core.wire_checks import MAX_META_BYTES, MAX_NAME_BYTES
from meshlite._health import (
    CallableCheck,
    CheckSpec,
    HTTPCheck,
    Instance,
    ScriptCheck,
    Status,
    TCPCheck,
    TTLCheck,
    check_id_problem,
    worst,
)
from meshlite.errors import ConfigError

__all__ = ["Services"]

log = logging.getLogger("meshlite")

# How often old tombstones and records of nodes SWIM forgot are dropped.
HOUSEKEEPING_INTERVAL_S = 60.0
_SPEC_TYPES = (HTTPCheck, TCPCheck, ScriptCheck, TTLCheck, CallableCheck)  # CheckSpec's members


@attrs.define
class _Local:
    """One service registered on this peer."""

    record: Record  # the fields; version and status are refreshed on publish
    check_ids: list[str]


class Services:
    """Registrations, checks and discovery of one running mesh."""

    def __init__(
        self,
        node: str,
        address: str,
        feed: Callable[[UserBroadcast], None],
        known_nodes: Callable[[], Iterable[str]],
        publisher: Any = None,
    ) -> None:
        self.node = node
        self._known_nodes = known_nodes
        self._address = address
        self._feed = feed
        self._publisher = publisher  # meshlite._mdns_publish.Publisher or None
        self.directory = Directory(node, first_version=time.time_ns() // 1000)
        self._local: dict[str, _Local] = {}
        self._check_owner: dict[str, str] = {}  # check id -> service id
        # Node checks: check id -> the directory index when it was added (its CreateIndex).
        self._node_checks: dict[str, int] = {}
        self._pending: dict[str, list[CallableCheck]] = {}  # decorator checks by name/id
        self._wake: dict[str, anyio.Event] = {}
        self._any: anyio.Event | None = None  # wait_changed's, created on first use
        self._any_at = 0  # the directory index when ``_any`` was created
        self._closed = False
        self.runner = CheckRunner(
            self._on_check_change, self._on_deregister_due, on_output=self._on_check_output
        )

    # ------------------------------------------------------------------ lifecycle

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the checks and the housekeeping until cancelled."""
        async with self.runner:
            task_status.started()
            while True:
                await anyio.sleep(HOUSEKEEPING_INTERVAL_S)
                self._housekeeping()

    def close(self) -> None:
        """Wake every watcher so it ends; later calls see an empty directory."""
        self._closed = True
        for event in self._wake.values():
            event.set()
        if self._any is not None:
            self._any.set()

    # ------------------------------------------------------------------ registration

    def register(
        self,
        name: str,
        port: int,
        *,
        id: str | None,
        tags: Sequence[str],
        meta: Mapping[str, str] | None,
        address: str | None,
        checks: Sequence[CheckSpec],
    ) -> Instance:
        sid = id if id is not None else name
        record = _validated(self.node, sid, name, port, tags, meta, address or self._address)
        if sid in self._local:
            self._stop_checks(sid)
        # Decorator checks attach by id or by name; with the default id the two are one key.
        targets = dict.fromkeys((sid, name))
        checks = [*checks, *(spec for t in targets for spec in self._pending.get(t, ()))]
        entry = _Local(record, [])
        self._local[sid] = entry
        for i, spec in enumerate(checks):
            self._add_check(sid, spec, i, len(checks))
        return self._publish(entry)

    def deregister(self, service_id: str) -> None:
        if service_id not in self._local:
            raise ConfigError(f"no service with id {service_id!r} is registered on this peer")
        self._stop_checks(service_id)
        del self._local[service_id]
        names, broadcast = self.directory.withdraw(service_id, anyio.current_time())
        if broadcast is not None:
            self._feed(broadcast)
        if self._publisher is not None:
            self._publisher.unpublish(service_id)
        self._wake_names(names)

    def add_callable_check(self, target: str, spec: CallableCheck) -> None:
        """``@mesh.check(target)``: attach to the local instances whose id or name is
        ``target`` now, and to any registered under it later."""
        self._pending.setdefault(target, []).append(spec)
        for sid, entry in list(self._local.items()):
            if target in (sid, entry.record.name):
                self._add_check(sid, spec, len(entry.check_ids), len(entry.check_ids) + 1)
                self._publish(entry)

    def add_check(self, spec: CheckSpec, check_id: str, service_id: str | None) -> None:
        """Run ``spec`` as ``check_id``: one more check of the local service ``service_id``,
        or a node check (``None``).  A check with that id, wherever it was, is replaced."""
        problem = check_id_problem(check_id)
        if problem is not None:
            raise ConfigError(problem)
        if not isinstance(spec, _SPEC_TYPES):
            raise ConfigError(f"not a check spec: {spec!r} (use TTLCheck, HTTPCheck, ...)")
        if service_id is not None and service_id not in self._local:
            raise ConfigError(f"no service with id {service_id!r} is registered on this peer")
        if self._known(check_id):
            self._drop_check(check_id)
        self.runner.add(check_id, spec)
        if service_id is None:
            self._node_checks[check_id] = self.directory.index
        else:
            self._check_owner[check_id] = service_id
            self._local[service_id].check_ids.append(check_id)
        self._settle_local()

    def remove_check(self, check_id: str) -> None:
        """Stop and forget ``check_id``: a node check, or any check of a local service."""
        if not self.has_check(check_id):
            raise ConfigError(f"no check with id {check_id!r} on this peer")
        self._drop_check(check_id)
        self._settle_local()

    def has_check(self, check_id: str) -> bool:
        """Whether ``check_id`` is a check of this peer (none once the services close)."""
        return self._known(check_id) and not self._closed

    def check_spec(self, check_id: str) -> CheckSpec | None:
        """What ``check_id`` runs, or None if there is no such check here."""
        return self.runner.spec(check_id) if self.has_check(check_id) else None

    def node_checks(self) -> list[tuple[str, CheckSpec, Status, str, int]]:
        """This node's checks: ``(check id, spec, status, output, create index)``."""
        if self._closed:
            return []
        return [(c, self.runner.spec(c), *self.runner.state(c), created)
                for c, created in self._node_checks.items()]  # fmt: skip

    def local(self) -> list[Instance]:
        """The services registered on this peer, as discovery reports them."""
        return [instance_of(self._record(e)) for e in self._local.values()]

    def ttl_update(self, check_id: str, status: Status, note: str) -> None:
        self.runner.ttl_update(check_id, status, note)

    def checks_of(self, service_id: str) -> list[tuple[str, CheckSpec, Status, str]]:
        """The checks of a service registered here: ``(check id, spec, status, output)``."""
        entry = self._local.get(service_id)
        if entry is None or self._closed:
            return []
        return [(c, self.runner.spec(c), *self.runner.state(c)) for c in entry.check_ids]

    # ------------------------------------------------------------------ discovery

    def discover(self, name: str, tag: str | None, passing_only: bool) -> list[Instance]:
        return list(self.directory.discover(name, tag, passing_only))

    async def watch(
        self, name: str, tag: str | None, passing_only: bool
    ) -> AsyncIterator[list[Instance]]:
        last: tuple[Instance, ...] | None = None
        while not self._closed:
            event = self._wake.get(name)
            if event is None:
                event = self._wake[name] = anyio.Event()
            current = self.directory.discover(name, tag, passing_only)
            if current != last:
                last = current
                yield list(current)
                continue
            await event.wait()

    async def wait_changed(self, index: int) -> None:
        """Return once the directory's ``index`` is not ``index`` (or the services close)."""
        while self.directory.index == index and not self._closed:
            if self._any is None:
                self._any, self._any_at = anyio.Event(), self.directory.index
            await self._any.wait()

    # ------------------------------------------------------------------ from the network

    def on_broadcast(self, payload: bytes) -> None:
        self._settle(*self.directory.on_broadcast(payload, anyio.current_time()))

    def on_state(self, state: bytes, join: bool) -> None:
        now = anyio.current_time()
        names, fixes, relays = self.directory.on_state(state, now, relay=not join)
        if relays:
            log.debug("catalog: relaying %d records a push/pull brought as news", len(relays))
        self._settle(names, fixes, relays)

    def on_member(self, event: MemberEvent) -> None:
        self._wake_names(self.directory.on_member(event))

    def _settle(
        self, names: set[str], fixes: list[UserBroadcast], relays: list[UserBroadcast]
    ) -> None:
        for fix in fixes:
            log.info("catalog: refuting a stale record about this peer's services")
            self._feed(fix)
        for relay in relays:
            self._feed(relay)
        self._wake_names(names)

    # ------------------------------------------------------------------ internals

    def _add_check(self, sid: str, spec: CheckSpec, index: int, count: int) -> None:
        check_id = self._default_check_id(sid, index, count)
        self._check_owner[check_id] = sid
        self._local[sid].check_ids.append(check_id)
        self.runner.add(check_id, spec)

    def _default_check_id(self, sid: str, index: int, count: int) -> str:
        """Consul's ids: "service:<id>" for a lone check, "service:<id>:<n>" (from 1) for
        several; past ids already taken (by checks registered under such ids)."""
        if count == 1 and index == 0 and not self._known(f"service:{sid}"):
            return f"service:{sid}"
        # Of these len(taken) + 1 candidates at least one is free.
        for n in range(index + 1, index + 2 + len(self._check_owner) + len(self._node_checks)):
            if not self._known(candidate := f"service:{sid}:{n}"):
                return candidate
        raise AssertionError("unreachable: more candidate ids than checks")

    def _known(self, check_id: str) -> bool:
        return check_id in self._check_owner or check_id in self._node_checks

    def _drop_check(self, check_id: str) -> None:
        """Stop ``check_id`` and take it off its owner (or the node); publishes nothing."""
        owner = self._check_owner.pop(check_id, None)
        if owner is not None:
            self._local[owner].check_ids.remove(check_id)
        else:
            del self._node_checks[check_id]
        self.runner.remove(check_id)

    def _stop_checks(self, sid: str) -> None:
        for check_id in self._local[sid].check_ids:
            self._check_owner.pop(check_id, None)
            self.runner.remove(check_id)
        self._local[sid].check_ids.clear()

    def _status(self, entry: _Local) -> Status:
        """The worst of the service's checks and the node's (Consul's aggregate)."""
        own = (self.runner.state(c)[0] for c in entry.check_ids)
        node = (self.runner.state(c)[0] for c in self._node_checks)
        return worst(itertools.chain(own, node))

    def _settle_local(self) -> None:
        """After this peer's checks changed: republish every service whose aggregate
        moved, and move the index in any case (this peer's HTTP view shows every check)."""
        for entry in self._local.values():
            published = self.directory.catalog.get(self.node, entry.record.id)
            if published is None or published.status != self._status(entry):
                self._publish(entry)
        self.directory.touch()
        self._wake_names(set())

    def _record(self, entry: _Local) -> Record:
        """The service's record with its current aggregate status."""
        return attrs.evolve(entry.record, status=str(self._status(entry)))

    def _publish(self, entry: _Local) -> Instance:
        record = self._record(entry)
        names, broadcast = self.directory.publish(record, anyio.current_time())
        self._feed(broadcast)
        instance = instance_of(record)
        if self._publisher is not None:
            self._publisher.publish(instance)
        self._wake_names(names)
        return instance

    def _on_check_change(self, check_id: str, status: Status, output: str) -> None:
        sid = self._check_owner.get(check_id)
        if sid is not None and sid in self._local:
            log.info("check %s is now %s: %s", check_id, status, output[:200])
            self.directory.touch()  # the check's own status is in the view, whatever the aggregate
            self._publish(self._local[sid])
        elif check_id in self._node_checks:
            log.info("node check %s is now %s: %s", check_id, status, output[:200])
            self._settle_local()

    def _on_check_output(self, check_id: str) -> None:
        # Only the output moved: nothing to gossip, but this peer's HTTP view shows it,
        # so its blocking queries must wake.
        if self.has_check(check_id):
            self.directory.touch()
            self._wake_names(set())

    def _on_deregister_due(self, check_id: str) -> None:
        # A node check has no service to deregister: Consul ignores its
        # DeregisterCriticalServiceAfter too (agent.reapServicesInternal).
        sid = self._check_owner.get(check_id)
        if sid is not None and sid in self._local:
            log.warning("deregistering %s: check %s critical for too long", sid, check_id)
            self.deregister(sid)

    def _wake_names(self, names: set[str]) -> None:
        for name in names:
            event = self._wake.pop(name, None)
            if event is not None:
                event.set()
        if self._any is not None and self.directory.index != self._any_at:
            self._any.set()
            self._any = None

    def _housekeeping(self) -> None:
        names = self.directory.expire(anyio.current_time(), self._known_nodes())
        self._wake_names(names)


def _validated(
    node: str,
    sid: str,
    name: str,
    port: int,
    tags: Sequence[str],
    meta: Mapping[str, str] | None,
    address: str,
) -> Record:
    for what, value in (("service name", name), ("service id", sid)):
        if not isinstance(value, str) or not value or len(value.encode()) > MAX_NAME_BYTES:
            raise ConfigError(
                f"{what} must be a non-empty string of at most {MAX_NAME_BYTES} bytes, "
                f"got {value!r}"
            )
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"port must be an integer 0-65535, got {port!r}")
    if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
        raise ConfigError(f"tags must be a list of strings, got {tags!r}")
    meta = dict(meta or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ConfigError("service meta must map strings to strings")
    if sum(len(k.encode()) + len(v.encode()) for k, v in meta.items()) > MAX_META_BYTES:
        raise ConfigError(f"service meta is larger than {MAX_META_BYTES} bytes encoded")
    if not isinstance(address, str) or not address or (":" in address and not is_ip(address)):
        raise ConfigError(f"address must be a host name or IP address, got {address!r}")
    record = Record(node, sid, 0, name, address, port, tuple(tags), meta)
    if len(encode_record(record)) > MAX_RECORD_BYTES - 16:
        raise ConfigError(
            f"service {sid!r} takes more than {MAX_RECORD_BYTES} bytes on the wire "
            "(fewer or shorter tags and meta)"
        )
    return record
