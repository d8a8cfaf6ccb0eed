"""Key rotation on a running mesh: ``list``, ``install``, ``use``, ``remove``.

Theory of operation
-------------------
Consul's ``consul keyring`` sends each operation to every member and reports how many
acknowledged.  We do the same over the sealed TCP stream: the initiator applies the
operation locally, then sends a ``KeyringRequest`` to every member it sees alive, in
parallel, each bounded by the TCP timeout, and counts ``KeyringResponse`` acks.

The safe rotation order is the operator's (as in Consul): ``install`` the new key
everywhere (all members now *decrypt* with it), ``use`` it (members now *encrypt* with
it; anyone who missed the ``use`` still decrypts), then ``remove`` the old key.  Because
every installed key is tried on receive, no member is lost at any step; the result's
counts tell the operator whether a step reached everyone before taking the next.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
import attrs

from meshlite._core.wire import (
    Addr,
    DecodeError,
    KeyringRequest,
    KeyringResponse,
    decode_message,
    encode_message,
)
from meshlite._crypto import Keyring, parse_key
from meshlite.errors import ConfigError, KeyringError

if TYPE_CHECKING:
    from meshlite._core.config import SwimConfig
    from meshlite._driver import Driver

__all__ = ["OPS", "KeyringMethods", "KeyringResult", "apply_request", "fan_out", "no_keyring"]

OPS = ("list", "install", "use", "remove")


@attrs.frozen
class KeyringResult:
    """What a keyring operation achieved across the mesh (like ``consul keyring``'s output)."""

    op: str
    members: int  # members asked, this one included
    acks: int  # members that applied the operation
    errors: dict[str, str] = attrs.field(factory=dict)  # member name -> what went wrong
    keys: dict[str, int] = attrs.field(factory=dict)  # base64 key -> members with it installed
    primary_keys: dict[str, int] = attrs.field(factory=dict)  # base64 key -> members using it

    @property
    def complete(self) -> bool:
        """Every member asked acknowledged."""
        return self.acks == self.members


def apply_local(keyring: Keyring, op: str, key: bytes | None) -> list[str]:
    """Apply one operation to this peer's keyring; return its keys, primary first."""
    if op not in OPS:
        raise KeyringError(f"unknown keyring operation {op!r}; expected one of {', '.join(OPS)}")
    if op != "list":
        if key is None:
            raise KeyringError(f"keyring {op} needs a key")
        getattr(keyring, op)(key)
    return keyring.list()


def apply_request(keyring: Keyring, plaintext: bytes) -> bytes:
    """Serve a remote ``KeyringRequest``; always answers (errors go in the response)."""
    try:
        msg = decode_message(plaintext)
    except DecodeError as exc:
        return encode_message(KeyringResponse(False, f"malformed request: {exc}", []))
    if not isinstance(msg, KeyringRequest):
        return encode_message(KeyringResponse(False, "not a keyring request", []))
    try:
        keys = apply_local(keyring, msg.op, msg.key)
    except (KeyringError, ConfigError) as exc:
        return encode_message(KeyringResponse(False, str(exc), keyring.list()))
    return encode_message(KeyringResponse(True, "", keys))


Requester = Callable[[tuple[str, int], bytes], Awaitable[bytes | None]]


async def fan_out(
    keyring: Keyring,
    op: str,
    key: str | bytes | None,
    self_name: str,
    peers: list[tuple[str, tuple[str, int]]],
    request: Requester,
) -> KeyringResult:
    """Apply ``op`` here, then on every peer ``(name, addr)``; collect the outcome."""
    raw = None if key is None else parse_key(key)
    responses: dict[str, KeyringResponse | str] = {}
    # Local misuse (e.g. removing the primary key) raises here, before anything is sent.
    responses[self_name] = KeyringResponse(True, "", apply_local(keyring, op, raw))
    payload = encode_message(KeyringRequest(op, raw))

    async def ask(name: str, addr: tuple[str, int]) -> None:
        reply = await request(addr, payload)
        if reply is None:
            responses[name] = "no response (unreachable or timed out)"
            return
        try:
            msg = decode_message(reply)
        except DecodeError:
            responses[name] = "malformed response"
            return
        responses[name] = msg if isinstance(msg, KeyringResponse) else "unexpected response"

    async with anyio.create_task_group() as tg:
        for name, addr in peers:
            tg.start_soon(ask, name, addr)
    return _summarise(op, responses)


def _summarise(op: str, responses: dict[str, KeyringResponse | str]) -> KeyringResult:
    errors: dict[str, str] = {}
    keys: Counter[str] = Counter()
    primary: Counter[str] = Counter()
    acks = 0
    for name, resp in responses.items():
        if isinstance(resp, str):
            errors[name] = resp
            continue
        keys.update(resp.keys)
        if resp.keys:
            primary[resp.keys[0]] += 1
        if resp.ok:
            acks += 1
        else:
            errors[name] = resp.error
    return KeyringResult(op, len(responses), acks, errors, dict(keys), dict(primary))


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def no_keyring(_plaintext: bytes) -> bytes:
    """The answer of a peer without encryption to a keyring request."""
    return encode_message(KeyringResponse(False, "this peer runs without encryption", []))


class KeyringMethods:
    """Mixed into ``Mesh``: rotation on the running mesh (see the module docstring)."""

    name: str
    config: SwimConfig
    _keyring: Keyring | None

    def _running(self) -> Driver:
        raise NotImplementedError  # Mesh's

    async def keyring_list(self) -> KeyringResult:
        return await self._keyring_op("list", None)

    async def keyring_install(self, key: str | bytes) -> KeyringResult:
        return await self._keyring_op("install", key)

    async def keyring_use(self, key: str | bytes) -> KeyringResult:
        return await self._keyring_op("use", key)

    async def keyring_remove(self, key: str | bytes) -> KeyringResult:
        return await self._keyring_op("remove", key)

    async def _keyring_op(self, op: str, key: str | bytes | None) -> KeyringResult:
        driver = self._running()
        if self._keyring is None:
            raise ConfigError("this mesh runs without encryption: start it with key=... to rotate")
        peers = [(m.name, (m.address, m.port)) for m in driver.alive_peers()]
        timeout_s = self.config.tcp_timeout_s

        async def request(addr: Addr, payload: bytes) -> bytes | None:
            return await driver.request(addr, payload, timeout_s)

        return await fan_out(self._keyring, op, key, self.name, peers, request)
