"""SerialThread: jobs run in order in one thread, results and errors come back, a started job
is waited for even by a cancelled caller, and close() ends the thread — on asyncio and trio."""

from __future__ import annotations

import threading
import time

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from meshlite._serial_thread import SerialThread


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
async def test_jobs_run_in_order_in_one_other_thread(anyio_backend: str) -> None:
    worker = SerialThread("test-serial")
    seen: list[tuple[int, int]] = []

    def job(i: int) -> int:
        time.sleep(0.001 * (5 - i % 5))  # later jobs are quicker: order must still hold
        seen.append((i, threading.get_ident()))
        return i * i

    results: dict[int, int] = {}

    async def call(i: int) -> None:
        results[i] = await worker.run(job, i)

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(call, i)
            await anyio.lowlevel.checkpoint()  # submit in this order
    worker.close()
    assert [i for i, _ in seen] == list(range(20))
    assert len({ident for _, ident in seen}) == 1
    assert seen[0][1] != threading.get_ident()
    assert results == {i: i * i for i in range(20)}


@pytest.mark.anyio
async def test_an_error_is_raised_to_its_caller_and_the_thread_goes_on(
    anyio_backend: str,
) -> None:
    worker = SerialThread("test-serial")

    def fail() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        await worker.run(fail)
    assert await worker.run(lambda: 7) == 7
    worker.close()


@pytest.mark.anyio
async def test_a_cancelled_caller_still_waits_for_its_job(anyio_backend: str) -> None:
    worker = SerialThread("test-serial")
    finished = threading.Event()

    def slow() -> None:
        time.sleep(0.2)
        finished.set()

    with anyio.move_on_after(0.02) as scope:
        await worker.run(slow)
        assert finished.is_set()  # the caller came back only once the job was done
        await (
            anyio.lowlevel.checkpoint()
        )  # the cancellation arrives at the caller's next checkpoint
    assert scope.cancelled_caught
    worker.close()


@pytest.mark.anyio
async def test_close_ends_the_thread_after_the_queued_jobs(anyio_backend: str) -> None:
    before = {t.ident for t in threading.enumerate()}
    worker = SerialThread("test-serial-close")
    await worker.run(lambda: None)
    (thread,) = [t for t in threading.enumerate() if t.ident not in before]
    assert thread.name == "test-serial-close" and not thread.daemon
    worker.close()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert await worker.run(lambda: 3) == 3  # a job after close starts a new thread
    worker.close()


@pytest.mark.anyio
async def test_submit_returns_at_once_and_wait_collects(anyio_backend: str) -> None:
    """The Raft node starts a save, applies entries meanwhile, then waits for the save."""
    worker = SerialThread("test-serial")
    release = threading.Event()
    started = threading.Event()

    def save() -> str:
        started.set()
        assert release.wait(5.0)
        return "saved"

    job = worker.submit(save)
    assert not job.done.is_set()  # the caller goes on while the job runs
    assert await anyio.to_thread.run_sync(started.wait, 5.0)
    release.set()
    assert await worker.wait(job) == "saved"
    failing = worker.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        await worker.wait(failing)
    worker.close()
