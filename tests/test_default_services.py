"""The synchronous service twins on the default mesh, from plain threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import anyio
import pytest
from meshes import eventually

import meshlite
from meshlite import Mesh


@pytest.fixture
def no_default_mesh() -> Iterator[None]:
    meshlite.stop()
    yield
    meshlite.stop()


def wait_until(predicate: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_register_check_discover_watch_deregister_from_sync_code(
    no_default_mesh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """register() starts the default mesh from MESHLITE_* on first use; a peer sees it."""
    healthy = {"ok": True}
    batches: list[set[int]] = []
    changed = threading.Event()

    async def main() -> None:
        async with Mesh("observer", "127.0.0.1:0", profile="local") as observer:
            monkeypatch.setenv("MESHLITE_NAME", "sync-app")
            monkeypatch.setenv("MESHLITE_BIND", "127.0.0.1:0")
            monkeypatch.setenv("MESHLITE_JOIN", observer.address)

            def sync_app() -> meshlite.Watch:
                svc = meshlite.register("db", 5432, tags=["primary"])
                assert meshlite.default_mesh().name == "sync-app"

                @meshlite.check("db", interval_s=0.1, timeout_s=1, initial_status="passing")
                def db_ok() -> bool:
                    return healthy["ok"]

                assert [i.port for i in meshlite.discover("db")] == [5432]
                assert meshlite.pick("db", tag="primary") is not None
                assert svc.id == "db"

                def on_change(instances: list[meshlite.Instance]) -> None:
                    batches.append({i.port for i in instances})
                    changed.set()

                return meshlite.watch("db", on_change)

            watch = await anyio.to_thread.run_sync(sync_app)
            try:
                await eventually(lambda: [i.port for i in observer.discover("db")] == [5432])
                healthy["ok"] = False  # the decorator check fails: out everywhere
                await eventually(lambda: observer.discover("db") == [])
                await anyio.to_thread.run_sync(lambda: wait_until(lambda: set() in batches))
                await anyio.to_thread.run_sync(meshlite.deregister, "db")
                await eventually(lambda: observer.discover("db", passing_only=False) == [])
                assert watch.running
                watch.cancel()
            finally:
                await anyio.to_thread.run_sync(meshlite.stop)

    anyio.run(main)
    assert batches[0] == {5432} and set() in batches
    with pytest.raises(meshlite.NotRunningError):
        meshlite.deregister("db")


def test_many_services_do_not_fit_a_datagram_and_still_replicate(no_default_mesh: None) -> None:
    """A catalog far larger than one packet spreads record by record, and a peer joining
    later receives it whole through push/pull."""

    async def main() -> None:
        async with Mesh("a", "127.0.0.1:0", profile="local") as a:
            async with Mesh("b", "127.0.0.1:0", join=[a.address], profile="local") as b:
                for i in range(300):
                    await a.register("bulk", 10_000 + i, id=f"bulk-{i}", meta={"i": str(i)})
                await eventually(lambda: len(b.discover("bulk")) == 300)
                async with Mesh("late", "127.0.0.1:0", join=[b.address], profile="local") as late:
                    await eventually(lambda: len(late.discover("bulk")) == 300)
                    ports = {i.port for i in late.discover("bulk")}
                    assert ports == set(range(10_000, 10_300))

    anyio.run(main)
