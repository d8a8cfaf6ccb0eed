"""A five-peer encrypted mesh in one process: joins, a meta update, a graceful leave, a crash.

    python examples/demo.py

Every peer is a real meshlite.Mesh on 127.0.0.1 with its own UDP+TCP port, talking
AES-GCM-encrypted SWIM gossip to the others.  Peer ``node-0`` prints what it sees.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

import anyio

import meshlite


def show(mesh: meshlite.Mesh, title: str) -> None:
    print(f"\n{title} — as {mesh.name} sees it:")
    for m in mesh.members():
        meta = f" meta={m.meta}" if m.meta else ""
        print(f"  {m.name:8} {m.address}:{m.port:<6} {m.status:8} inc={m.incarnation}{meta}")


async def settle(predicate: object, timeout_s: float = 15.0) -> None:
    with anyio.fail_after(timeout_s):
        while not predicate():  # type: ignore[operator]  # noqa: ASYNC110 (a demo polls)
            await anyio.sleep(0.05)


async def main() -> None:
    key = meshlite.generate_key()  # what `meshlite keygen` prints

    def peer(i: int, join: list[str]) -> meshlite.Mesh:
        return meshlite.Mesh(
            f"node-{i}", "127.0.0.1:0", join=join, key=key, cluster="demo", profile="local"
        )

    async with AsyncExitStack() as stack:
        tg = await stack.enter_async_context(anyio.create_task_group())
        first = await stack.enter_async_context(peer(0, []))

        async def narrate() -> None:  # ends when `first` closes
            async for event in first.watch_members():
                print(f"  [event] {event.kind}: {event.member.name} ({event.member.status})")

        tg.start_soon(narrate)
        others = [await stack.enter_async_context(peer(i, [first.address])) for i in range(1, 5)]
        await settle(lambda: sum(m.status == "alive" for m in first.members()) == 5)
        show(first, "five peers joined")

        await others[0].set_meta({"zone": "eu-1"})
        await settle(lambda: any(m.meta for m in first.members()))
        show(first, "node-1 changed its meta")

        await others[1].leave()
        await others[1].close()
        await settle(lambda: any(m.status == "left" for m in first.members()))
        show(first, "node-2 left gracefully")

        await others[2].close()  # no leave: to the others this looks like a crash
        await settle(lambda: any(m.status == "dead" for m in first.members()))
        show(first, "node-3 crashed and was detected dead")


if __name__ == "__main__":
    anyio.run(main)
