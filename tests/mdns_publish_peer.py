"""DNS-SD publisher or browser as a process, for tests that run it in a network namespace.

``python tests/mdns_publish_peer.py publish NODE HOST`` runs a
:class:`~meshlite._mdns_publish.Publisher` and reads JSON commands from stdin, one a line:
``{"publish": {instance fields}}`` or ``{"unpublish": "ID"}``; it writes ``log LEVEL
MESSAGE`` for each ``meshlite.mdns`` record and ``closed`` after stdin closes.

``python tests/mdns_publish_peer.py browse TYPE ADDRESS`` runs a plain python-zeroconf
``ServiceBrowser`` (what any python-zeroconf user would write) on the interface that owns
``ADDRESS`` and writes ``seen NAME PORT ADDRESSES-JSON TXT-JSON`` when an instance is
added or updated and ``removed NAME`` when it goes.

Both stop when stdin closes or after ``MAX_LIFETIME_S``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading

from mdns_peer import _Forward, emit  # this directory is sys.path[0] when run as a script
from zeroconf import IPVersion, ServiceBrowser, ServiceListener, Zeroconf

from meshlite._health import Instance, Status
from meshlite._mdns_publish import Publisher

MAX_LIFETIME_S = 60.0  # a backstop far above any test's deadline
RESOLVE_TIMEOUT_MS = 3000


def instance_from(data: dict[str, object]) -> Instance:
    fields = dict(data)
    fields["tags"] = tuple(fields.get("tags", ()))  # type: ignore[arg-type]
    fields["status"] = Status(fields.get("status", "passing"))
    return Instance(**fields)  # type: ignore[arg-type]


def publish(node: str, host: str) -> None:
    logger = logging.getLogger("meshlite.mdns")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(_Forward())
    publisher = Publisher(node, host)
    emit("ready")
    for line in sys.stdin:
        command = json.loads(line)
        if "publish" in command:
            publisher.publish(instance_from(command["publish"]))
        else:
            publisher.unpublish(command["unpublish"])
    publisher.close()
    emit("closed")


class _Listener(ServiceListener):
    def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self._report(zc, type_, name)

    def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self._report(zc, type_, name)

    def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        emit(f"removed {name}")

    def _report(self, zc: Zeroconf, type_: str, name: str) -> None:
        info = zc.get_service_info(type_, name, RESOLVE_TIMEOUT_MS)  # browser thread: may block
        if info is None:
            emit(f"unresolved {name}")
            return
        addresses = json.dumps(sorted(info.parsed_addresses()))
        txt = json.dumps(info.decoded_properties, sort_keys=True)
        emit(f"seen {name} {info.port} {addresses} {txt}")


def browse(type_: str, address: str) -> None:
    zc = Zeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
    browser = ServiceBrowser(zc, type_, _Listener())
    emit("ready")
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    done.wait(MAX_LIFETIME_S)
    browser.cancel()
    zc.close()
    emit("closed")


def main(argv: list[str]) -> int:
    mode, *args = argv
    backstop = threading.Timer(MAX_LIFETIME_S + 10.0, os._exit, (3,))  # a forgotten process
    backstop.daemon = True
    backstop.start()
    publish(*args) if mode == "publish" else browse(*args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
