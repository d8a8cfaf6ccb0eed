"""One worker thread that runs blocking jobs in order for an event loop: ``await run(f, ...)``.

Theory of operation
-------------------
Raft storage does one sqlite transaction (one sync) per ``Ready``, off the event loop.
``anyio.to_thread.run_sync`` costs, per call, a capacity-limiter acquire, a cancel
scope, a Python-level ``queue.Queue`` (a ``threading.Condition``: lock, notify, waiter
lock) and the hop back; on a follower that took a fifth of its CPU under write load.
A save needs none of that generality — one caller at a time, jobs in order, never
abandoned — so :class:`SerialThread` is the bare version: a ``queue.SimpleQueue`` (C, one
futex wake) to a thread of its own, and the result handed back with the loop's own
thread-safe call (asyncio's ``call_soon_threadsafe``, trio's ``run_sync_soon``:
``loop_caller``).

Jobs run in submission order, one at a time.  A job that started is waited for even if
the caller is cancelled (shielded, as ``to_thread.run_sync`` without
``abandon_on_cancel``): a half-done sqlite transaction helps nobody.  The thread starts
on the first job and ends at :meth:`SerialThread.close` after the jobs queued before it;
it is not a daemon, so the interpreter waits for a save in progress at exit.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

__all__ = ["Job", "SerialThread", "loop_caller"]

T = TypeVar("T")


def loop_caller() -> Callable[[Callable[[], object]], object]:
    """A non-blocking "run this on the current event loop soon" for other threads."""
    import asyncio

    try:
        return asyncio.get_running_loop().call_soon_threadsafe
    except RuntimeError:  # not asyncio, so trio: anyio's other backend
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon


class Job:
    """A callable given to a :class:`SerialThread`; :meth:`SerialThread.wait` for it."""

    __slots__ = ("done", "error", "fn", "result", "wake")

    def __init__(self, fn: Callable[[], Any], wake: Callable[[Callable[[], object]], object]):
        self.fn = fn
        self.wake = wake
        self.done = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class SerialThread:
    """Runs blocking callables in one thread of its own, in the order they are given."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the thread; its result, or what it raised."""
        result: T = await self.wait(self.submit(fn, *args))
        return result

    def submit(self, fn: Callable[..., Any], *args: Any) -> Job:
        r"""Start ``fn(*args)`` in the thread (after the jobs before it) and return at
        once: the caller does other work meanwhile, then :meth:`wait`\ s for it."""
        job = Job(lambda: fn(*args), loop_caller())
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=self._name)
            self._thread.start()
        self._jobs.put(job)
        return job

    async def wait(self, job: Job) -> Any:
        """``job``'s result, or what it raised, once it has run."""
        with anyio.CancelScope(shield=True):
            await job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def close(self) -> None:
        """Let the thread end after the jobs already given (does not wait for it)."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job.result = job.fn()
            except BaseException as exc:  # handed to the caller, who re-raises it
                job.error = exc
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                job.wake(job.done.set)
