"""Simulated KV clients: what they ask, and the history of what they were told.

Theory of operation
-------------------
Jepsen's client model (Kingsbury; Knossos's ``:invoke`` / ``:ok`` / ``:fail`` / ``:info``):
each client is one sequential process with at most one operation in flight, on a few
keys so that operations conflict often.  Every operation is recorded when the client
sends it (*invocation*) and when an answer reaches it (*completion*); an answer that
says the operation surely did not happen (a server that is not the leader, or down, or
whose proposal was replaced by another leader's entry) removes it; no answer before the
client's timeout leaves it *indeterminate* — the checker may then linearize it anywhere
after its invocation, or never (``linearizability.py``).

Each key is a register in the checker's model (``RegisterModel``).  Values are unique
(``c<client>.<n>``), so a value names the write that made it, and Consul's CAS maps
onto the model exactly: a client that saw value ``v`` at ``ModifyIndex`` ``m`` (from a
read or from its own acknowledged write) and puts with ``cas=m`` is ``cas(expected=v)``
— only the write of ``v`` ever had index ``m``, and nothing here changes an index
without changing the value (no locks, no sessions).  ``cas=0`` (create only) is
``cas(expected=None)`` and a delete writes ``None``.  Clients sometimes CAS with an older
observation than their latest, so CAS fails as well as succeeds.
"""

from __future__ import annotations

import random

import attrs

from meshlite._core.kv import TxnOp, delete_op, put_op
from meshlite.testing.linearizability import History

__all__ = ["ClientOp", "KVWorkload", "Reply"]

# Operation mix: reads are what catch stale state; CAS is what catches lost or reordered
# writes even without a read in between; deletes exercise the absent state and cas=0.
_KINDS = ("get", "put", "cas", "delete")
_KIND_WEIGHTS = (4, 3, 3, 1)
# How often a CAS uses an older observation of the key than the client's latest one.
_STALE_CAS = 0.3
# Observations of a key a client remembers (the older ones feed stale CAS).
_REMEMBER = 4


@attrs.frozen
class ClientOp:
    """One operation a client sent; ``expected``/``cas_index`` only for a CAS."""

    op_id: int
    client: int
    kind: str  # get, put, cas, delete
    key: str
    value: str | None = None  # what a put or CAS writes
    expected: str | None = None  # the value a CAS expects (None: the key is absent)
    cas_index: int = 0  # the ModifyIndex at which the client saw ``expected``

    def write(self) -> TxnOp:
        """The single-key write a server proposes for this operation (alone or batched)."""
        if self.kind == "delete":
            return delete_op(self.key)
        assert self.value is not None, self
        cas = self.cas_index if self.kind == "cas" else None
        return put_op(self.key, self.value.encode(), cas=cas)


@attrs.frozen
class Reply:
    """A server's answer: ``done`` (with the result), or surely not done (``refused``)."""

    refused: bool = False
    hint: str | None = None  # a refusal's leader hint
    ok: bool = True  # a CAS's outcome
    value: str | None = None  # a read's value; a write's entry value
    modify_index: int = 0  # that entry's ModifyIndex (0: absent or unknown)


@attrs.define
class _Client:
    target: str | None = None  # the server it believes leads
    op: ClientOp | None = None  # the one operation in flight
    handle: int = 0  # the history's handle for it
    writes: int = 0
    seen: dict[str, list[tuple[str | None, int]]] = attrs.Factory(dict)


@attrs.define
class Tally:
    """How the operations ended (a run that completes nothing checks nothing)."""

    invoked: int = 0
    ok: int = 0
    failed: int = 0
    indeterminate: int = 0
    cas_ok: int = 0
    reads_ok: int = 0


class KVWorkload:
    """``clients`` sequential clients on ``keys`` keys, recording a :class:`History`."""

    def __init__(self, rng: random.Random, clients: int, keys: int) -> None:
        self.rng = rng
        self.keys = [f"k{i}" for i in range(keys)]
        self.clients = [_Client() for _ in range(clients)]
        self.history = History()
        self.tally = Tally()
        self._ops: dict[int, ClientOp] = {}

    def next_op(self, cid: int, now_s: float) -> ClientOp:
        """Client ``cid`` starts its next operation (it must have none in flight)."""
        c, rng = self.clients[cid], self.rng
        assert c.op is None, f"client {cid} already has {c.op}"
        kind = rng.choices(_KINDS, weights=_KIND_WEIGHTS)[0]
        key = rng.choice(self.keys)
        op_id = len(self._ops)
        if kind == "get":
            op = ClientOp(op_id, cid, kind, key)
            c.handle = self.history.invoke("read", key, now_s=now_s, client=cid)
        elif kind == "delete":
            op = ClientOp(op_id, cid, kind, key)
            c.handle = self.history.invoke("write", key, now_s=now_s, value=None, client=cid)
        else:
            c.writes += 1
            value = f"c{cid}.{c.writes}"
            if kind == "put":
                op = ClientOp(op_id, cid, kind, key, value)
                c.handle = self.history.invoke("write", key, now_s=now_s, value=value, client=cid)
            else:
                expected, index = self._observation(c, key)
                op = ClientOp(op_id, cid, kind, key, value, expected, index)
                c.handle = self.history.invoke(
                    "cas", key, now_s=now_s, value=value, expected=expected, client=cid
                )
        c.op = self._ops[op_id] = op
        self.tally.invoked += 1
        return op

    def _observation(self, c: _Client, key: str) -> tuple[str | None, int]:
        seen = c.seen.get(key)
        if not seen:
            return None, 0  # never looked: create-only
        if len(seen) > 1 and self.rng.random() < _STALE_CAS:
            return self.rng.choice(seen[:-1])
        return seen[-1]

    def op(self, op_id: int) -> ClientOp:
        return self._ops[op_id]

    def target(self, cid: int) -> str | None:
        return self.clients[cid].target

    def aim(self, cid: int, server: str) -> None:
        self.clients[cid].target = server

    def reply(self, op_id: int, reply: Reply, now_s: float) -> bool:
        """An answer reached its client; whether the client is now free for another."""
        op = self._ops[op_id]
        c = self.clients[op.client]
        if c.op is not op:
            return False  # it had timed out already: too late, still indeterminate
        c.op = None
        if reply.refused:
            self.history.fail(c.handle)
            self.tally.failed += 1
            c.target = reply.hint
            return True
        self.tally.ok += 1
        if op.kind == "get":
            self.history.complete(c.handle, now_s=now_s, result=reply.value)
            self.tally.reads_ok += 1
        elif op.kind == "cas":
            self.history.complete(c.handle, now_s=now_s, result=reply.ok)
            self.tally.cas_ok += reply.ok
        else:
            self.history.complete(c.handle, now_s=now_s)
        if reply.ok and (reply.modify_index > 0) == (reply.value is not None):
            # a consistent (value, ModifyIndex) pair: something to CAS against later
            seen = c.seen.setdefault(op.key, [])
            seen.append((reply.value, reply.modify_index))
            del seen[:-_REMEMBER]
        return True

    def timeout(self, op_id: int) -> bool:
        """No answer in time: the operation stays indeterminate; the client moves on."""
        op = self._ops[op_id]
        c = self.clients[op.client]
        if c.op is not op:
            return False
        c.op = None
        c.target = None
        self.tally.indeterminate += 1
        return True

    def stop(self) -> None:
        """The run ends: what is still in flight stays indeterminate, for good."""
        for c in self.clients:
            if c.op is not None:
                self.timeout(c.op.op_id)
