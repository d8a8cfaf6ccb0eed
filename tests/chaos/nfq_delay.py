"""netem's ``delay`` and ``reorder`` in user space, through NFQUEUE: for kernels without
``sch_netem``.  Run inside a host's namespace; it owns its iptables rule.

    ip netns exec NS python tests/chaos/nfq_delay.py delay 100ms 40ms
    ip netns exec NS python tests/chaos/nfq_delay.py delay 20ms reorder 25% 50%
    ip netns exec NS python tests/chaos/nfq_delay.py --check     # can it run here?

Theory of operation
-------------------
The argument is the netem spec ``faults.NETEM_SPEC`` gives ``tc`` (a subset:
``delay TIME [JITTER]`` and ``reorder PERCENT [CORRELATION]``), so both mechanisms run
one spec.  The injector binds NFQUEUE queue ``--queue`` (metadata only, never payload:
nothing is mangled), then inserts ``iptables -I OUTPUT -o eth0 -j NFQUEUE --queue-num N
--queue-bypass`` — the host's IPv4 egress on ``eth0``, which is what netem on ``eth0``'s
root qdisc delays — and prints a ``ready`` JSON line.  Each queued packet is then
accepted at its own time, verdicts in any order (NFQUEUE allows that):

- ``delay D J``: after a delay drawn uniformly from ``[D - J, D + J)``, as netem does
  with no distribution table; packets leave in order of their release times, so jitter
  alone reorders some of them, as netem's time-sorted queue does;
- ``delay D reorder P C``: each packet, with probability P (its draw correlated with the
  previous draw by C with netem's ``get_crandom`` formula, ``u' = u (1 - C) + last C``,
  which narrows the draws' spread: for ``25% 50%`` about 7 % of the packets, in netem
  and here alike), is accepted at once; every other one after exactly D — so the
  immediate ones overtake those queued within the last D.  That is netem's ``gap 1``
  behaviour, which ``tc`` sets when ``reorder`` has no ``gap``.

What differs from netem: only IPv4 packets leaving through ``OUTPUT`` are delayed (netem
delays every frame on ``eth0``, ARP and IPv6 too; the bed speaks IPv4 only); user-space
timing adds scheduling noise (well under a millisecond idle, a few milliseconds on a
loaded machine); and where netem tail-drops past its 1000-packet ``limit``, the injector
never drops: past :data:`MAX_HELD` held packets it lets new ones through undelayed (and
counts them), and the kernel queue is fail-open (a full queue or socket buffer accepts
the packet instead of dropping it).

Bounded: at most :data:`MAX_HELD` packets held, ``--max-lifetime-s`` of life.  It stops
on end of stdin (the parent went away or healed the fault), SIGTERM/SIGINT or that
lifetime: it deletes its rule first, keeps releasing until no packet has arrived for
:data:`QUIET_S` and every held one is out (by its release time, so nothing is dropped),
closes the queue and prints a ``stopped`` JSON line with its counts.  If it is killed
instead, ``--queue-bypass`` lets traffic through the orphaned rule unqueued; only the
packets held at that moment are lost (the kernel drops a dead listener's queue), as
netem drops what it holds when its qdisc is deleted.

Needs root (CAP_NET_ADMIN), iptables with the NFQUEUE target and the ``fnfqueue``
package (which speaks the nfnetlink queue protocol itself; no C library).
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

QUEUE_NUM = 4711
IFACE = "eth0"
IPTABLES = ["iptables", "-w", "10"]
# Packets held at once.  netem's default limit is the same; past it netem drops, this
# injector lets packets through undelayed instead.
MAX_HELD = 1000
# The kernel's queue length (packets handed to us and not yet verdicted); fail-open past it.
KERNEL_QUEUE_MAXLEN = 2 * MAX_HELD
# Per-message receive buffer: metadata only (COPY_META), a few hundred bytes.
MESSAGE_BYTES = 4096
DEFAULT_LIFETIME_S = 600.0
QUIET_S = 0.2  # stopping: no packet for this long after the rule is gone
STOP_BOUND_S = 5.0  # stopping takes at most this, plus the longest delay
CHECK_CHAIN = "MLNFQCHECK"


@attrs.frozen
class Spec:
    """A netem ``delay``/``reorder`` spec: seconds, and fractions in [0, 1]."""

    delay_s: float
    jitter_s: float = 0.0
    reorder: float = 0.0
    reorder_corr: float = 0.0

    @property
    def max_delay_s(self) -> float:
        return self.delay_s + self.jitter_s


def _seconds(text: str) -> float:
    for suffix, scale in (("us", 1e-6), ("ms", 1e-3), ("s", 1.0)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * scale
    return float(text) * 1e-6  # tc's bare number: microseconds


def _fraction(text: str) -> float:
    value = float(text.removesuffix("%")) / 100.0
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{text!r} is not a percentage")
    return value


def parse_spec(words: Sequence[str]) -> Spec:
    """``delay TIME [JITTER] [reorder PERCENT [CORRELATION]]``, as ``tc ... netem``
    takes it; raises ``ValueError`` on anything else."""
    words = list(words)
    if len(words) < 2 or words[0] != "delay":
        raise ValueError(f"expected 'delay TIME ...', got {' '.join(words)!r}")
    delay, jitter, reorder, corr = _seconds(words[1]), 0.0, 0.0, 0.0
    rest = words[2:]
    if rest and rest[0][:1].isdigit():
        jitter = _seconds(rest.pop(0))
    if rest and rest[0] == "reorder":
        if len(rest) < 2:
            raise ValueError("reorder needs a percentage")
        reorder = _fraction(rest[1])
        rest = rest[2:]
        if rest:
            corr = _fraction(rest.pop(0))
    if rest:
        raise ValueError(f"unsupported netem words: {' '.join(rest)!r}")
    if jitter > delay:
        raise ValueError("jitter larger than the delay")
    return Spec(delay, jitter, reorder, corr)


class Schedule:
    """When each packet goes: netem's draws (see the module doc), from a seeded RNG."""

    def __init__(self, spec: Spec, rng: random.Random) -> None:
        self.spec, self.rng = spec, rng
        self._last = rng.random()  # netem's init_crandom: a random first "previous" draw

    def _crandom(self) -> float:
        u = self.rng.random()
        rho = self.spec.reorder_corr
        if rho == 0.0:
            return u
        self._last = u * (1.0 - rho) + self._last * rho
        return self._last

    def delay_s(self) -> float:
        """The delay for the next packet: 0.0 for one sent at once (reordered)."""
        spec = self.spec
        if spec.reorder > 0.0 and self._crandom() < spec.reorder:
            return 0.0
        if spec.jitter_s == 0.0:
            return spec.delay_s
        return spec.delay_s - spec.jitter_s + 2.0 * spec.jitter_s * self.rng.random()


def rule(action: str, queue: int, iface: str = IFACE) -> list[str]:
    """The iptables command that inserts (``-I``), deletes (``-D``) or checks (``-C``)
    the injector's rule."""
    return [
        *IPTABLES,
        action,
        "OUTPUT",
        "-o",
        iface,
        "-j",
        "NFQUEUE",
        "--queue-num",
        str(queue),
        "--queue-bypass",
    ]


def _iptables(args: Sequence[str]) -> None:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class Injector:
    """The queue, the held packets and the threads that take and release them."""

    def __init__(self, spec: Spec, queue: int, iface: str, seed: int | None) -> None:
        import fnfqueue  # type: ignore[import-untyped]  # here: parse_spec works without it

        self.fnfqueue = fnfqueue
        self.spec, self.queue, self.iface = spec, queue, iface
        self.schedule = Schedule(spec, random.Random(seed))
        self.conn = fnfqueue.Connection(packet_size=MESSAGE_BYTES)
        self._held: list[tuple[float, int, Any]] = []  # (release at, arrival #, packet)
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._verdicts = threading.Lock()
        self._draining = False
        self.last_arrival = time.monotonic()
        self.counts = {"packets": 0, "delayed": 0, "at_once": 0, "over_bound": 0}
        self.counts |= {"overflows": 0, "errors": 0}
        self.failed = threading.Event()  # the reader died: stop
        q = self.conn.bind(queue)
        q.set_mode(0, fnfqueue.COPY_META)
        q.set_maxlen(KERNEL_QUEUE_MAXLEN)
        q.fail_open = True

    def _accept(self, packet: Any) -> None:
        with self._verdicts:
            try:
                packet.accept()
            except OSError:
                self.counts["errors"] += 1

    def read(self) -> None:
        """Take every queued packet: accept it now or hold it until its time."""
        try:
            while not self._read_until_closed():
                # The socket buffer overflowed; fail-open accepted what did not fit.
                self.counts["overflows"] += 1
                self.conn.reset()
        except Exception as exc:
            emit("error", error=f"{type(exc).__name__}: {exc}")
            self.failed.set()

    def _read_until_closed(self) -> bool:
        """True once the connection is closed, False on a socket buffer overflow."""
        try:
            for packet in self.conn:
                self._take(packet)
        except self.fnfqueue.BufferOverflowException:
            return False
        return True

    def _take(self, packet: Any) -> None:
        now = time.monotonic()
        self.last_arrival = now
        self.counts["packets"] += 1
        delay = self.schedule.delay_s()
        if delay <= 0.0:
            self.counts["at_once"] += 1
            self._accept(packet)
            return
        with self._cond:
            if len(self._held) >= MAX_HELD:
                over = True
            else:
                over = False
                heapq.heappush(self._held, (now + delay, next(self._seq), packet))
                self._cond.notify()
        if over:
            self.counts["over_bound"] += 1
            self._accept(packet)
        else:
            self.counts["delayed"] += 1

    def release(self) -> None:
        """Accept each held packet at its time; return once draining and empty."""
        with self._cond:
            while True:
                now = time.monotonic()
                while self._held and self._held[0][0] <= now:
                    self._accept(heapq.heappop(self._held)[2])
                if self._draining and not self._held:
                    return
                wait = self._held[0][0] - now if self._held else 0.5
                self._cond.wait(wait)

    def drain(self) -> None:
        """Let the releaser finish once everything held is out."""
        with self._cond:
            self._draining = True
            self._cond.notify()

    def held(self) -> int:
        with self._cond:
            return len(self._held)

    def flush(self) -> None:
        """Accept whatever is still held (the stop bound ran out)."""
        with self._cond:
            while self._held:
                self._accept(heapq.heappop(self._held)[2])

    def close(self) -> None:
        self.conn.close()


def check(queue: int) -> int:
    """Can the injector run here?  Binds the queue and adds the NFQUEUE rule to a chain
    nothing jumps to (so no packet is ever queued), then removes both."""
    try:
        import fnfqueue
    except ImportError as exc:
        print(f"the fnfqueue package is not installed: {exc}", file=sys.stderr)
        return 1
    try:
        conn = fnfqueue.Connection(packet_size=MESSAGE_BYTES)
        try:
            conn.bind(queue).set_mode(0, fnfqueue.COPY_META)
        finally:
            conn.close()
        _iptables([*IPTABLES, "-N", CHECK_CHAIN])
        try:
            _iptables([*IPTABLES, "-A", CHECK_CHAIN, "-j", "NFQUEUE", "--queue-num", str(queue)])
        finally:
            with contextlib.suppress(RuntimeError):
                _iptables([*IPTABLES, "-F", CHECK_CHAIN])
            with contextlib.suppress(RuntimeError):
                _iptables([*IPTABLES, "-X", CHECK_CHAIN])
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"NFQUEUE does not work here: {exc}", file=sys.stderr)
        return 1
    emit("ok", queue=queue)
    return 0


def run(spec: Spec, queue: int, iface: str, lifetime_s: float, seed: int | None) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    inj = Injector(spec, queue, iface, seed)

    def stop_on(wait: Callable[[], object]) -> None:
        wait()
        stop.set()

    threading.Thread(target=stop_on, args=(sys.stdin.read,), daemon=True).start()
    threading.Thread(target=stop_on, args=(inj.failed.wait,), daemon=True).start()
    reader = threading.Thread(target=inj.read, daemon=True)
    releaser = threading.Thread(target=inj.release, daemon=True)
    reader.start()
    releaser.start()
    rule_in = False
    try:
        _iptables(rule("-I", queue, iface))
        rule_in = True
        emit("ready", queue=queue, iface=iface, spec=attrs.asdict(spec), pid=os.getpid())
        stop.wait(lifetime_s)
    finally:
        if rule_in:
            try:
                _iptables(rule("-D", queue, iface))
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                emit("error", error=str(exc))
        # Stragglers queued before the rule went, then everything held, by its time.
        deadline = time.monotonic() + STOP_BOUND_S + spec.max_delay_s
        while time.monotonic() - inj.last_arrival < QUIET_S and time.monotonic() < deadline:
            time.sleep(QUIET_S / 4)
        inj.drain()
        releaser.join(max(0.0, deadline - time.monotonic()))
        inj.flush()
        inj.close()
        reader.join(2.0)
        emit("stopped", **inj.counts, held=inj.held(), rule_removed=rule_in)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", nargs="*", help="netem words: delay TIME [JITTER] [reorder P [C]]")
    ap.add_argument("--queue", type=int, default=QUEUE_NUM)
    ap.add_argument("--iface", default=IFACE)
    ap.add_argument("--max-lifetime-s", type=float, default=DEFAULT_LIFETIME_S)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--check", action="store_true", help="exit 0 if the injector can run")
    args = ap.parse_args(argv)
    if args.check:
        return check(args.queue)
    try:
        spec = parse_spec(args.spec)
    except ValueError as exc:
        ap.error(str(exc))
    return run(spec, args.queue, args.iface, args.max_lifetime_s, args.seed)


if __name__ == "__main__":
    sys.exit(main())
