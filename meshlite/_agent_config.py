"""``meshlite agent`` configuration: config files (JSON or TOML, Consul's shape) plus flags.

Theory of operation
-------------------
Consul's agent reads any number of config files (``-config-file``, ``-config-dir``) and then
its flags; a later source replaces an earlier one's single values and adds to its lists and
maps (Consul ``agent/config/merge.go``: slices append, maps merge).  We do the same in two
steps.  Each source becomes a *layer*: a flat dict of fields (``bind_host``, ``bind_port``,
``join``, ...) produced by one table, :data:`_SETTINGS`, that knows every accepted name —
ours and Consul's aliases — its expected shape, and which fields it sets.  Consul's split
addresses fit that way: ``bind_addr`` sets only ``bind_host`` and ``ports.serf_lan`` only
``bind_port``.  :func:`merge` then folds the layers, files in order and flags last, into a
frozen :class:`AgentConfig`; :meth:`AgentConfig.mesh_kwargs` gives the ``Mesh(...)`` arguments.

Strictness is the point.  An unknown setting is an error with a difflib suggestion; a
mistyped one names the file, the setting and what was expected; a Consul setting meshlite
has no counterpart for gets a hint instead of a bare "unknown".  Two names for one thing in
one file (``name`` and ``node_name``) is an error rather than a silent pick.  The parsers
(``_agent_parse``) are shared by files and flags, so both say the same thing.  Consul's
``service``/``services`` settings become :class:`~meshlite._agent_services.ServiceDefinition`
values that add up across files (``_agent_services`` parses them; a service id defined
twice is an error).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from meshlite._addr import format_hostport
from meshlite._agent_parse import (
    HTTP_PORT,
    SERF_PORT,
    SETTINGS,
    BadValueError,
    Fields,
    parse_meta_flag,
    show,
)
from meshlite._agent_services import (
    CHECK_SETTINGS,
    SERVICE_SETTINGS,
    CheckDefinition,
    ServiceDefinition,
    check_unique_ids,
    parse_checks,
    parse_services,
)
from meshlite.errors import ConfigError

__all__ = [
    "AgentConfig",
    "AgentConfigError",
    "Layer",
    "flags_layer",
    "layer_from_mapping",
    "load_dir",
    "load_file",
    "merge",
]

DNS_PORT = 8600  # Consul's DNS port, so a resolver config written for Consul still fits
# Fields that add up across layers (and within one file) instead of being replaced.
_JOINED_FIELDS = frozenset({"join"})
_MERGED_FIELDS = frozenset({"meta"})
# Service definitions add up across files too; duplicate ids are an error (see merge).
_APPENDED_FIELDS = frozenset({"services", "checks"})

# Consul settings with no meshlite counterpart (yet): say so instead of "unknown setting".
_CONSUL_HINTS = {
    "datacenter": 'use "cluster" (a label peers must share) instead',
    "client_addr": 'use "http" and "dns" ("host:port") instead',
    "recursors": "meshlite's DNS answers its own domain only: forward just that domain to it",
    "dns_config": 'use "dns_ttl" (one TTL for every DNS answer)',
    "ui": "the web UI is always served at /ui/ with the HTTP API",
    "ui_config": "the web UI is always served at /ui/ with the HTTP API",
    "ui_dir": "the web UI's files ship in the package",
    "enable_local_script_checks": "script checks (args) in local files always run",
    "enable_script_checks": "script checks (args) in local files always run",
    "acl": 'use "http_token" (one token guards the HTTP API\'s writes)',
    "retry_interval": "meshlite retries joins with exponential backoff on its own",
    "retry_max": "meshlite retries joins until one seed answers",
    "leave_on_terminate": "meshlite always leaves gracefully on SIGTERM and SIGINT",
    "skip_leave_on_interrupt": "meshlite always leaves gracefully on SIGTERM and SIGINT",
    "encrypt_verify_incoming": "meshlite always verifies traffic when a key is set",
    "encrypt_verify_outgoing": "meshlite always encrypts traffic when a key is set",
}
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


class AgentConfigError(ConfigError):
    """A config file or flag is malformed; the message names the source and the setting."""


@attrs.frozen
class Layer:
    """One source's settings as fields, plus which setting set each (for conflict errors)."""

    source: str  # the file path, or "flags"
    fields: Fields = attrs.field(factory=dict)
    owners: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class AgentConfig:
    """The merged agent configuration (files, then flags)."""

    name: str | None = None
    bind: str = f"127.0.0.1:{SERF_PORT}"
    advertise: str | None = None
    join: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()  # base64; the first is the primary.  Never log these.
    cluster: str = ""
    server: bool = False
    mdns: bool = False
    mdns_publish: bool = False
    meta: dict[str, str] = attrs.field(factory=dict)
    profile: str = "lan"
    log_level: str = "info"
    log_json: bool = False
    # Raft servers: where their state lives (None: memory) and how many found the cluster.
    data_dir: str | None = None
    bootstrap_expect: int | None = None
    http: str | None = None  # the HTTP API (meshlite._http); --dev: 127.0.0.1:8500
    http_token: str | None = None  # required for writes when set.  Never log it.
    http_token_reads: bool = False  # ... and for reads too
    http_on_leader: bool = False  # servers: bind "http" only while leading
    # The DNS interface (meshlite._dns): off unless an address is given (--dev: :8600).
    dns: str | None = None
    dns_domain: str = "meshlite"
    dns_ttl_s: int = 0
    sources: tuple[str, ...] = ()  # the config files read, in order
    # "service"/"services" of every file, in reading order; registered once the mesh runs.
    services: tuple[ServiceDefinition, ...] = ()
    # Top-level "check"/"checks" (node checks, or checks of a service by service_id),
    # registered after the services.
    checks: tuple[CheckDefinition, ...] = ()

    def mesh_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``meshlite.Mesh(...)``."""
        return {
            "name": self.name,
            "bind": self.bind,
            "advertise": self.advertise,
            "join": list(self.join),
            "key": list(self.keys) or None,
            "cluster": self.cluster,
            "server": self.server,
            "bootstrap_expect": self.bootstrap_expect if self.server else None,
            "data_dir": self.data_dir if self.server else None,
            "meta": dict(self.meta),
            "mdns": self.mdns,
            "mdns_publish": self.mdns_publish,
            "profile": self.profile,
            "http": self.http,
            "http_token": self.http_token,
            "http_token_reads": self.http_token_reads,
            "http_on_leader": self.http_on_leader,
            "dns": self.dns,
            "dns_domain": self.dns_domain,
            "dns_ttl_s": self.dns_ttl_s,
        }

    def ignored_in_use(self) -> list[str]:
        """Server-only settings given to a peer that is not a server (warned about)."""
        names = ("data_dir", "bootstrap_expect")
        return [] if self.server else [n for n in names if getattr(self, n) is not None]


# ------------------------------------------------------------------------------ layers


def _label(source: str, setting: str) -> str:
    if source == "flags":
        return "--" + setting.replace("_", "-")
    return f'{source}: setting "{setting}"'


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _unknown(source: str, name: str) -> AgentConfigError:
    if name in _CONSUL_HINTS:
        return AgentConfigError(
            f'{source}: setting "{name}" is not supported by meshlite: {_CONSUL_HINTS[name]}'
        )
    known = (*SETTINGS, *SERVICE_SETTINGS, *CHECK_SETTINGS)
    return AgentConfigError(f'{source}: unknown setting "{name}"{_suggest(name, known)}')


def _parse(source: str, setting: str, value: Any) -> Fields:
    if setting in SERVICE_SETTINGS and source != "flags":
        return {"services": parse_services(setting, value, source)}
    if setting in CHECK_SETTINGS and source != "flags":
        return {"checks": parse_checks(setting, value)}
    if setting not in SETTINGS:
        raise _unknown(source, setting)
    return SETTINGS[setting](value)


def _add(layer: Layer, setting: str, value: Any) -> None:
    try:
        fields = _parse(layer.source, setting, value)
    except BadValueError as exc:
        raise AgentConfigError(f"{_label(layer.source, exc.setting or setting)} {exc}") from None
    for field, v in fields.items():
        other = layer.owners.get(field)
        added = field in _JOINED_FIELDS | _APPENDED_FIELDS
        if other is not None and not added and other != setting:
            raise AgentConfigError(
                f'{layer.source}: settings "{other}" and "{setting}" both set the same '
                "thing; keep one"
            )
        layer.owners[field] = setting
        if added:
            v = (*layer.fields.get(field, ()), *v)
        layer.fields[field] = v


def layer_from_mapping(source: str, data: Mapping[str, Any]) -> Layer:
    """Check every setting of one parsed file (or any mapping) into a layer."""
    layer = Layer(source)
    for name, value in data.items():
        _add(layer, name, value)
    return layer


def flags_layer(values: Mapping[str, Any]) -> Layer:
    """The layer from command-line flags: setting name -> value, ``None`` meaning not given.

    ``meta`` is a list of ``"key=value"`` strings, ``join`` and ``key`` lists of strings.
    """
    layer = Layer("flags")
    for name, value in values.items():
        if value is None:
            continue
        if name == "meta":
            try:
                value = dict(parse_meta_flag(item) for item in value)
            except BadValueError as exc:
                raise AgentConfigError(f"--meta {exc}") from None
        _add(layer, name, value)
    return layer


# ------------------------------------------------------------------------------ files


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f'the key "{k}" appears twice')
        out[k] = v
    return out


def _parse_text(path: str, text: str) -> Any:
    if path.endswith(".toml"):
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            msg = str(exc)
            m = _TOML_POSITION.search(msg)
            where = f"{path}:{m.group(1)}:{m.group(2)}" if m else path
            raise AgentConfigError(
                f"{where}: invalid TOML: {_TOML_POSITION.sub('', msg)}"
            ) from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise AgentConfigError(
            f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}"
        ) from None
    except ValueError as exc:  # a duplicate key (no position from the hook)
        raise AgentConfigError(f"{path}: invalid JSON: {exc}") from None


def load_file(path: str) -> Layer:
    """Read, parse and check one ``.json`` or ``.toml`` config file."""
    if not path.endswith((".json", ".toml")):
        raise AgentConfigError(f"{path}: a config file's name must end in .json or .toml")
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise AgentConfigError(f"{path}: cannot read: not UTF-8 text") from None
    except OSError as exc:
        raise AgentConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    data = _parse_text(path, text)
    if not isinstance(data, dict):
        raise AgentConfigError(f"{path}: must hold an object of settings, got {show(data)}")
    return layer_from_mapping(path, data)


def load_dir(path: str) -> list[Layer]:
    """Every ``.json`` and ``.toml`` file in a directory, in name order (Consul's -config-dir)."""
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        raise AgentConfigError(f"{path}: cannot read directory: {exc.strerror or exc}") from None
    files = [os.path.join(path, n) for n in names if n.endswith((".json", ".toml"))]
    return [load_file(f) for f in files if os.path.isfile(f)]


# ------------------------------------------------------------------------------ merge


def _fold(layers: Sequence[Layer]) -> Fields:
    out: Fields = {}
    for layer in layers:
        for field, value in layer.fields.items():
            if field in _JOINED_FIELDS:
                out[field] = tuple(dict.fromkeys((*out.get(field, ()), *value)))
            elif field in _APPENDED_FIELDS:
                out[field] = (*out.get(field, ()), *value)
            elif field in _MERGED_FIELDS:
                out[field] = {**out.get(field, {}), **value}
            else:
                out[field] = value
    return out


def _address(f: Fields, prefix: str, default_port: int) -> str | None:
    host, port = f.get(f"{prefix}_host"), f.get(f"{prefix}_port")
    if host is None and port is None:
        return None
    return format_hostport(host or "127.0.0.1", default_port if port is None else port)


def _advertise(f: Fields, bind_port: int) -> str | None:
    host, port = f.get("advertise_host"), f.get("advertise_port")
    if host is None:
        if port is not None:
            raise AgentConfigError("an advertise port is set without an advertise address")
        return None
    port = bind_port if port is None else port
    if port == 0:
        raise AgentConfigError(
            f'advertise address "{host}" has no port and the bind port is 0 (picked at '
            'start); give the advertise address as "host:port"'
        )
    return format_hostport(host, port)


def merge(layers: Sequence[Layer]) -> AgentConfig:
    """Fold layers (files in order, flags last) into one :class:`AgentConfig`."""
    f = _fold(layers)
    check_unique_ids(f.get("services", ()))
    _check_check_definitions(f.get("checks", ()), f.get("services", ()))
    bind_port: int = f.get("bind_port", SERF_PORT)
    plain = ("name", "cluster", "server", "mdns", "mdns_publish", "profile", "log_level",
             "log_json", "dns_domain", "dns_ttl_s", "http_token", "http_token_reads",
             "http_on_leader")  # fmt: skip
    raft = ("data_dir", "bootstrap_expect")
    return AgentConfig(
        **{k: f[k] for k in (*plain, *raft) if k in f},
        bind=format_hostport(f.get("bind_host", "127.0.0.1"), bind_port),
        advertise=_advertise(f, bind_port),
        join=f.get("join", ()),
        keys=f.get("keys", ()),
        meta=f.get("meta", {}),
        http=_address(f, "http", HTTP_PORT),
        dns=_address(f, "dns", DNS_PORT),
        sources=tuple(layer.source for layer in layers if layer.source != "flags"),
        services=f.get("services", ()),
        checks=f.get("checks", ()),
    )


def _check_check_definitions(
    definitions: Sequence[CheckDefinition], services: Sequence[ServiceDefinition]
) -> None:
    """Each check id once, and a check's service_id names a service the files define."""
    service_ids = {s.service_id for s in services}
    seen: set[str] = set()
    for d in definitions:
        if d.service_id is not None and d.service_id not in service_ids:
            raise AgentConfigError(
                f'check "{d.id}": service_id "{d.service_id}" is not a service defined in the '
                "config files (leave it out for a node check)"
            )
        if d.id in seen:
            raise AgentConfigError(
                f'check id "{d.id}" is defined twice in the config files; give one of them '
                'another "id"'
            )
        seen.add(d.id)
