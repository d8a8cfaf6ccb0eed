"""For the helper scripts tests run as child processes: their protocol with the test.

A child prints one line per event on stdout (flushed at once: the test waits on lines)
and stops when its stdin closes (``LineProcess.stop``); :func:`stdin_closed` returns an
event set then, from a daemon thread, so the child's event loop never blocks on stdin.
"""

from __future__ import annotations

import sys
import threading


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def stdin_closed() -> threading.Event:
    """An event set once stdin reaches end of file (the test closed it)."""
    closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), closed.set()), daemon=True).start()
    return closed
