"""Service definitions in Consul's agent-file shape, for ``meshlite agent --config-dir``.

Theory of operation
-------------------
Consul registers a sidecar's services from its config files: a file may hold
``"service": {...}`` (one definition) or ``"services": [{...}, ...]`` next to, or instead
of, agent settings (Consul ``agent/config/config.go``: ``ServiceDefinition`` and
``CheckDefinition``; ``agent/structs/check_type.go`` ``CheckType.Validate``).  The agent's
config reader (``_agent_config``) hands those two settings to :func:`parse_services`,
which turns each definition into a frozen :class:`ServiceDefinition` whose checks are the
public spec values of ``meshlite._health`` — so a definition read from a file and one
passed to ``mesh.register(...)`` in Python end up identical.

Every value is checked while the files are read, before the agent binds a socket:
unknown keys (with the list of known ones), a check with no kind or two kinds, an option
that does not apply to its kind, a malformed duration.  Errors are
:class:`~meshlite._agent_parse.BadValueError` with the path of the offending value
(``services[1].check.interval``); ``_agent_config`` prefixes the file name.  Duplicate
service ids across all files (:func:`check_unique_ids`) and anything registration
itself would refuse (:func:`preflight`: name, meta and record sizes) are errors too, so
the agent either starts with every definition or not at all.

A check registered by itself (Consul's ``CheckDefinition``: ``PUT
/v1/agent/check/register``, ``mesh.register_check``) is read by
:func:`parse_check_definition`: the same check parser, plus the registration's own keys
(``id``, ``service_id``), into a :class:`CheckDefinition`.

Keys are matched as Consul's decoder matches them: case-insensitively, with the HTTP
API's CamelCase (``DeregisterCriticalServiceAfter``, ``TLSSkipVerify``) and Consul's old
aliases (``script_args``, py-consul's ``serviceid``) accepted for the snake_case names.
Durations use Go's ``time.ParseDuration`` syntax (``"10s"``, ``"1m30s"``, ``"500ms"``; see
``meshlite._duration``), which Consul uses for ``interval``, ``timeout``, ``ttl`` and
``deregister_critical_service_after``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from meshlite._addr import is_ip, parse_hostport
from meshlite._agent_parse import BadValueError, show
from meshlite._core.wire_checks import MAX_META_BYTES, MAX_NAME_BYTES
from meshlite._duration import parse_duration
from meshlite._health import (
    CheckSpec,
    HTTPCheck,
    ScriptCheck,
    Status,
    TCPCheck,
    TTLCheck,
    check_id_problem,
)
from meshlite.errors import ConfigError

__all__ = ["CHECK_SETTINGS", "SERVICE_SETTINGS", "CheckDefinition", "ServiceDefinition",
           "check_unique_ids", "load_service_dir", "parse_check_definition", "parse_checks",
           "parse_services", "preflight"]  # fmt: skip

SERVICE_SETTINGS = ("service", "services")

# ------------------------------------------------------------------------------ values


@attrs.frozen
class ServiceDefinition:
    """One service from an agent file: the arguments of ``mesh.register`` and its source."""

    name: str
    port: int = 0
    id: str | None = None  # None: the name, as in Consul
    address: str | None = None  # None: the agent's advertised address
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = attrs.field(factory=dict)
    checks: tuple[CheckSpec, ...] = ()
    source: Path = Path()

    @property
    def service_id(self) -> str:
        return self.name if self.id is None else self.id

    def register_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``await mesh.register(d.name, d.port, **d.register_kwargs())``."""
        return {
            "id": self.id,
            "tags": list(self.tags),
            "meta": dict(self.meta),
            "address": self.address,
            "check": list(self.checks),
        }


@attrs.frozen
class CheckDefinition:
    """A check registered by itself (Consul's ``CheckDefinition``): one more check of the
    local service ``service_id``, or a check of the node when that is None."""

    id: str  # the check's name unless given, as in Consul
    check: CheckSpec
    service_id: str | None = None

    def register_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``await mesh.register_check(d.check, **d.register_kwargs())``."""
        return {"id": self.id, "service_id": self.service_id}


# ------------------------------------------------------------------------------ tables

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# Consul's decoder aliases (agent/config/config.go `alias:` tags) onto our keys.
_ALIASES = {
    "script_args": "args",
    "scriptargs": "args",
    "deregistercriticalserviceafter": "deregister_critical_service_after",
    "successbeforepassing": "success_before_passing",
    "failuresbeforecritical": "failures_before_critical",
    "tlsskip_verify": "tls_skip_verify",  # "TLSSkipVerify": no case boundary inside "TLS"
    "tlsskipverify": "tls_skip_verify",
    "serviceid": "service_id",  # py-consul's agent.check.register sends "serviceid"
    "checkid": "check_id",
}


def _normal(key: str) -> str:
    snake = _CAMEL_BOUNDARY.sub("_", key).lower()
    return _ALIASES.get(snake, snake)


def _fields(value: Any, path: str, what: str, known: Sequence[str]) -> dict[str, tuple[str, Any]]:
    """A table's entries as ``normal key -> (path of the entry, value)``; unknown keys fail."""
    if not isinstance(value, dict):
        raise BadValueError(f"must be a table ({what}), got {show(value)}", path)
    out: dict[str, tuple[str, Any]] = {}
    for key, v in value.items():
        sub, name = f"{path}.{key}", _normal(str(key))
        if name not in known:
            raise BadValueError(
                f"is not supported by meshlite ({what} takes {', '.join(known)})", sub
            )
        if name in out:
            raise BadValueError(f'says the same thing as "{out[name][0]}"; keep one', sub)
        out[name] = (sub, v)
    return out


def _string(value: Any, path: str, *, limit: int | None = None) -> str:
    if not isinstance(value, str) or not value:
        raise BadValueError(f"must be a non-empty string, got {show(value)}", path)
    if limit is not None and len(value.encode()) > limit:
        raise BadValueError(f"must be at most {limit} bytes of UTF-8, got {show(value)}", path)
    return value


def _count(value: Any, path: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadValueError(f"must be a whole number {low}-{high}, got {show(value)}", path)
    return value


def _strings(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadValueError(f"must be a list of strings, got {show(value)}", path)
    return tuple(value)


def _string_table(value: Any, path: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise BadValueError(f"must be a table of string values, got {show(value)}", path)
    return {str(k): v for k, v in value.items()}


def _seconds(value: Any, path: str) -> float:
    """A positive Go-syntax duration (``"10s"``) in seconds."""
    try:
        return parse_duration(value)
    except ConfigError as exc:
        raise BadValueError(str(exc), path) from None


# ------------------------------------------------------------------------------ checks

_KINDS = ("http", "tcp", "args", "ttl")
_COMMON = ("name", "status", "success_before_passing", "failures_before_critical",
           "deregister_critical_service_after")  # fmt: skip
_TIMING = ("interval", "timeout")
_HTTP_OPTIONS = ("method", "header", "body", "tls_skip_verify")
_KIND_OPTIONS = {"http": (*_TIMING, *_HTTP_OPTIONS), "tcp": _TIMING, "args": _TIMING, "ttl": ()}
_CHECK_KEYS = (*_KINDS, *_TIMING, *_HTTP_OPTIONS, *_COMMON)
# Consul check kinds meshlite does not run (yet): named, so the error can say so.
_OTHER_KINDS = ("grpc", "h2ping", "udp", "docker_container_id", "os_service", "alias_service",
                "alias_node", "script", "shell")  # fmt: skip
_CHECK_HINTS = {
    "id": 'check ids are Consul\'s defaults, "service:<service id>" (and '
    '"service:<service id>:<n>" for the n-th of several checks); a check registered by '
    "itself (/v1/agent/check/register) may choose its id",
    "check_id": "see id",
    "service_id": "a check inside a service definition belongs to that service",
    "failures_before_warning": "use failures_before_critical",
}
_HEADER_SHAPE = 'a table of lists of strings, like {"Accept": ["application/json"]}'


def _threshold(value: Any, path: str) -> int:
    # Consul's 0 means "no threshold", which is what 1 means here.
    return max(1, _count(value, path, 0, 1_000_000))


def _headers(value: Any, path: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise BadValueError(f"must be {_HEADER_SHAPE}, got {show(value)}", path)
    out = {}
    for name, values in value.items():
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise BadValueError(f"must be {_HEADER_SHAPE}, got {show(value)}", f"{path}.{name}")
        out[str(name)] = ", ".join(values)  # RFC 9110 §5.3: repeated fields join with ", "
    return out


def _common(f: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "name" in f:
        out["name"] = _string(f["name"][1], f["name"][0])
    if "status" in f:
        path, value = f["status"]
        if value not in tuple(Status):
            raise BadValueError(
                f'must be "passing", "warning" or "critical", got {show(value)}', path
            )
        out["initial_status"] = Status(value)
    for key in ("success_before_passing", "failures_before_critical"):
        if key in f:
            out[key] = _threshold(f[key][1], f[key][0])
    if "deregister_critical_service_after" in f:
        path, value = f["deregister_critical_service_after"]
        out["deregister_critical_after_s"] = _seconds(value, path)
    return out


def _kind(f: dict[str, tuple[str, Any]], path: str) -> str:
    kinds = [k for k in _KINDS if k in f]
    if len(kinds) != 1:
        found = " and ".join(f'"{k}"' for k in kinds) if kinds else "none"
        raise BadValueError(f"needs exactly one of http, tcp, args or ttl (found {found})", path)
    kind = kinds[0]
    for key, (sub, _v) in f.items():
        if key not in (kind, *_KIND_OPTIONS[kind], *_COMMON):
            raise BadValueError(f"does not apply to a {kind} check", sub)
    if kind != "ttl" and "interval" not in f:
        raise BadValueError(f'needs "interval" for a {kind} check (e.g. "10s")', path)
    return kind


def _timing(f: dict[str, tuple[str, Any]]) -> dict[str, float]:
    return {f"{key}_s": _seconds(f[key][1], f[key][0]) for key in _TIMING if key in f}


def _no_foreign_keys(value: Any, path: str) -> None:
    """Consul check keys meshlite knows but does not take: say why, not just "unknown"."""
    for key in value if isinstance(value, dict) else ():
        name = _normal(str(key))
        if name in _OTHER_KINDS:
            why = "it is a check kind meshlite does not run (it runs http, tcp, args and ttl)"
        elif name in _CHECK_HINTS:
            why = _CHECK_HINTS[name]
        else:
            continue
        raise BadValueError(f"is not supported by meshlite: {why}", f"{path}.{key}")


def _check(value: Any, path: str) -> CheckSpec:
    """One Consul check definition as a meshlite check spec."""
    _no_foreign_keys(value, path)
    f = _fields(value, path, "a check", _CHECK_KEYS)
    kind = _kind(f, path)
    common = _common(f)
    target_path, target = f[kind]
    try:
        if kind == "ttl":
            return TTLCheck(ttl_s=_seconds(target, target_path), **common)
        options = {**_timing(f), **common}
        if kind == "args":
            args = _args(target, target_path)
            # ScriptCheck's converter=tuple leaves mypy an unbound TypeVar to match.
            return ScriptCheck(args, **options)
        if kind == "tcp":
            return TCPCheck(_tcp_address(target, target_path), **options)
        return _http(f, target, options)
    except BadValueError as exc:
        raise BadValueError(str(exc), exc.setting or target_path) from None
    except ConfigError as exc:  # the spec's own validation
        raise BadValueError(str(exc), target_path) from None


def _args(value: Any, path: str) -> tuple[str, ...]:
    args = _strings(value, path)
    if not args:
        raise BadValueError("must name the program to run: a non-empty list of strings", path)
    return args


def _http(f: dict[str, tuple[str, Any]], url: Any, options: dict[str, Any]) -> HTTPCheck:
    url = _string(url, f["http"][0])
    if not url.startswith(("http://", "https://")):
        raise BadValueError(f"must be an http:// or https:// URL, got {show(url)}")
    if "method" in f:
        options["method"] = _string(f["method"][1], f["method"][0]).upper()
    if "header" in f:
        options["headers"] = _headers(f["header"][1], f["header"][0])
    if "body" in f:
        path, body = f["body"]
        if not isinstance(body, str):
            raise BadValueError(f"must be a string (the request body), got {show(body)}", path)
        options["body"] = body
    if "tls_skip_verify" in f:
        path, skip = f["tls_skip_verify"]
        if not isinstance(skip, bool):
            raise BadValueError(f"must be true or false, got {show(skip)}", path)
        options["tls_skip_verify"] = skip
    return HTTPCheck(url, **options)


def _tcp_address(value: Any, path: str) -> str:
    text = _string(value, path)
    try:
        _host, port = parse_hostport(text, default_port=0, what="got")
    except ConfigError as exc:
        raise BadValueError(f'must be "host:port" ({exc})', path) from None
    if port == 0:
        raise BadValueError(f'must be "host:port" with a port, got {show(text)}', path)
    return text


# ------------------------------------------------------------------------------ check definitions

# The keys a check registered by itself has besides the check's (normal names).
_DEFINITION_KEYS = ("id", "service_id")


def _optional_id(entry: tuple[str, Any] | None, *, limit: int | None = None) -> str | None:
    """An id field; absent or "" means "the default" (Consul's zero value)."""
    if entry is None or entry[1] == "":
        return None
    return _string(entry[1], entry[0], limit=limit)


def _check_id(entry: tuple[str, Any] | None, name: tuple[str, str]) -> str:
    """The check's id: ``id`` if given, else its name (Consul's default).  ``name`` is
    ``(path, value)`` of the check's name."""
    given = _optional_id(entry)
    problem = check_id_problem(name[1] if given is None else given)
    if problem is None:
        return name[1] if given is None else given
    problem = problem.removeprefix("a check id ")
    if entry is None or given is None:
        raise BadValueError(f"{problem} (it is the check's id when no id is given)", name[0])
    raise BadValueError(problem, entry[0])


def parse_check_definition(value: Any, path: str) -> CheckDefinition:
    """Consul's check definition: the check (read by the same parser as a service's
    checks), its ``name`` (required), ``id`` (alias ``check_id``; default: the name) and
    ``service_id`` (absent or "": a node check).

    Raises :class:`BadValueError` whose ``setting`` is the path of the bad value.
    """
    if not isinstance(value, dict):
        raise BadValueError(f"must be a table (a check), got {show(value)}", path)
    own: dict[str, tuple[str, Any]] = {}
    rest: dict[Any, Any] = {}
    for key, v in value.items():
        name = _normal(str(key))
        name = "id" if name == "check_id" else name
        if name not in _DEFINITION_KEYS:
            rest[key] = v
        elif name in own:
            raise BadValueError(f'says the same thing as "{own[name][0]}"; keep one',
                                f"{path}.{key}")  # fmt: skip
        else:
            own[name] = (f"{path}.{key}", v)
    check = _check(rest, path)
    if not check.name:
        raise BadValueError('needs "name" (the check\'s name)', path)
    name_key = next(k for k in rest if _normal(str(k)) == "name")
    check_id = _check_id(own.get("id"), (f"{path}.{name_key}", check.name))
    service_id = _optional_id(own.get("service_id"), limit=MAX_NAME_BYTES)
    return CheckDefinition(check_id, check, service_id)


# ------------------------------------------------------------------------------ services

_SERVICE_KEYS = ("name", "id", "port", "address", "tags", "meta", "check", "checks")


def _meta(value: Any, path: str) -> dict[str, str]:
    meta = _string_table(value, path)
    size = sum(len(k.encode()) + len(v.encode()) for k, v in meta.items())
    if size > MAX_META_BYTES:
        raise BadValueError(f"must be at most {MAX_META_BYTES} bytes of keys and values, "
                            f"got {size}", path)  # fmt: skip
    return meta


def _address(value: Any, path: str) -> str | None:
    if value == "":
        return None  # Consul: an empty address means the agent's own
    text = _string(value, path)
    if ":" in text and not is_ip(text):
        raise BadValueError(f"must be a host name or IP address (no port), got {show(text)}", path)
    return text


def _checks(f: dict[str, tuple[str, Any]]) -> tuple[CheckSpec, ...]:
    out: list[CheckSpec] = []
    if "check" in f:
        out.append(_check(f["check"][1], f["check"][0]))
    if "checks" in f:
        path, value = f["checks"]
        if not isinstance(value, list):
            raise BadValueError(f"must be a list of check tables, got {show(value)}", path)
        out.extend(_check(item, f"{path}[{i}]") for i, item in enumerate(value))
    return tuple(out)


def _service(value: Any, path: str, source: Path) -> ServiceDefinition:
    f = _fields(value, path, "a service", _SERVICE_KEYS)
    if "name" not in f:
        raise BadValueError('needs "name" (the service\'s name)', path)
    name = _string(f["name"][1], f["name"][0], limit=MAX_NAME_BYTES)
    sid = _string(f["id"][1], f["id"][0], limit=MAX_NAME_BYTES) if "id" in f else None
    return ServiceDefinition(
        name=name,
        port=_count(f["port"][1], f["port"][0], 0, 65535) if "port" in f else 0,
        id=sid,
        address=_address(f["address"][1], f["address"][0]) if "address" in f else None,
        tags=_strings(f["tags"][1], f["tags"][0]) if "tags" in f else (),
        meta=_meta(f["meta"][1], f["meta"][0]) if "meta" in f else {},
        checks=_checks(f),
        source=source,
    )


def parse_services(setting: str, value: Any, source: str | Path) -> tuple[ServiceDefinition, ...]:
    """The definitions of one ``"service"`` (a table) or ``"services"`` (a list) setting.

    Raises :class:`BadValueError` whose ``setting`` is the path of the bad value.
    """
    path = Path(source)
    if setting == "service":
        if isinstance(value, list):
            raise BadValueError('must be one table; use "services" for a list', setting)
        return (_service(value, setting, path),)
    if not isinstance(value, list):
        raise BadValueError(f"must be a list of service tables, got {show(value)}", setting)
    return tuple(_service(item, f"{setting}[{i}]", path) for i, item in enumerate(value))


CHECK_SETTINGS = ("check", "checks")


def parse_checks(setting: str, value: Any) -> tuple[CheckDefinition, ...]:
    """The definitions of one top-level ``"check"`` (a table) or ``"checks"`` (a list)
    setting: checks registered by themselves, node checks unless they name a service_id.

    Raises :class:`BadValueError` whose ``setting`` is the path of the bad value.
    """
    if setting == "check":
        if isinstance(value, list):
            raise BadValueError('must be one table; use "checks" for a list', setting)
        return (parse_check_definition(value, setting),)
    if not isinstance(value, list):
        raise BadValueError(f"must be a list of check tables, got {show(value)}", setting)
    return tuple(parse_check_definition(item, f"{setting}[{i}]") for i, item in enumerate(value))


def check_unique_ids(definitions: Sequence[ServiceDefinition]) -> None:
    """A service id names one instance: a second definition of it is a mistake."""
    seen: dict[str, ServiceDefinition] = {}
    for d in definitions:
        first = seen.setdefault(d.service_id, d)
        if first is not d:
            where = "earlier in that file" if first.source == d.source else f"in {first.source}"
            raise ConfigError(
                f'{d.source}: service id "{d.service_id}" is already defined {where}; '
                'give one of them another "id"'
            )


# The longest text an advertised IP address can take ("ffff:...:255.255.255.255"): a
# definition without an address is checked as if it had this one, so it fits whatever
# address the agent ends up advertising.
_LONGEST_ADDRESS = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"


def preflight(definitions: Sequence[ServiceDefinition], node: str) -> None:
    """Run registration's own validation on every definition before anything binds.

    ``mesh.register`` checks the same (it shares ``_services._validated``), so a
    definition that passes here cannot be refused later and leave the agent half-configured.
    """
    from meshlite._services import _validated  # anyio and the check runner: agent only

    for d in definitions:
        try:
            _validated(node, d.service_id, d.name, d.port, d.tags, d.meta,
                       d.address or _LONGEST_ADDRESS)  # fmt: skip
        except ConfigError as exc:
            raise ConfigError(f'{d.source}: service "{d.service_id}": {exc}') from None


def load_service_dir(path: str | Path) -> list[ServiceDefinition]:
    """Every service defined in the ``.json``/``.toml`` files of ``path``, in name order.

    The files are agent config files (Consul's ``-config-dir``): their other settings are
    checked too, and any error raises :class:`ConfigError` naming the file and setting.
    """
    from meshlite._agent_config import load_dir, merge  # that module imports this one

    return list(merge(load_dir(str(path))).services)
