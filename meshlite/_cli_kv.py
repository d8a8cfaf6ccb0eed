"""``meshlite kv get|put|delete``: the replicated KV store from the command line.

Theory of operation
-------------------
Consul's ``consul kv get|put|delete`` (``command/kv/``), each one request to the
agent's ``/v1/kv/KEY`` (``docs/http-api.md``) through the client commands' shared
``AgentClient``, so addresses, tokens and transport failures behave as in every other
client command (``_cli_client.py``): one ``meshlite: error: ...`` line, exit 1.

* ``get KEY`` prints the value's bytes exactly as stored — ``kv get k > f`` and
  ``kv put k - < f`` round-trip a file — adding a newline only for a terminal, so a
  prompt does not land after the value.  A missing key is an error (Consul's ``No key
  exists``).  ``--recurse`` prints a table of the entries under a prefix (a value shown
  as text when it is printable UTF-8, else by its size), ``--keys`` a table of key
  names (``--separator`` cuts them, as ``consul kv get -keys -separator``); nothing
  under the prefix is not an error.  ``--json`` prints the API's own JSON (``Value`` in
  base64), ``[]`` when nothing is found.
* ``put KEY [VALUE|-]`` stores ``VALUE`` (as UTF-8), or standard input as bytes when it
  is ``-`` or omitted; ``--flags N``, ``--cas N`` (0: only if the key does not exist).
* ``delete KEY`` removes one key, ``--recurse`` every key under a prefix, ``--cas N``
  only if the key is still at that index.

A ``false`` answer (a check-and-set whose index no longer matches) is an error line
saying so, exit 1: a script must not believe it wrote.
"""

from __future__ import annotations

import argparse
import base64
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from meshlite._cli_client_http import AgentClient, ClientError, NotFoundError

if TYPE_CHECKING:
    from argparse import _SubParsersAction

__all__ = ["add_kv_commands", "shown_value"]

EXIT_OK = 0
# A value longer than this is cut in the --recurse table (the whole value is one
# 'kv get' away); tables are for looking, not for copying data out.
TABLE_VALUE_MAX_CHARS = 60
_UINT64_MAX = 2**64 - 1


def _path(key: str) -> str:
    return "/v1/kv/" + quote(key, safe="/")


def _uint(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) > _UINT64_MAX:
        raise argparse.ArgumentTypeError(f"expected a whole number 0-2^64, got {text!r}")
    return int(text)


def _decoded(entry: dict[str, Any]) -> bytes:
    value = entry.get("Value")
    return base64.b64decode(value) if value else b""


def shown_value(value: bytes) -> str:
    """A value for a table cell: printable UTF-8 text, else its size."""
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return f"<{len(value)} bytes>"
    if not text.isprintable():
        return f"<{len(value)} bytes>"
    if len(text) > TABLE_VALUE_MAX_CHARS:
        return text[: TABLE_VALUE_MAX_CHARS - 3] + "..."
    return text


# ------------------------------------------------------------------------------ get


def _get_list(client: AgentClient, args: argparse.Namespace) -> Any:
    """The entries (``--recurse``) or key names (``--keys``) under a prefix; [] if none."""
    params: dict[str, str] = {"keys": "true"} if args.keys else {"recurse": "true"}
    if args.separator:
        params["separator"] = args.separator
    try:
        doc, _ = client.request("GET", _path(args.key), params=params)
    except NotFoundError:
        return []
    return doc


def _get_one(client: AgentClient, key: str) -> dict[str, Any]:
    try:
        doc, _ = client.request("GET", _path(key))
    except NotFoundError:
        raise ClientError(f"key not found: {key!r}") from None
    entry: dict[str, Any] = doc[0]
    return entry


def _write_value(value: bytes) -> None:
    out = sys.stdout.buffer
    out.write(value)
    if sys.stdout.isatty() and not value.endswith(b"\n"):
        out.write(b"\n")
    out.flush()


def _get(client: AgentClient, args: argparse.Namespace) -> int:
    from meshlite._cli_client import _print_json, _table

    if args.separator and not args.keys:
        args.command_parser.error("--separator goes with --keys (it cuts the key names listed)")
    if not (args.keys or args.recurse):
        if not args.key:
            args.command_parser.error("give a KEY (or --recurse / --keys to list a prefix)")
        entry = _get_one(client, args.key)
        if args.json:
            _print_json([entry])
        else:
            _write_value(_decoded(entry))
        return EXIT_OK
    doc = _get_list(client, args)
    where = f"under {args.key!r}" if args.key else "in the store"
    if args.json:
        _print_json(doc)
    elif args.keys:
        _table(("Key",), [(k,) for k in doc], f"no keys {where}")
    else:
        rows = [
            (e["Key"], str(e["Flags"]), str(e["ModifyIndex"]), e.get("Session") or "",
             shown_value(_decoded(e)))
            for e in doc
        ]  # fmt: skip
        _table(("Key", "Flags", "Index", "Session", "Value"), rows, f"no keys {where}")
    return EXIT_OK


# ------------------------------------------------------------------------------ put, delete


def _cas_failed(key: str, cas: int) -> ClientError:
    if cas == 0:
        return ClientError(f"CAS failed: {key!r} already exists (--cas 0 only creates a key)")
    return ClientError(
        f"CAS failed: {key!r} is no longer at index {cas} (it was changed or deleted "
        "since; 'meshlite kv get --recurse' shows its current index)"
    )


def _read_value(args: argparse.Namespace) -> bytes:
    if args.value is None or args.value == "-":
        return sys.stdin.buffer.read()
    return str(args.value).encode()


def _put(client: AgentClient, args: argparse.Namespace) -> int:
    value = _read_value(args)
    params = {"flags": str(args.flags)} if args.flags is not None else {}
    if args.cas is not None:
        params["cas"] = str(args.cas)
    done, _ = client.request("PUT", _path(args.key), params=params, content=value)
    if done is not True:
        raise (
            _cas_failed(args.key, args.cas)
            if args.cas is not None
            else ClientError(f"the agent did not write {args.key!r} (it answered {done!r})")
        )
    print(f"Success! Data written to: {args.key}")
    return EXIT_OK


def _delete(client: AgentClient, args: argparse.Namespace) -> int:
    if args.recurse and args.cas is not None:
        args.command_parser.error("--recurse and --cas do not go together (as in Consul)")
    if not args.key and not args.recurse:
        args.command_parser.error("give a KEY (or --recurse with a prefix; '' is every key)")
    params = {"recurse": "true"} if args.recurse else {}
    if args.cas is not None:
        params["cas"] = str(args.cas)
    done, _ = client.request("DELETE", _path(args.key), params=params)
    if done is not True:
        raise ClientError(
            f"CAS failed: {args.key!r} is not at index {args.cas}: nothing was deleted "
            "('meshlite kv get --recurse' shows its current index)"
        )
    if args.recurse:
        print(f"Success! Deleted keys with prefix: {args.key}")
    else:
        print(f"Success! Deleted key: {args.key}")
    return EXIT_OK


# ------------------------------------------------------------------------------ parsers


def add_kv_commands(
    commands: _SubParsersAction[Any],
    conn: argparse.ArgumentParser,
    out: argparse.ArgumentParser,
) -> None:
    """``meshlite kv get|put|delete`` (``conn``/``out``: the shared flag parsers)."""
    from meshlite._cli_client import _group, _leaf

    kv = _group(commands, "kv", "read and write the replicated KV store")
    get = _leaf(kv, "get", _get, "print a key's value, or list a prefix", [conn, out])
    get.add_argument("key", metavar="KEY", nargs="?", default="", help="key or prefix")
    get.add_argument("--recurse", action="store_true", help="every entry under the prefix")
    get.add_argument("--keys", action="store_true", help="only the key names under the prefix")
    get.add_argument("--separator", metavar="S", help="with --keys: cut names after S")

    put = _leaf(kv, "put", _put, "write a key", [conn])
    put.add_argument("key", metavar="KEY")
    put.add_argument("value", metavar="VALUE", nargs="?",
                     help="the value; '-' or none: read it from standard input")  # fmt: skip
    put.add_argument("--cas", metavar="N", type=_uint,
                     help="only if the key is at this ModifyIndex (0: only if absent)")  # fmt: skip
    put.add_argument("--flags", metavar="N", type=_uint, help="an opaque number to store")

    delete = _leaf(kv, "delete", _delete, "delete a key or a prefix", [conn])
    delete.add_argument("key", metavar="KEY", nargs="?", default="")
    delete.add_argument("--recurse", action="store_true", help="every key under the prefix")
    delete.add_argument("--cas", metavar="N", type=_uint,
                        help="only if the key is still at this ModifyIndex")  # fmt: skip
