"""The ``meshlite`` client commands: ``members``, ``services``, ``discover``, ``catalog
nodes``, ``keyring``, ``leave``, ``watch`` and ``kv`` (``_cli_kv.py``), each a call to an
agent's HTTP API.

Theory of operation
-------------------
Each command is Consul's CLI command of the same job (``consul members``, ``consul catalog
nodes``, ``consul keyring``, ``consul leave``, ``consul watch -type=service``), made of
one or a few requests to the Consul-compatible HTTP API (``docs/http-api.md``) through
``_cli_client_http.AgentClient``, which also says where the agent is and turns every
failure into one error line.  Output is a ``rich`` table for people, or with ``--json``
the API's own JSON as one document, for scripts.

``watch NAME`` is a Consul blocking-query loop (``api/watch/plan.go``): ask
``/v1/health/service/NAME?index=I&wait=W`` with the last ``X-Consul-Index``, print the
instance list when it differs from the last one printed (the index is catalog-wide, so it
moves for other changes too), start over from index 0 if it goes backwards (a restarted
agent, as ``plan.go`` does), and stop cleanly, exit 0, on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from meshlite._cli_client_http import (
    ADDR_ENV,
    DEFAULT_HTTP_ADDR,
    TOKEN_ENV,
    AgentClient,
    ClientError,
    NotFoundError,
    resolve_target,
)

if TYPE_CHECKING:
    from argparse import _SubParsersAction

    from rich.console import Console

__all__ = ["add_client_commands"]

EXIT_OK = 0
EXIT_ERROR = 1  # as the agent's: one line on stderr
# A blocking query's wait: long enough that an idle watch costs one request a minute,
# short enough that a vanished agent is noticed within one.  The agent adds up to
# wait/16 of jitter, so the read timeout allows that and a margin.
WATCH_WAIT_S = 60.0
WATCH_TIMEOUT_S = WATCH_WAIT_S * (1 + 1 / 16) + 10.0
# When an answer did not move the index (an agent answering at once, e.g. after a
# restart), wait this long before asking again, so a watch never spins.
WATCH_MIN_INTERVAL_S = 0.1
# Tables are laid out for a terminal's width; piped to a file, rich would assume 80
# columns and wrap cells, so output that is not a terminal gets this many.
PIPE_WIDTH_COLUMNS = 200
_SERF_STATUS = {1: "alive", 2: "leaving", 3: "left", 4: "failed"}  # serf.MemberStatus
_WORST_FIRST = ("critical", "warning", "maintenance", "passing")

Command = Callable[[AgentClient, argparse.Namespace], int]


# ------------------------------------------------------------------------------ output


def _console() -> Console:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=PIPE_WIDTH_COLUMNS)
    return console


def _print_json(doc: Any, *, compact: bool = False) -> None:
    indent = None if compact else 2
    sys.stdout.write(json.dumps(doc, indent=indent, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _table(columns: Sequence[str], rows: Iterable[Sequence[str]], empty: str) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    rows = list(rows)
    console = _console()
    if not rows:
        console.print(empty, markup=False)
        return
    table = Table(*columns, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # Text: no [markup] in user data
    console.print(table)


def _pairs(mapping: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(mapping.items()))


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ------------------------------------------------------------------------------ commands


def _members(client: AgentClient, args: argparse.Namespace) -> int:
    doc, _ = client.request("GET", "/v1/agent/members")
    if args.json:
        _print_json(doc)
        return EXIT_OK
    rows = [
        (
            m["Name"],
            _hostport(m["Addr"], m["Port"]),
            _SERF_STATUS.get(m["Status"], str(m["Status"])),
            _pairs(m.get("Tags") or {}),
        )
        for m in sorted(doc, key=lambda m: m["Name"])
    ]
    _table(("Node", "Address", "Status", "Meta"), rows, "no members")
    return EXIT_OK


def _services(client: AgentClient, args: argparse.Namespace) -> int:
    doc, _ = client.request("GET", "/v1/catalog/services")
    if args.json:
        _print_json(doc)
        return EXIT_OK
    rows = [(name, ", ".join(tags)) for name, tags in sorted(doc.items())]
    _table(("Service", "Tags"), rows, "no services registered")
    return EXIT_OK


def _catalog_nodes(client: AgentClient, args: argparse.Namespace) -> int:
    doc, _ = client.request("GET", "/v1/catalog/nodes")
    if args.json:
        _print_json(doc)
        return EXIT_OK
    rows = [
        (n["Node"], n["ID"], n["Address"], _pairs(n.get("Meta") or {}))
        for n in sorted(doc, key=lambda n: n["Node"])
    ]
    _table(("Node", "ID", "Address", "Meta"), rows, "no nodes")
    return EXIT_OK


# ------------------------------------------------------------------------------ discover


def _health_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {} if args.all else {"passing": "true"}
    if args.tag:
        params["tag"] = args.tag
    return params


def _status(checks: Iterable[Mapping[str, Any]]) -> str:
    states = {c.get("Status", "") for c in checks}
    return next((s for s in _WORST_FIRST if s in states), "passing")


def _instance_rows(entries: Iterable[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    for e in entries:
        svc, node = e["Service"], e["Node"]
        address = _hostport(svc.get("Address") or node["Address"], svc["Port"])
        tags = ", ".join(svc.get("Tags") or ())
        rows.append((svc["ID"], node["Node"], address, _status(e.get("Checks") or ()), tags))
    return sorted(rows)


def _print_instances(name: str, entries: list[Any], args: argparse.Namespace) -> None:
    which = "instances" if args.all else "passing instances"
    _table(
        ("ID", "Node", "Address", "Status", "Tags"),
        _instance_rows(entries),
        f"no {which} of {name!r}" + (f" with tag {args.tag!r}" if args.tag else ""),
    )


def _check_known(client: AgentClient, name: str) -> None:
    """Consul answers [] for a name nobody registered; the CLI says it is unknown."""
    known, _ = client.request("GET", "/v1/catalog/services")
    if name not in known:
        raise NotFoundError(
            f"unknown service {name!r}: no instance of it is registered (see 'meshlite services')"
        )


def _discover(client: AgentClient, args: argparse.Namespace) -> int:
    path = f"/v1/health/service/{_segment(args.name)}"
    entries, _ = client.request("GET", path, params=_health_params(args))
    if not entries:
        _check_known(client, args.name)
    if args.json:
        _print_json(entries)
    else:
        _print_instances(args.name, entries, args)
    return EXIT_OK


def _segment(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


# ------------------------------------------------------------------------------ watch


def _watch(client: AgentClient, args: argparse.Namespace) -> int:
    try:
        _watch_loop(client, args)
    except KeyboardInterrupt:  # Ctrl-C is how a watch ends: not an error
        return EXIT_OK
    return EXIT_OK  # pragma: no cover - the loop only ends by an exception


def _watch_loop(client: AgentClient, args: argparse.Namespace) -> None:
    path = f"/v1/health/service/{_segment(args.name)}"
    index, last = 0, None
    while True:
        params = _health_params(args)
        if index:
            params.update(index=str(index), wait=f"{WATCH_WAIT_S:g}s")
        started = time.monotonic()
        entries, headers = client.request("GET", path, params=params, timeout_s=WATCH_TIMEOUT_S)
        new_index = int(headers.get("X-Consul-Index", "0") or 0)
        shown = entries if args.json else _instance_rows(entries)
        if shown != last:
            _show_change(args, entries)
            last = shown
        moved = new_index > index
        index = new_index if new_index >= index else 0  # backwards: start over (plan.go)
        if not moved:
            time.sleep(max(0.0, WATCH_MIN_INTERVAL_S - (time.monotonic() - started)))


def _show_change(args: argparse.Namespace, entries: list[Any]) -> None:
    if args.json:
        _print_json(entries, compact=True)  # one document per line
        return
    stamp = time.strftime("%H:%M:%S")
    _console().print(f"{stamp} {args.name}: {len(entries)} instance(s)", markup=False)
    _print_instances(args.name, entries, args)
    sys.stdout.flush()


# ------------------------------------------------------------------------------ keyring


def _keyring_list(client: AgentClient, args: argparse.Namespace) -> int:
    doc, _ = client.request("GET", "/v1/operator/keyring")
    if args.json:
        _print_json(doc)
        return EXIT_OK
    rows = []
    for ring in doc:
        total = ring.get("NumNodes", 0)
        primary = ring.get("PrimaryKeys") or {}
        for key, count in sorted((ring.get("Keys") or {}).items()):
            rows.append((key, "yes" if key in primary else "", f"{count}/{total}"))
    _table(("Key", "Primary", "Members"), rows, "no keys: gossip is not encrypted")
    for ring in doc:
        for member, message in (ring.get("Messages") or {}).items():
            _console().print(f"{member}: {message}", markup=False)
    return EXIT_OK


def _keyring_write(method: str, done: str) -> Command:
    def run(client: AgentClient, args: argparse.Namespace) -> int:
        client.request(method, "/v1/operator/keyring", body={"Key": args.key})
        print(f"{done} on every member")
        return EXIT_OK

    return run


# ------------------------------------------------------------------------------ leave


def _leave(client: AgentClient, _args: argparse.Namespace) -> int:
    client.request("PUT", "/v1/agent/leave")
    print(f"graceful leave complete: the agent at {client.target.base_url} is stopping")
    return EXIT_OK


# ------------------------------------------------------------------------------ parsers


def _runner(command: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            target = resolve_target(args.http_addr, args.token)
            with AgentClient(target) as client:
                return command(client, args)
        except ClientError as exc:
            sys.stderr.write(f"meshlite: error: {exc}\n")
            return EXIT_ERROR

    return run


def _connection_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument(
        "--http-addr",
        metavar="ADDR",
        help=f"the agent's HTTP API, host:port or http://host:port "
        f"(default: ${ADDR_ENV}, else {DEFAULT_HTTP_ADDR})",
    )
    flags.add_argument(
        "--token",
        metavar="TOKEN",
        help=f"ACL token, sent as X-Consul-Token (default: ${TOKEN_ENV})",
    )
    return flags


def _json_flag() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--json", action="store_true", help="print the API's JSON, for scripts")
    return flags


def _instance_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="the service name")
    p.add_argument("--tag", metavar="TAG", help="only instances with this tag")
    p.add_argument("--all", action="store_true", help="not only passing instances")


def _leaf(
    commands: _SubParsersAction[Any],
    name: str,
    command: Command,
    help_text: str,
    parents: Sequence[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = commands.add_parser(name, help=help_text, parents=parents)
    p.set_defaults(run=_runner(command), command_parser=p)
    return p


def _group(commands: _SubParsersAction[Any], name: str, help_text: str) -> Any:
    p = commands.add_parser(name, help=help_text)
    return p.add_subparsers(title="subcommands", metavar="SUBCOMMAND", required=True)


def add_client_commands(commands: _SubParsersAction[Any]) -> None:
    """Register the client subcommands on ``meshlite``'s subparsers."""
    conn, out = _connection_flags(), _json_flag()
    _leaf(commands, "members", _members, "list the mesh's members", [conn, out])
    _leaf(commands, "services", _services, "list the registered services", [conn, out])
    discover = _leaf(commands, "discover", _discover, "list a service's instances", [conn, out])
    _instance_flags(discover)
    catalog = _group(commands, "catalog", "read the catalog (catalog nodes)")
    _leaf(catalog, "nodes", _catalog_nodes, "list the catalog's nodes", [conn, out])
    keyring = _group(commands, "keyring", "list or rotate the gossip keys")
    _leaf(keyring, "list", _keyring_list, "list the keys and how many members hold each",
          [conn, out])  # fmt: skip
    for verb, method, done, what in (
        ("install", "POST", "key installed", "install a key (accepted, not yet used)"),
        ("use", "PUT", "primary key changed", "make an installed key the one that encrypts"),
        ("remove", "DELETE", "key removed", "remove a key that is not the primary"),
    ):
        p = _leaf(keyring, verb, _keyring_write(method, done), what, [conn])
        p.add_argument("key", metavar="KEY", help="the base64 key (see 'meshlite keygen')")
    _leaf(commands, "leave", _leave, "make the agent leave the mesh and exit", [conn])
    watch = _leaf(commands, "watch", _watch, "print a service's instances on each change "
                  "until interrupted", [conn, out])  # fmt: skip
    _instance_flags(watch)
    from meshlite._cli_kv import add_kv_commands  # after this module: it uses its helpers

    add_kv_commands(commands, conn, out)
