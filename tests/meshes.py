"""Shared helpers for in-process meshes on loopback (both anyio backends)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import anyio

from meshlite import Mesh

DEADLINE_S = 30.0


@asynccontextmanager
async def mesh_of(n: int, **kwargs: object) -> AsyncIterator[list[Mesh]]:
    """``n`` peers on 127.0.0.1 ports picked by the kernel, all joining the first."""
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            Mesh("node-0", "127.0.0.1:0", profile="local", **kwargs)  # type: ignore[arg-type]
        )
        peers = [first]
        for i in range(1, n):
            peers.append(
                await stack.enter_async_context(
                    Mesh(
                        f"node-{i}", "127.0.0.1:0", join=[first.address], profile="local", **kwargs
                    )  # type: ignore[arg-type]
                )
            )
        yield peers


async def eventually(predicate: Callable[[], bool], timeout_s: float = DEADLINE_S) -> None:
    with anyio.fail_after(timeout_s):
        while not predicate():
            await anyio.sleep(0.05)


async def eventually_in_thread(
    predicate: Callable[[], bool], timeout_s: float = DEADLINE_S
) -> None:
    """``eventually`` for a predicate that blocks (a call through a portal, a sync client)."""
    with anyio.fail_after(timeout_s):
        while not await anyio.to_thread.run_sync(predicate):
            await anyio.sleep(0.05)
