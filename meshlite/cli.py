"""The ``meshlite`` command: ``keygen`` and ``agent`` (Consul's CLI habits).

Theory of operation
-------------------
``meshlite agent`` is the ``consul agent`` of this world: one peer in the foreground, its
membership changes logged one line each (``Mesh.watch_members()``), SIGTERM/SIGINT leaving
gracefully — others record *left*, not *dead* — before exiting 0.  Its settings come from
config files (``--config-file``, ``--config-dir``; JSON or TOML in Consul's shape, see
``meshlite._agent_config``) and then flags, which win.  Service definitions in those files
(``"service"``/``"services"``, ``meshlite._agent_services``) are all read and checked
before anything binds, and registered once the mesh runs: the agent starts with every
service of its files or not at all.

Failures are one line on stderr, ``meshlite: error: ...``, never a traceback: exit 2 for
a usage error (argparse's convention: unknown flag, missing value), exit 1 for anything
else (a malformed value, a config file, a key, an address that cannot be bound).  Logs go
to stdout, as Consul's do, so stderr carries nothing but errors.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from meshlite import __version__
from meshlite._addr import format_hostport
from meshlite._agent_config import AgentConfig, Layer, flags_layer, load_dir, load_file, merge
from meshlite._cli_client import add_client_commands
from meshlite.errors import ConfigError

if TYPE_CHECKING:
    from anyio import CancelScope

    from meshlite._agent_services import CheckDefinition, ServiceDefinition
    from meshlite._core.events import MemberEvent
    from meshlite._mesh import Mesh

__all__ = ["main"]

EXIT_ERROR = 1  # a malformed setting, or the agent could not start
EXIT_USAGE = 2  # argparse's convention for a command line it cannot parse
EXIT_INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C before the agent handles signals itself
DEV_DNS = "127.0.0.1:8600"  # consul agent -dev's DNS address
DEV_HTTP = "127.0.0.1:8500"  # consul agent -dev's HTTP API address

_EVENT_MESSAGES = {
    "join": "member joined",
    "update": "member updated",
    "suspect": "member suspected",
    "alive": "member alive",
    "dead": "member dead",
    "left": "member left",
    "reap": "member reaped",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``meshlite: error: ...``), exit 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f'meshlite: error: {message} (see "{self.prog} --help")\n')
        raise SystemExit(EXIT_USAGE)


_APPEND = {"action": "append"}
_ON_OFF = {"action": argparse.BooleanOptionalAction}
# fmt: off
_AGENT_FLAGS: tuple[tuple[tuple[str, ...], str | None, str, dict[str, Any]], ...] = (
    (("--dev",), None, "development mode: a server on 127.0.0.1:7946 with the fast "
     "'local' timing profile (settings given explicitly still win)", {"action": "store_true"}),
    (("--name", "--node"), "NAME", "this peer's name (default: the host name)", {}),
    (("--bind",), "H:P", "address to bind UDP+TCP (default 127.0.0.1:7946; port 0 picks one)", {}),
    (("--advertise",), "H:P", "address other peers should use to reach this one", {}),
    (("--join", "--retry-join"), "H:P", "seed peer (repeatable; retried with backoff)", _APPEND),
    (("--key", "--encrypt"), "KEY", "base64 key (repeatable; first is primary)", _APPEND),
    (("--cluster",), "LABEL", "cluster label; peers with another label are refused", {}),
    (("--server",), None, "mark this peer as a server", _ON_OFF),
    (("--mdns",), None, "find peers on the LAN with mDNS", _ON_OFF),
    (("--mdns-publish",), None, "publish registered services as DNS-SD "
     "_<name>._tcp.local.", _ON_OFF),
    (("--profile",), "lan|local", "timing: lan (the default) or local (fast, loopback)", {}),
    (("--meta", "--node-meta"), "K=V", "gossiped metadata (repeatable)", _APPEND),
    (("--config-file",), "FILE", "JSON or TOML config file (repeatable; read in order)",
     {"dest": "config", "action": "append", "type": lambda v: ("file", v)}),
    (("--config-dir",), "DIR", "read every .json and .toml file in DIR, in name order: "
     "settings and service definitions (repeatable)",
     {"dest": "config", "action": "append", "type": lambda v: ("dir", v)}),
    (("--log-level",), "LEVEL", "trace, debug, info (the default), warn or error", {}),
    (("--log-json",), None, "log one JSON object per line", _ON_OFF),
    (("--data-dir",), "DIR", "servers: keep Raft state here (default: memory)", {}),
    (("--bootstrap-expect",), "N", "servers: found the cluster with N servers", {"type": int}),
    (("--http",), "H:P", "serve Consul's HTTP API on this address (--dev: "
     "127.0.0.1:8500; port 0 picks one)", {}),
    (("--http-token",), "TOKEN", "require this token (X-Consul-Token or Authorization: "
     "Bearer) for HTTP API writes", {}),
    (("--http-token-reads",), None, "require the token for HTTP API reads too", _ON_OFF),
    (("--http-on-leader",), None, "servers: bind --http only while this server leads, so "
     "the address moves with leadership", _ON_OFF),
    (("--dns",), "H:P", "serve DNS (Consul's names: NAME.service.meshlite, ...) on this "
     "address, UDP and TCP (--dev: 127.0.0.1:8600; port 0 picks one)", {}),
    (("--dns-domain", "--domain"), "DOMAIN", "the DNS domain (default: meshlite)", {}),
)
# fmt: on


def _agent_flags(p: argparse.ArgumentParser) -> None:
    for names, metavar, help_text, extra in _AGENT_FLAGS:
        if metavar is not None:
            extra = {**extra, "metavar": metavar}
        p.add_argument(*names, help=help_text, **extra)
    p.set_defaults(run=_run_agent, command_parser=p)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="meshlite", description="meshlite: an embedded service mesh.")
    parser.add_argument("--version", action="version", version=f"meshlite {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    keygen = commands.add_parser("keygen", help="print a new base64 32-byte gossip key")
    keygen.set_defaults(run=_run_keygen, command_parser=keygen)
    agent = commands.add_parser("agent", help="run a peer in the foreground")
    _agent_flags(agent)
    add_client_commands(commands)  # members, services, discover, ...: the HTTP API's clients
    return parser


# ------------------------------------------------------------------------------ keygen


def _run_keygen(_args: argparse.Namespace) -> int:
    from meshlite._crypto import generate_key

    print(generate_key())
    return 0


# ------------------------------------------------------------------------------ agent

_FLAG_SETTINGS = (
    "name", "bind", "advertise", "join", "key", "cluster", "server", "mdns", "mdns_publish",
    "profile", "meta", "log_level", "log_json", "data_dir", "bootstrap_expect", "http", "dns",
    "dns_domain", "http_token", "http_token_reads", "http_on_leader",
)  # fmt: skip


def agent_config(args: argparse.Namespace) -> AgentConfig:
    """Config files in command-line order, then flags."""
    layers: list[Layer] = []
    if args.dev:  # Consul's -dev: defaults for a one-machine try-out, under files and flags
        dev = {"server": True, "bootstrap_expect": 1, "profile": "local", "dns": DEV_DNS,
               "http": DEV_HTTP}  # fmt: skip
        layers.append(flags_layer(dev))
    for kind, path in args.config or ():
        layers.extend([load_file(path)] if kind == "file" else load_dir(path))
    layers.append(flags_layer({s: getattr(args, s) for s in _FLAG_SETTINGS}))
    return merge(layers)


def _run_agent(args: argparse.Namespace) -> int:
    import anyio

    from meshlite._agent_log import setup_logging
    from meshlite._agent_services import preflight
    from meshlite._mesh import Mesh

    cfg = agent_config(args)
    mesh = Mesh(**cfg.mesh_kwargs())  # ConfigError here, before anything binds
    preflight(cfg.services, mesh.name)  # and here: what register() would refuse later
    log = setup_logging(cfg.log_level, as_json=cfg.log_json)
    try:
        anyio.run(_agent, mesh, cfg, log, backend="asyncio")
    except (OSError, BaseExceptionGroup) as exc:
        error = _leaf(exc)
        if not isinstance(error, OSError):
            raise
        # The bind failed: the port is taken, or the address is not this machine's.
        # A socket other than gossip's (the HTTP API's) names itself in ``filename``.
        where = error.filename or cfg.bind
        return _fail(f"cannot bind {where}: {error.strerror or error}")
    return 0


async def _agent(mesh: Mesh, cfg: AgentConfig, log: logging.Logger) -> None:
    import anyio

    from meshlite._agent_log import fields

    # Receive the signals before binding, so one sent during start-up still means "leave".
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with mesh:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_log_members, mesh, log)  # registers before any packet is read
                tg.start_soon(_stop_when_left, mesh, tg.cancel_scope, log)
                _log_started(mesh, cfg, log)
                await _register_services(mesh, cfg.services, log)
                await _register_checks(mesh, cfg.checks, log)
                async for signum in signals:
                    name = signal.Signals(signum).name
                    extra = fields(event="signal", signal=name)
                    log.info("caught %s, leaving", name, extra=extra)
                    break
                tg.cancel_scope.cancel()
            await mesh.leave()
        log.info("left gracefully", extra=fields(event="stop", member=mesh.name))


def _log_started(mesh: Mesh, cfg: AgentConfig, log: logging.Logger) -> None:
    from meshlite._agent_log import fields

    info = fields(
        event="start",
        member=mesh.name,
        address=mesh.address,
        bind=cfg.bind,
        cluster=cfg.cluster,
        encryption="on" if cfg.keys else "off",
        server=cfg.server,
        profile=cfg.profile,
        mdns=cfg.mdns,
        mdns_publish=cfg.mdns_publish,
        join=list(cfg.join),
        config_files=list(cfg.sources),
        services=[d.service_id for d in cfg.services],
        dns=mesh.dns_address,
        http=mesh.http_address,
    )
    log.info("agent started", extra=info)
    if not cfg.keys:
        log.warning(
            "gossip is not encrypted: anyone who can reach this port can join; "
            "pass --key (make one with 'meshlite keygen')",
            extra=fields(event="warning"),
        )
    for setting in cfg.ignored_in_use():
        log.warning(
            "setting %r is for servers and is ignored here (add --server)",
            setting,
            extra=fields(event="warning", setting=setting),
        )


async def _register_services(
    mesh: Mesh, definitions: Sequence[ServiceDefinition], log: logging.Logger
) -> None:
    from meshlite._agent_log import fields

    for d in definitions:
        instance = await mesh.register(d.name, d.port, **d.register_kwargs())
        info = fields(
            event="register",
            service=instance.service,
            id=instance.id,
            address=format_hostport(instance.address, instance.port),
            tags=list(instance.tags),
            checks=len(d.checks),
            status=str(instance.status),
            source=str(d.source),
        )
        log.info("service registered", extra=info)


async def _register_checks(
    mesh: Mesh, definitions: Sequence[CheckDefinition], log: logging.Logger
) -> None:
    from meshlite._agent_log import fields

    for d in definitions:
        check_id = await mesh.register_check(d.check, **d.register_kwargs())
        info = fields(event="check", id=check_id, service_id=d.service_id or "")
        log.info("check registered", extra=info)


async def _stop_when_left(mesh: Mesh, scope: CancelScope, log: logging.Logger) -> None:
    """Consul's ``PUT /v1/agent/leave``: once the mesh has left, the agent exits."""
    from meshlite._agent_log import fields

    await mesh.wait_left()
    log.info("left on request, stopping", extra=fields(event="leave"))
    scope.cancel()


async def _log_members(mesh: Mesh, log: logging.Logger) -> None:
    async for change in mesh.watch_members():
        _log_member(change, log)


def _log_member(change: MemberEvent, log: logging.Logger) -> None:
    from meshlite._agent_log import fields

    kind, m = str(change.kind), change.member
    extra: dict[str, Any] = {
        "event": kind,
        "member": m.name,
        "address": format_hostport(m.address, m.port),
        "status": m.status,
        "incarnation": m.incarnation,
        "server": m.server,
    }
    if kind in ("join", "update"):
        extra["meta"] = dict(m.meta)
    level = logging.WARNING if kind in ("suspect", "dead") else logging.INFO
    log.log(level, _EVENT_MESSAGES.get(kind, f"member {kind}"), extra=fields(**extra))


# ------------------------------------------------------------------------------ main


def _leaf(exc: BaseException) -> BaseException:
    """The single real error inside (nested) exception groups, else ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _fail(message: str) -> int:
    sys.stderr.write(f"meshlite: error: {message}\n")
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``meshlite`` script; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # name the subcommand's --help, not the top level's
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.run(args))
    except KeyboardInterrupt:  # before the signal receiver is installed
        return EXIT_INTERRUPTED
    except BaseExceptionGroup as group:
        exc = _leaf(group)
        if isinstance(exc, ConfigError):
            return _fail(str(exc))
        raise  # a bug: keep the traceback
    except ConfigError as exc:
        return _fail(str(exc))


if __name__ == "__main__":
    raise SystemExit(main())
