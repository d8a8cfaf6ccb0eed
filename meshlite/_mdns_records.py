"""DNS-SD records for a published service: type, instance name, addresses and TXT.

Theory of operation
-------------------
Pure decisions for :mod:`meshlite._mdns_publish` (which owns the thread and
python-zeroconf), testable without a network, as ``_mdns_plan`` is for ``_mdns``:

* **Type** ``_<name>._tcp.local.``, the service name made a legal service-name label
  (RFC 6763 §7.2, RFC 6335 §5.1: at most 15 characters of letters, digits and single
  hyphens, starting and ending with a letter or digit, at least one letter); see
  :func:`service_type` for how other names are mapped.
* **Instance** ``<id>@<node>.<type>``: ids are unique only per peer (and default to the
  service name), so the node name — unique in the mesh — keeps two peers' instances of
  one service from fighting over one DNS-SD name (RFC 6762 §9 would rename one of them
  at random).  See :func:`instance_label` for dots, odd characters and long labels.
* **SRV/A/AAAA**: the port, and the instance's address when it is an IP address (an
  unspecified one means this peer's own addresses).  A service registered with a host
  name is not published: DNS-SD needs the address records, and resolving names here
  would block; a warning says so once.
* **TXT** (RFC 6763 §6): ``tags=a,b`` and one ``key=value`` per meta entry.  One key
  for all tags, not one key per tag, because TXT keys are case-insensitive, unique,
  printable ASCII without ``=`` and share one namespace with the meta keys: tags are
  arbitrary case-sensitive strings, so one key per tag would lose or merge some.
  python-zeroconf users read ``info.decoded_properties["tags"].split(",")``;
  ``avahi-browse -r`` shows ``"tags=a,b"``.  Meta keys that are not legal TXT keys, or
  that repeat an earlier key ignoring case, are left out, and so is any string over
  the 255-byte limit.
* **Health**: as Consul's DNS interface does, a *critical* instance is withdrawn and
  comes back when it recovers; *warning* ones stay visible.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

import attrs

from meshlite._health import Instance, Status
from meshlite._mdns_plan import _short_hash, _truncate_utf8, server_name

__all__ = [
    "MAX_SERVICE_CHARS",
    "Wanted",
    "instance_label",
    "service_type",
    "txt_properties",
    "wanted",
]

# RFC 6763 §7.2 (and RFC 6335 §5.1): a service name is at most 15 characters.
MAX_SERVICE_CHARS = 15
# A shortened name keeps 10 characters, "-" and 4 hex digits of SHA-256 of the full name:
# stable on every peer and across restarts, and two long names that share their first
# 10 characters still get different types (a 1-in-65,536 chance that they do not).
_TYPE_HASH_HEX = 4
_MAX_LABEL_BYTES = 63  # RFC 6763 §4.1.1: an instance name is one DNS label
_LABEL_HASH_HEX = 8
_MAX_TXT_STRING_BYTES = 255  # RFC 6763 §6.1: each TXT string has a one-byte length
_NOT_SERVICE_CHAR = re.compile(r"[^a-z0-9]+")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_TXT_KEY = re.compile(r"[\x20-\x3c\x3e-\x7e]+")  # printable ASCII except "=" (§6.4)


# ---------------------------------------------------------------------------- names, TXT


def service_type(name: str) -> str:
    """``_<label>._tcp.local.`` for a meshlite service name.

    The label is the name in lower case with every run of other characters than ASCII
    letters and digits turned into one ``-``, trimmed of ``-`` at both ends
    (``"My_API v2"`` -> ``_my-api-v2._tcp.local.``).  A label that is longer than 15
    characters, or that has no letter left, becomes its first 10 characters (or ``svc``),
    ``-`` and 4 hex digits of SHA-256 of the *original* name
    (``"payments-gateway"`` -> ``_payments-g-xxxx._tcp.local.``), so browsers see a
    legal type and distinct long names stay distinct.
    """
    label = _NOT_SERVICE_CHAR.sub("-", name.lower()).strip("-")
    if len(label) > MAX_SERVICE_CHARS or not any(c.isalpha() for c in label):
        keep = MAX_SERVICE_CHARS - _TYPE_HASH_HEX - 1
        stem = label[:keep].rstrip("-") if any(c.isalpha() for c in label) else "svc"
        label = f"{stem}-{_short_hash(name, _TYPE_HASH_HEX)}"
    return f"_{label}._tcp.local."


def instance_label(service_id: str, node: str) -> str:
    """``<id>@<node>`` as one legal DNS-SD instance label.

    Dots become ``-``: RFC 6763 §4.3 allows them escaped, but python-zeroconf writes every
    dot as a label boundary (a host-name node ``db.example.com`` would split the name).
    Control characters (never allowed) become ``?``, and such a label, or one over 63
    bytes (cut), ends in ``-`` and 8 hex digits of a hash of the original, to stay unique.
    """
    raw = f"{service_id}@{node}"
    label = _CONTROL_CHARS.sub("?", raw).replace(".", "-")
    if _CONTROL_CHARS.search(raw) or len(label.encode("utf-8")) > _MAX_LABEL_BYTES:
        keep = _MAX_LABEL_BYTES - _LABEL_HASH_HEX - 1
        label = f"{_truncate_utf8(label, keep)}-{_short_hash(raw, _LABEL_HASH_HEX)}"
    return label


def txt_properties(instance: Instance) -> dict[str, str]:
    """The TXT record: ``tags`` (comma-joined, when there are tags), then the meta."""
    out: dict[str, str] = {}
    if instance.tags:
        out["tags"] = ",".join(instance.tags)
    for key, value in instance.meta.items():
        taken = any(key.lower() == k.lower() for k in out)
        if taken or not _TXT_KEY.fullmatch(key):
            continue
        out[key] = value
    return {
        k: v
        for k, v in out.items()
        if len(k.encode()) + 1 + len(v.encode()) <= _MAX_TXT_STRING_BYTES
    }


@attrs.frozen
class Wanted:
    """What one service should look like on the link; equal values need no re-announcing."""

    type: str
    name: str  # the full instance name, "<label>.<type>"
    port: int
    server: str
    addresses: tuple[str, ...]
    properties: tuple[tuple[str, str], ...]


def wanted(instance: Instance, node: str, own: Sequence[str]) -> Wanted | None:
    """The records for ``instance``; None when it must not be visible (critical)."""
    if instance.status == Status.CRITICAL:
        return None
    address = ipaddress.ip_address(instance.address)  # ValueError: a host name
    addresses = tuple(own) if address.is_unspecified else (str(address),)
    # This peer's own addresses sit under the node's host name (shared with _mdns);
    # another address gets a host name of its own, so no host name has two meanings.
    host = node if addresses == tuple(own) else f"{node}|{','.join(addresses)}"
    kind = service_type(instance.service)
    return Wanted(
        type=kind,
        name=f"{instance_label(instance.id, node)}.{kind}",
        port=instance.port,
        server=server_name(host),
        addresses=addresses,
        properties=tuple(txt_properties(instance).items()),
    )
