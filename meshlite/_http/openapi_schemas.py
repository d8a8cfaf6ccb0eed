"""The JSON schemas of ``/v1/openapi.json``: Consul's structures as ``shapes.py`` fills them.

Theory of operation
-------------------
One schema per structure of Consul's ``api`` package that meshlite returns or accepts.
Response schemas list the fields ``shapes.py`` always sets (``required``) and allow more;
request schemas list the keys the parser knows (``_agent_services.py``) and refuse others,
with the limits registration enforces (names and ids up to 128 bytes, ports 0-65535,
meta up to 512 bytes).  Kept in step with ``shapes.py`` by ``tests/test_http_openapi.py``,
which validates live responses against these schemas.
"""

from __future__ import annotations

from typing import Any

from meshlite._core.wire_checks import MAX_NAME_BYTES

__all__ = ["SCHEMAS", "SECURITY_SCHEMES", "STRING", "array", "mapping", "ref"]

STRING: dict[str, Any] = {"type": "string"}
_INT = {"type": "integer"}
_UINT = {"type": "integer", "minimum": 0}
_BOOL = {"type": "boolean"}
_STRINGS = {"type": "array", "items": STRING}
_STRING_MAP = {"type": "object", "additionalProperties": STRING}
_STATUS = {"type": "string", "enum": ["passing", "warning", "critical"]}
# A name of at most MAX_NAME_BYTES of UTF-8: at most that many ASCII characters.  The
# schema counts characters, so it promises the ASCII case (multi-byte names may be refused).
_NAME = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_NAME_BYTES,
    "pattern": "^[A-Za-z0-9_.-]+$",
}
_DURATION = {"type": "string", "pattern": r"^[1-9][0-9]{0,5}(ms|s|m|h)$"}
# A gossip key: base64 of 16, 24 or 32 bytes (meshlite keygen makes 32).
_KEY = {
    "type": "string",
    "pattern": r"^([A-Za-z0-9+/]{22}==|[A-Za-z0-9+/]{32}|[A-Za-z0-9+/]{43}=)$",
}


def ref(name: str, *, nullable: bool = False) -> dict[str, Any]:
    target = {"$ref": f"#/components/schemas/{name}"}
    return {"allOf": [target], "nullable": True} if nullable else target


def array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def mapping(values: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": values}


def _obj(
    props: dict[str, Any], *, closed: bool = False, required: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """An object schema; responses require every listed field unless told otherwise."""
    out: dict[str, Any] = {"type": "object", "properties": props}
    keys = tuple(props) if required is None else required
    if keys:
        out["required"] = list(keys)
    if closed:
        out["additionalProperties"] = False
    return out


_WEIGHTS = _obj({"Passing": _INT, "Warning": _INT})
_NODE_FIELDS = {
    "ID": STRING,
    "Node": STRING,
    "Address": STRING,
    "Datacenter": STRING,
    "TaggedAddresses": _STRING_MAP,
    "Meta": _STRING_MAP,
    "CreateIndex": _UINT,
    "ModifyIndex": _UINT,
}
_SERVICE_FIELDS = {
    "ID": STRING,
    "Service": STRING,
    "Tags": _STRINGS,
    "Meta": _STRING_MAP,
    "Port": _INT,
    "Address": STRING,
    "Weights": _WEIGHTS,
    "EnableTagOverride": _BOOL,
    "Datacenter": STRING,
    "CreateIndex": _UINT,
    "ModifyIndex": _UINT,
}
_CHECK_FIELDS = {
    "Node": STRING,
    "CheckID": STRING,
    "Name": STRING,
    "Status": _STATUS,
    "Notes": STRING,
    "Output": STRING,
    "ServiceID": STRING,
    "ServiceName": STRING,
    "ServiceTags": _STRINGS,
    "Type": STRING,
    "Interval": STRING,
    "Timeout": STRING,
    "ExposedPort": _INT,
    "Definition": {"type": "object"},
    "CreateIndex": _UINT,
    "ModifyIndex": _UINT,
}
_MEMBER_FIELDS = {
    "Name": STRING,
    "Addr": STRING,
    "Port": _INT,
    "Tags": _STRING_MAP,
    "Status": {"type": "integer", "enum": [0, 1, 2, 3, 4]},
    "ProtocolMin": _INT,
    "ProtocolMax": _INT,
    "ProtocolCur": _INT,
    "DelegateMin": _INT,
    "DelegateMax": _INT,
    "DelegateCur": _INT,
}
_CATALOG_FIELDS = {
    "ID": STRING,
    "Node": STRING,
    "Address": STRING,
    "Datacenter": STRING,
    "TaggedAddresses": _STRING_MAP,
    "NodeMeta": _STRING_MAP,
    "ServiceKind": STRING,
    "ServiceID": STRING,
    "ServiceName": STRING,
    "ServiceTags": _STRINGS,
    "ServiceAddress": STRING,
    "ServiceMeta": _STRING_MAP,
    "ServicePort": _INT,
    "ServiceWeights": _WEIGHTS,
    "ServiceEnableTagOverride": _BOOL,
    "CreateIndex": _UINT,
    "ModifyIndex": _UINT,
}

# Check definitions, one closed shape per kind (the parser refuses anything else).  Script
# checks (Args) are refused over HTTP, so they are not listed.
_COUNT = {"type": "integer", "minimum": 0, "maximum": 1_000_000}
_CHECK_COMMON = {
    "Name": {"type": "string", "minLength": 1},
    "Status": _STATUS,
    "Notes": STRING,
    "DeregisterCriticalServiceAfter": _DURATION,
    "SuccessBeforePassing": _COUNT,
    "FailuresBeforeCritical": _COUNT,
}
_TIMED = {"Interval": _DURATION, "Timeout": _DURATION}
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_HOSTPORT = {"type": "string", "pattern": rf"^{_LABEL}(\.{_LABEL})*:{_PORT}$"}
_URL = {"type": "string", "pattern": r"^https?://[^\s]+$"}
_HTTP_OPTIONS = {
    "Method": {"type": "string", "pattern": "^[A-Za-z]+$"},
    "Header": mapping(_STRINGS),
    "Body": STRING,
    "TLSSkipVerify": _BOOL,
}


def _check_kinds(
    extra: dict[str, Any], required: tuple[str, ...], description: str
) -> dict[str, Any]:
    """One closed object per check kind, each with the ``extra`` fields too."""
    common = {**_CHECK_COMMON, **extra}
    return {
        "oneOf": [
            _obj({"TTL": _DURATION, **common}, closed=True, required=("TTL", *required)),
            _obj(
                {"HTTP": _URL, **_TIMED, **_HTTP_OPTIONS, **common},
                closed=True,
                required=("HTTP", "Interval", *required),
            ),
            _obj(
                {"TCP": _HOSTPORT, **_TIMED, **common},
                closed=True,
                required=("TCP", "Interval", *required),
            ),
        ],
        "description": description,
    }


_CHECK_DEFINITION = _check_kinds(
    {}, (), "a TTL, HTTP or TCP check (script checks only from config files)"
)
# A check id that works in every route: the check is addressed by it in URL paths.
_CHECK_ID = {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[A-Za-z0-9_.:-]+$"}
_CHECK_REGISTRATION = _check_kinds(
    {"Name": _CHECK_ID, "ID": _CHECK_ID, "ServiceID": _NAME},
    ("Name",),
    "a TTL, HTTP or TCP check; with ServiceID, one more check of that service of this "
    "agent, else a node check (its status counts in every service of this agent); ID "
    "defaults to Name",
)
# What fits one catalog record (1 KiB on the wire): ASCII tags and meta, a few of each.
_SHORT = {"type": "string", "pattern": "^[ -~]{0,32}$"}


SCHEMAS: dict[str, Any] = {
    "Member": _obj(_MEMBER_FIELDS),
    "Node": _obj(_NODE_FIELDS),
    "AgentService": _obj(_SERVICE_FIELDS),
    "AgentServiceDetail": _obj({**_SERVICE_FIELDS, "ContentHash": STRING}),
    "HealthCheck": _obj(_CHECK_FIELDS),
    "CatalogService": _obj(_CATALOG_FIELDS),
    "CatalogNode": _obj({"Node": ref("Node"), "Services": mapping(ref("AgentService"))}),
    "ServiceEntry": _obj(
        {"Node": ref("Node"), "Service": ref("AgentService"), "Checks": array(ref("HealthCheck"))}
    ),
    "AgentServiceHealth": _obj(
        {
            "AggregatedStatus": _STATUS,
            "Service": ref("AgentService"),
            "Checks": array(ref("HealthCheck")),
        }
    ),
    "AgentSelf": _obj(
        {
            "Config": _obj(
                {
                    "Datacenter": STRING,
                    "NodeName": STRING,
                    "NodeID": STRING,
                    "Server": _BOOL,
                    "Version": STRING,
                },
            ),
            "Member": ref("Member"),
            "Meta": _STRING_MAP,
            "Stats": mapping(_STRING_MAP),
        }
    ),
    "KeyringResponse": _obj(
        {
            "WAN": _BOOL,
            "Datacenter": STRING,
            "Segment": STRING,
            "Keys": mapping(_INT),
            "PrimaryKeys": mapping(_INT),
            "NumNodes": _INT,
            "Messages": _STRING_MAP,
        },
        required=("WAN", "Datacenter", "Keys", "PrimaryKeys", "NumNodes"),
    ),
    "ServiceRegistration": _obj(
        {
            "Name": _NAME,
            "ID": _NAME,
            "Tags": {"type": "array", "items": _SHORT, "maxItems": 4},
            "Address": {"type": "string", "pattern": "^[A-Za-z0-9._-]{0,64}$"},
            "Port": {"type": "integer", "minimum": 0, "maximum": 65535},
            "Meta": {
                "type": "object",
                "additionalProperties": _SHORT,
                "propertyNames": {"pattern": "^[ -~]{1,32}$"},
                "maxProperties": 4,
            },
            "Check": ref("CheckDefinition"),
            "Checks": array(ref("CheckDefinition")),
            "Weights": _obj({"Passing": _INT, "Warning": _INT}, required=()),  # ignored
            "EnableTagOverride": _BOOL,
            "Kind": {"type": "string", "enum": [""]},
        },
        closed=True,
        required=("Name",),
    ),
    "CheckDefinition": _CHECK_DEFINITION,
    "CheckRegistration": _CHECK_REGISTRATION,
    # Consul ignores fields it does not know in these two bodies; so do we.
    "CheckUpdate": _obj({"Status": _STATUS, "Output": STRING}, required=("Status",)),
    "KeyringRequest": _obj({"Key": _KEY}),
}

SECURITY_SCHEMES = {
    "ConsulToken": {"type": "apiKey", "in": "header", "name": "X-Consul-Token"},
    "BearerToken": {"type": "http", "scheme": "bearer"},
}
