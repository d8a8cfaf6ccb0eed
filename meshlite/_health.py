"""Health vocabulary: check status, the check kinds a user declares, and a discovered instance.

Theory of operation
-------------------
These are plain values with Consul's meaning.  A *check* is declared with one of the spec
classes below (``HTTPCheck``, ``TCPCheck``, ``ScriptCheck``, ``TTLCheck``, or a Python
callable through ``CallableCheck`` / ``Mesh.check``); the owner of a service runs its
checks (``_check_runner.py``), feeds each result through the threshold state machine
(``_core/checkstate.py``) and publishes the instance's aggregate status — the worst of its
checks — in the catalog (``_core/catalog.py``).  Every peer then answers ``discover()``
from its own copy of the catalog as :class:`Instance` values.

Status semantics follow Consul: ``passing`` < ``warning`` < ``critical`` in severity; an
instance with no checks is passing; ``discover(passing_only=True)`` (the default) returns
only passing instances, as Consul's ``/v1/health/service/:name?passing`` does.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeAlias

import attrs

from meshlite._addr import parse_hostport
from meshlite.errors import ConfigError

__all__ = [
    "MAX_CHECK_ID_BYTES",
    "CallableCheck",
    "CheckSpec",
    "HTTPCheck",
    "Instance",
    "ScriptCheck",
    "Status",
    "TCPCheck",
    "TTLCheck",
    "check_id_problem",
    "worst",
]

# A check id given by its registrant (``mesh.register_check``, ``/v1/agent/check/register``)
# is at most this long: the default ids, "service:<id>:<n>" with a service id of at most
# 128 bytes, fit with room to spare, and an id stays one short line in logs and the API.
# Check ids are never gossiped, so the datagram budget does not constrain them.
MAX_CHECK_ID_BYTES = 256


class Status(enum.StrEnum):
    """A health check's (and an instance's) status, as Consul names them."""

    PASSING = "passing"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Status.PASSING: 0, Status.WARNING: 1, Status.CRITICAL: 2}


def worst(statuses: Any) -> Status:
    """The most severe of ``statuses``; passing when there are none (Consul's aggregate)."""
    result = Status.PASSING
    for s in statuses:
        if _SEVERITY[s] > _SEVERITY[result]:
            result = s
    return result


# ---------------------------------------------------------------------------- validators


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ConfigError(f"{attribute.name} must be > 0 seconds, got {value!r}")


def _at_least_one(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{attribute.name} must be an integer >= 1, got {value!r}")


def _str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ConfigError(f"args must be a list of strings (no shell), got the string {value!r}")
    return tuple(value)


def _status(value: Status | str) -> Status:
    try:
        return Status(value)
    except ValueError:
        raise ConfigError(
            f"initial_status must be passing, warning or critical, got {value!r}"
        ) from None


def _upper(value: str) -> str:
    return value.upper()


@attrs.frozen(kw_only=True)
class _CheckOptions:
    """The options every check kind shares (Consul's check definition fields)."""

    # A name for logs and the API; the runner derives one from the kind when empty.
    name: str = ""
    # Consul starts every check critical until its first result.
    initial_status: Status = attrs.field(default=Status.CRITICAL, converter=_status)
    success_before_passing: int = attrs.field(default=1, validator=_at_least_one)
    failures_before_critical: int = attrs.field(default=1, validator=_at_least_one)
    # Critical for longer than this: the owner deregisters the service.
    deregister_critical_after_s: float | None = attrs.field(default=None, validator=_positive)


# ---------------------------------------------------------------------------- check kinds


@attrs.frozen
class HTTPCheck(_CheckOptions):
    """2xx passing, 429 warning, anything else (or no answer in ``timeout_s``) critical.

    ``body`` is sent with the request (Consul's ``Body``); ``tls_skip_verify`` accepts any
    certificate from an ``https://`` URL (Consul's ``TLSSkipVerify``)."""

    url: str
    interval_s: float = attrs.field(default=10.0, validator=_positive)
    timeout_s: float = attrs.field(default=10.0, validator=_positive)
    method: str = attrs.field(default="GET", kw_only=True, converter=_upper)
    headers: Mapping[str, str] = attrs.field(factory=dict, kw_only=True)
    body: str = attrs.field(default="", kw_only=True)
    tls_skip_verify: bool = attrs.field(default=False, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(
                f"HTTPCheck url must start with http:// or https://, got {self.url!r}"
            )
        if not isinstance(self.body, str):
            raise ConfigError(f"HTTPCheck body must be a string, got {self.body!r}")
        if not isinstance(self.tls_skip_verify, bool):
            raise ConfigError(
                f"HTTPCheck tls_skip_verify must be True or False, got {self.tls_skip_verify!r}"
            )


@attrs.frozen
class TCPCheck(_CheckOptions):
    """Passing when a TCP connection to ``address`` ("host:port") opens in ``timeout_s``."""

    address: str
    interval_s: float = attrs.field(default=10.0, validator=_positive)
    timeout_s: float = attrs.field(default=10.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        # No default port: a TCP check without one would probe an unrelated port.
        _host, port = parse_hostport(self.address, default_port=0, what="TCPCheck address")
        if port == 0:
            raise ConfigError(
                f"TCPCheck address {self.address!r} needs a port, e.g. '127.0.0.1:5432'"
            )


@attrs.frozen
class ScriptCheck(_CheckOptions):
    """Runs ``args`` (no shell): exit 0 passing, 1 warning, else critical; killed at timeout."""

    args: tuple[str, ...] = attrs.field(converter=_str_tuple)
    interval_s: float = attrs.field(default=10.0, validator=_positive)
    timeout_s: float = attrs.field(default=30.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if not self.args or not all(isinstance(a, str) for a in self.args):
            raise ConfigError(
                f"ScriptCheck args must be a non-empty list of strings, got {self.args!r}"
            )


@attrs.frozen
class TTLCheck(_CheckOptions):
    """Pushed from outside (``mesh.ttl_pass/warn/fail``); critical when not updated in ``ttl_s``.

    As in Consul, an update is applied as is: ``success_before_passing`` and
    ``failures_before_critical`` do not apply to TTL checks."""

    ttl_s: float = attrs.field(validator=_positive)


# A callable may also return ``(result, detail)``: the detail becomes the check's output.
CheckResult: TypeAlias = "bool | Status | tuple[bool | Status | None, str] | None"


@attrs.frozen
class CallableCheck(_CheckOptions):
    """A Python callable: True/None passing, ``Status.WARNING`` warning, False or raising
    critical (a returned ``Status`` is taken as is; ``(result, "detail")`` sets the output).
    Sync callables run in a worker thread, async ones are awaited; either is abandoned
    (critical) after ``timeout_s``, and a sync one still running is not started again."""

    fn: Callable[[], CheckResult | Awaitable[CheckResult]]
    interval_s: float = attrs.field(default=10.0, validator=_positive)
    timeout_s: float = attrs.field(default=10.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if not callable(self.fn):
            raise ConfigError(f"CallableCheck needs a callable, got {self.fn!r}")


CheckSpec: TypeAlias = HTTPCheck | TCPCheck | ScriptCheck | TTLCheck | CallableCheck


def check_id_problem(check_id: object) -> str | None:
    """What is wrong with a check id its registrant chose, or None if it will do.

    A slash is refused: the check is addressed by its id in URL paths
    (``/v1/agent/check/pass/<id>``), where a slash would make it another path."""
    if not isinstance(check_id, str) or not check_id:
        return f"a check id must be a non-empty string, got {check_id!r}"
    if len(check_id.encode()) > MAX_CHECK_ID_BYTES:
        return f"a check id must be at most {MAX_CHECK_ID_BYTES} bytes of UTF-8"
    if "/" in check_id:
        return f"a check id must not contain '/' (it is part of URL paths), got {check_id!r}"
    return None


# ---------------------------------------------------------------------------- instances


@attrs.frozen
class Instance:
    """One instance of a service as discovery reports it (Consul's service entry)."""

    id: str
    service: str
    node: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = attrs.field(factory=dict)
    status: Status = Status.PASSING
