"""Real sockets on loopback: several Mesh peers in one process, on both anyio backends."""

from __future__ import annotations

import logging
import socket

import anyio
import pytest
from meshes import eventually, eventually_in_thread, mesh_of

import meshlite
from meshlite import ConfigError, MemberEventKind, Mesh

pytestmark = pytest.mark.anyio

KEY1 = meshlite.generate_key()
KEY2 = meshlite.generate_key()
DEADLINE_S = 30.0


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def view(mesh: Mesh) -> dict[str, str]:
    return {m.name: m.status for m in mesh.members()}


def all_alive(peers: list[Mesh], names: set[str]) -> bool:
    return all(view(p) == dict.fromkeys(names, "alive") for p in peers)


async def test_ten_peers_converge_to_one_view(anyio_backend: str) -> None:
    async with mesh_of(10, key=KEY1, cluster="prod") as peers:
        names = {p.name for p in peers}
        await eventually(lambda: all_alive(peers, names))
        member = next(m for m in peers[3].members() if m.name == "node-0")
        assert f"{member.address}:{member.port}" == peers[0].address
        assert member.incarnation >= 0


async def test_leaving_is_seen_as_left_and_closing_as_dead(anyio_backend: str) -> None:
    async with mesh_of(4, key=KEY1) as peers:
        names = {p.name for p in peers}
        await eventually(lambda: all_alive(peers, names))
        await peers[3].leave()
        await peers[3].close()
        await eventually(lambda: all(view(p)["node-3"] == "left" for p in peers[:3]))
        await peers[2].close()  # no leave: a crash, as far as the others can tell
        await eventually(lambda: all(view(p)["node-2"] == "dead" for p in peers[:2]))
        assert all(view(p)["node-3"] == "left" for p in peers[:2])


async def test_wrong_key_wrong_cluster_and_no_key_are_never_admitted(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="meshlite")
    async with mesh_of(3, key=KEY1, cluster="prod") as good:
        names = {p.name for p in good}
        await eventually(lambda: all_alive(good, names))
        seed = [good[0].address]
        async with (
            Mesh(
                "wrong-key", "127.0.0.1:0", join=seed, key=KEY2, cluster="prod", profile="local"
            ) as a,
            Mesh(
                "wrong-label", "127.0.0.1:0", join=seed, key=KEY1, cluster="dev", profile="local"
            ) as b,
            Mesh("no-key", "127.0.0.1:0", join=seed, cluster="prod", profile="local") as c,
        ):
            await anyio.sleep(3.0)  # many probe rounds and join retries in the local profile
            for peer in good:
                assert set(view(peer)) == names
            for outsider in (a, b, c):
                assert set(view(outsider)) == {outsider.name}
    refusals = [r.getMessage() for r in caplog.records if "refusing traffic" in r.getMessage()]
    assert refusals, "a refused peer must be reported"
    assert len(refusals) == len(set(refusals)), "each refusal is logged once"


async def test_key_rotation_while_running_loses_no_member(anyio_backend: str) -> None:
    async with mesh_of(5, key=KEY1) as peers:
        names = {p.name for p in peers}
        await eventually(lambda: all_alive(peers, names))
        bad: list[meshlite.MemberEvent] = []

        async def watch(mesh: Mesh) -> None:
            async for event in mesh.watch_members():
                if event.kind in (MemberEventKind.SUSPECT, MemberEventKind.DEAD):
                    bad.append(event)

        async with anyio.create_task_group() as tg:
            for p in peers:
                tg.start_soon(watch, p)
            installed = await peers[1].keyring_install(KEY2)
            assert (installed.acks, installed.members) == (5, 5), installed.errors
            used = await peers[2].keyring_use(KEY2)
            assert used.complete, used.errors
            removed = await peers[3].keyring_remove(KEY1)
            assert removed.complete, removed.errors
            listed = await peers[0].keyring_list()
            assert listed.keys == {KEY2: 5}
            assert listed.primary_keys == {KEY2: 5}
            await anyio.sleep(1.0)  # several probe rounds on the new key only
            assert all_alive(peers, names)
            tg.cancel_scope.cancel()
        assert bad == []
        with pytest.raises(meshlite.KeyringError):
            await peers[0].keyring_remove(KEY2)  # the primary key cannot be removed


async def test_watch_members_sees_joins_and_meta_updates(anyio_backend: str) -> None:
    async with Mesh("a", "127.0.0.1:0", profile="local") as a:
        seen: list[tuple[MemberEventKind, str, dict[str, str]]] = []

        async def watch() -> None:
            async for event in a.watch_members():
                seen.append((event.kind, event.member.name, event.member.meta))

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            async with Mesh("b", "127.0.0.1:0", join=[a.address], profile="local") as b:
                await eventually(lambda: (MemberEventKind.JOIN, "b", {}) in seen)
                await b.set_meta({"zone": "eu-1"})
                await eventually(lambda: (MemberEventKind.UPDATE, "b", {"zone": "eu-1"}) in seen)
                assert next(m for m in a.members() if m.name == "b").meta == {"zone": "eu-1"}
            tg.cancel_scope.cancel()


async def test_join_retries_until_the_seed_appears(anyio_backend: str) -> None:
    with socket.socket() as s:  # find a port that is free now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seed = f"127.0.0.1:{port}"
    async with Mesh("early", "127.0.0.1:0", join=[seed], profile="local") as early:
        await anyio.sleep(1.5)
        assert set(view(early)) == {"early"}
        async with Mesh("late-seed", seed, profile="local") as late:
            await eventually(lambda: set(view(late)) == {"early", "late-seed"}, timeout_s=15)


def test_server_flag_is_visible_to_others() -> None:
    async def main() -> None:
        async with Mesh("srv", "127.0.0.1:0", server=True, profile="local") as s:
            async with Mesh("cli", "127.0.0.1:0", join=[s.address], profile="local") as c:
                await eventually(lambda: len(c.members()) == 2)
                by_name = {m.name: m for m in c.members()}
                assert by_name["srv"].server and not by_name["cli"].server

    anyio.run(main)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bind": "127.0.0.1:99999"}, "port must be between"),
        ({"bind": "localhost:7946"}, "must be an IP address"),
        ({"bind": "[::1"}, "expected"),
        ({"join": "127.0.0.1:7946"}, "must be a list"),
        ({"join": ["bad host!:1"]}, "neither an IP address nor a host name"),
        ({"key": "not base64!"}, "keygen"),
        ({"key": "c2hvcnQ="}, "keygen"),
        ({"profile": "wan"}, "profile 'wan' is unknown"),
        ({"meta": {"k": "v" * 600}}, "limit is 512"),
        ({"name": ""}, "name must be"),
    ],
)
def test_bad_arguments_raise_config_error_saying_what_to_fix(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Mesh(**kwargs)  # type: ignore[arg-type]


def test_bind_failure_is_an_os_error() -> None:
    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
            held.bind(("127.0.0.1", 0))
            port = held.getsockname()[1]
            with pytest.raises(OSError):
                async with Mesh("x", f"127.0.0.1:{port}"):
                    pass

    anyio.run(main)


def test_sync_default_mesh_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    async def seed_and_check() -> None:
        async with Mesh("seed", "127.0.0.1:0", key=KEY1, cluster="sync", profile="local") as seed:
            monkeypatch.setenv("MESHLITE_NAME", "sync-peer")
            monkeypatch.setenv("MESHLITE_BIND", "127.0.0.1:0")
            monkeypatch.setenv("MESHLITE_JOIN", f" {seed.address} ,")
            monkeypatch.setenv("MESHLITE_KEY", KEY1)
            monkeypatch.setenv("MESHLITE_CLUSTER", "sync")
            mesh = await anyio.to_thread.run_sync(lambda: meshlite.start(profile="local"))
            try:
                assert meshlite.default_mesh() is mesh
                both = {"seed", "sync-peer"}
                await eventually(lambda: {m.name for m in seed.members()} == both)
                # Joining runs in the background: the seed can learn of the new peer (its
                # join message) a moment before the peer learns of the seed (the reply).
                await eventually_in_thread(lambda: {m.name for m in meshlite.members()} == both)
                with pytest.raises(RuntimeError, match="already running"):
                    meshlite.start()
            finally:
                await anyio.to_thread.run_sync(meshlite.stop)
            await eventually(lambda: view(seed).get("sync-peer") == "left")
            with pytest.raises(meshlite.NotRunningError):
                meshlite.members()

    anyio.run(seed_and_check)
