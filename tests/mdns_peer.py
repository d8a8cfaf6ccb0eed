"""One mDNS peer as a process, for tests that run it inside a network namespace.

``python tests/mdns_peer.py NAME HOST PORT CLUSTER [INTERFACE ...]`` starts an
:class:`~meshlite._mdns.MdnsDiscovery` and writes one line per event to stdout:
``found HOST PORT`` for each reported peer, ``log LEVEL MESSAGE`` for each record of the
``meshlite.mdns`` logger (DEBUG and up), and ``closed SECONDS`` after shutdown.  It stops
when stdin closes (the test closes it, or dies) or after ``MAX_LIFETIME_S``, whichever
comes first, so a forgotten peer cannot outlive its test for long.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

from meshlite._mdns import MdnsDiscovery

MAX_LIFETIME_S = 60.0  # far above any test's deadline; a backstop, not a timing knob
_print_lock = threading.Lock()


def emit(line: str) -> None:
    with _print_lock:
        sys.stdout.write(line.replace("\n", " ") + "\n")
        sys.stdout.flush()


class _Forward(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        emit(f"log {record.levelname} {record.getMessage()}")


def main(argv: list[str]) -> int:
    name, host, port, cluster, *interfaces = argv
    logger = logging.getLogger("meshlite.mdns")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(_Forward())
    disc = MdnsDiscovery(
        name,
        (host, int(port)),
        cluster,
        lambda addr: emit(f"found {addr[0]} {addr[1]}"),
        interfaces=interfaces or None,
    )
    disc.start()
    emit("started")
    stdin_closed = threading.Event()

    def wait_stdin() -> None:
        sys.stdin.read()
        stdin_closed.set()

    threading.Thread(target=wait_stdin, daemon=True).start()
    stdin_closed.wait(MAX_LIFETIME_S)
    began = time.monotonic()
    disc.close()
    emit(f"closed {time.monotonic() - began:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
