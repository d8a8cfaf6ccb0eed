"""Fault injectors for the chaos bed, each with its heal, and the windows they leave behind.

Theory of operation
-------------------
Every fault acts inside the namespaces, never in the test's own: packet filters are
``iptables`` rules in a host's ``filter`` table (each namespace has its own), traffic
shaping is ``tc qdisc ... netem`` on a host's ``eth0`` — or, where the kernel has no
``sch_netem``, the same netem spec run in user space by ``nfq_delay.py`` through an
``NFQUEUE`` rule on the host's ``eth0`` egress — and process faults are signals to an
agent's pid.  Partitions drop on ``INPUT`` by source address (``-s 10.200.0.K``),
so the loopback path between a worker and its own agent is never touched.

==================  =====================================================  ==============
kind                injected as                                            healed by
==================  =====================================================  ==============
partition_one       one host drops everything from the others, and they    ``iptables -F``
                    from it
partition_minority  one server and one client cut from the other hosts
partition_majority  the leader and every client (3 of 5 hosts) cut from the
                    two other servers: the side with most hosts has no
                    Raft quorum, and its leader is deposed
asymmetric          host A drops B's packets; B still receives A's
loss                one host drops P of its eth0 packets, in and out
                    (``-m statistic --mode random --probability P``)
delay, reorder      ``netem delay`` / ``netem delay ... reorder`` on one   ``tc qdisc del``
                    host's eth0; where the kernel has no ``sch_netem``,    / the injector
                    ``nfq_delay.py`` (NFQUEUE, user space) runs the same   stops and
                    spec on its eth0 egress (:func:`delay_mechanism`;      removes its
                    skipped only where neither works)                      rule
pause               SIGSTOP to one host's agent and its worker (a frozen   SIGCONT
                    VM: a lock holder there still believes it holds)
crash               SIGKILL of one host's agent                            a restart, same
                                                                           data dir
==================  =====================================================  ==============

Each injected fault becomes a :class:`FaultWindow`: when it started (before the first
command), when it ended (after the heal's last command; the commands of one step run
on all hosts at once), which ordered pairs of hosts
could not hear each other (``cuts``: ``(a, b)`` = a does not receive b) and which hosts
were impaired for everyone (``impaired``: paused, crashed, lossy, delayed).  The
checkers excuse what a window explains and nothing else.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs
from netns import Host, LineProcess

from .bed import Bed

IPTABLES = ["iptables", "-w", "10"]  # -w: the xtables lock (/run) is shared by namespaces
PARTITIONS = ("partition_one", "partition_minority", "partition_majority", "asymmetric")
NETEM_KINDS = ("delay", "reorder")
KINDS = (*PARTITIONS, "loss", *NETEM_KINDS, "pause", "crash")
NETEM_SPEC = {
    # ~100 ms each way, jittered (jitter alone reorders some packets), and a reordering
    # link: a quarter of the packets jump the 20 ms queue.  Both stay well inside the
    # lan profile's 500 ms probe timeout, so neither should cost anyone a death.
    "delay": ["delay", "100ms", "40ms"],
    "reorder": ["delay", "20ms", "reorder", "25%", "50%"],
}
# How delay and reorder are injected: the kernel's netem, or nfq_delay.py in user space.
DELAY_MECHANISMS = ("netem", "nfqueue")
NFQ_DELAY = Path(__file__).resolve().with_name("nfq_delay.py")
NFQ_START_TIMEOUT_S = 15.0  # a Python start on a loaded 2-core machine, then iptables
NFQ_STOP_TIMEOUT_S = 15.0  # its stop: the rule, 0.2 s of quiet, what it holds (< 0.2 s)
# An injector's own bound, for one orphaned by a killed run (a heal stops it long before;
# it also stops when its stdin closes, i.e. when the test process goes).
NFQ_LIFETIME_S = 3600.0


@attrs.frozen
class FaultWindow:
    """One injected fault, as the checkers see it (see the module docstring)."""

    kind: str
    start: float
    end: float
    cuts: frozenset[tuple[str, str]] = frozenset()
    impaired: frozenset[str] = frozenset()
    detail: str = ""

    def touched(self) -> frozenset[str]:
        """Every host the fault acted on."""
        return self.impaired | {a for a, _ in self.cuts} | {b for _, b in self.cuts}

    def cut(self, a: str, b: str) -> bool:
        """True if ``a`` and ``b`` could not exchange packets both ways."""
        return (a, b) in self.cuts or (b, a) in self.cuts


class Fault(Protocol):
    kind: str

    def inject(self) -> None: ...

    def heal(self) -> None: ...

    def window(self, start: float, end: float) -> FaultWindow: ...


class ChaosUnavailableError(RuntimeError):
    """The bed cannot inject faults here (no iptables); the message says why."""


def iptables_unavailable(host: Host) -> str | None:
    """Why iptables cannot filter inside ``host``'s namespace, or None if it can."""
    if shutil.which("iptables") is None:
        return "the chaos bed needs iptables (apt-get install iptables)"
    try:
        host.run([*IPTABLES, "-S"])
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"iptables does not work inside a namespace here: {exc}"
    return None


def netem_unavailable(host: Host) -> str | None:
    """Why ``tc ... netem`` cannot run on ``host``'s eth0 (e.g. no ``sch_netem`` in the
    kernel: "Specified qdisc kind is unknown"), or None if it can."""
    if shutil.which("tc") is None:
        return "tc (iproute2) is not installed"
    try:
        host.run(["tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "1ms"])
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"the kernel cannot run netem here: {exc}"
    host.run(["tc", "qdisc", "del", "dev", "eth0", "root"])
    return None


def nfqueue_unavailable(host: Host) -> str | None:
    """Why ``nfq_delay.py`` cannot run in ``host``'s namespace (no ``fnfqueue`` package,
    no NFQUEUE support in the kernel or iptables), or None if it can."""
    if importlib.util.find_spec("fnfqueue") is None:
        return "the fnfqueue package is not installed (pip install fnfqueue)"
    if shutil.which("iptables") is None:
        return "iptables is not installed"
    try:
        host.run([sys.executable, str(NFQ_DELAY), "--check"], timeout_s=NFQ_START_TIMEOUT_S)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"the NFQUEUE injector cannot run here: {exc}"
    return None


def delay_mechanism(host: Host, want: str = "auto") -> tuple[str | None, dict[str, str]]:
    """How delay and reorder faults can run in ``host``'s namespace: ``netem`` where the
    kernel has it, else ``nfqueue`` (``want``: ``auto``, or one of
    :data:`DELAY_MECHANISMS` to use that one only); and, for each mechanism tried that
    cannot run, why.  None: no mechanism works (the reasons say why for each)."""
    if want not in ("auto", *DELAY_MECHANISMS):
        raise ValueError(f"unknown delay mechanism {want!r}; known: auto, {DELAY_MECHANISMS}")
    checks = {"netem": netem_unavailable, "nfqueue": nfqueue_unavailable}
    reasons: dict[str, str] = {}
    for name in DELAY_MECHANISMS if want == "auto" else (want,):
        reason = checks[name](host)
        if reason is None:
            return name, reasons
        reasons[name] = reason
    return None, reasons


def run_all(commands: Sequence[tuple[Host, Sequence[str]]], timeout_s: float = 20.0) -> None:
    """Run every ``(host, args)`` at once and wait for all, so that a partition starts
    and heals everywhere within a few milliseconds rather than host by host; raises
    ``RuntimeError`` naming the first that failed."""
    procs = [
        (args, host.popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        for host, args in commands
    ]
    failed = []
    for args, proc in procs:
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if proc.returncode != 0:
            failed.append(f"{' '.join(args)} failed ({proc.returncode}): {err.strip()}")
    if failed:
        raise RuntimeError("; ".join(failed))


def _flush(hosts: Sequence[Host]) -> None:
    run_all([(host, [*IPTABLES, "-F"]) for host in hosts])


class Partition:
    """Hosts in different ``groups`` drop each other's packets; ``one_way``: only
    ``groups[0][0]`` drops ``groups[1][0]``'s (an asymmetric partition)."""

    def __init__(self, bed: Bed, kind: str, groups: Sequence[Sequence[int]]) -> None:
        self.bed, self.kind = bed, kind
        self.groups = [list(g) for g in groups]
        self.touched = sorted({i for g in self.groups for i in g})

    def _drops(self) -> list[tuple[int, list[int]]]:
        """(host, the hosts whose packets it drops)."""
        if self.kind == "asymmetric":
            return [(self.groups[0][0], [self.groups[1][0]])]
        return [
            (i, [j for other in self.groups if other is not group for j in other])
            for group in self.groups
            for i in group
        ]

    def inject(self) -> None:
        rules = []
        for i, sources in self._drops():
            addresses = ",".join(self.bed.hosts[j].address for j in sources)
            rules.append(
                (self.bed.hosts[i], [*IPTABLES, "-A", "INPUT", "-s", addresses, "-j", "DROP"])
            )
        run_all(rules)

    def heal(self) -> None:
        _flush([self.bed.hosts[i] for i in self.touched])

    def window(self, start: float, end: float) -> FaultWindow:
        names = self.bed.names
        cuts = frozenset((names[i], names[j]) for i, sources in self._drops() for j in sources)
        detail = " | ".join(",".join(names[i] for i in g) for g in self.groups)
        return FaultWindow(self.kind, start, end, cuts=cuts, detail=detail)


class Loss:
    """``host`` drops ``probability`` of its eth0 packets in each direction."""

    kind = "loss"

    def __init__(self, bed: Bed, host: int, probability: float) -> None:
        self.bed, self.host, self.probability = bed, host, probability

    def inject(self) -> None:
        p = f"{self.probability:.3f}"
        stat = ["-m", "statistic", "--mode", "random", "--probability", p, "-j", "DROP"]
        h = self.bed.hosts[self.host]
        h.run([*IPTABLES, "-A", "INPUT", "-i", "eth0", *stat])
        h.run([*IPTABLES, "-A", "OUTPUT", "-o", "eth0", *stat])

    def heal(self) -> None:
        _flush([self.bed.hosts[self.host]])

    def window(self, start: float, end: float) -> FaultWindow:
        name = self.bed.names[self.host]
        detail = f"{name} p={self.probability:g}"
        return FaultWindow(self.kind, start, end, impaired=frozenset({name}), detail=detail)


class Netem:
    """``tc qdisc add dev eth0 root netem <spec>`` on ``host`` (``delay`` or ``reorder``)."""

    mechanism = "netem"

    def __init__(self, bed: Bed, kind: str, host: int) -> None:
        self.bed, self.kind, self.host = bed, kind, host

    def inject(self) -> None:
        spec = NETEM_SPEC[self.kind]
        self.bed.hosts[self.host].run(["tc", "qdisc", "add", "dev", "eth0", "root", "netem", *spec])

    def heal(self) -> None:
        self.bed.hosts[self.host].run(["tc", "qdisc", "del", "dev", "eth0", "root"])

    def window(self, start: float, end: float) -> FaultWindow:
        name = self.bed.names[self.host]
        detail = f"{name} netem {' '.join(NETEM_SPEC[self.kind])}"
        return FaultWindow(self.kind, start, end, impaired=frozenset({name}), detail=detail)


class NfqDelay:
    """The netem spec of ``kind`` run by ``nfq_delay.py`` on ``host``'s eth0 egress, for
    kernels without ``sch_netem``.  The injector owns its iptables rule: inject waits
    until it reports ``ready`` (rule in place); heal closes its stdin, and it removes the
    rule and releases every packet it holds before it exits.  Heal then makes sure: a
    hung injector is killed, and a rule it left behind is deleted."""

    mechanism = "nfqueue"

    def __init__(self, bed: Bed, kind: str, host: int) -> None:
        self.bed, self.kind, self.host = bed, kind, host
        self.proc: LineProcess | None = None
        self.counts: dict[str, Any] = {}

    def inject(self) -> None:
        h = self.bed.hosts[self.host]
        args = [sys.executable, str(NFQ_DELAY), *NETEM_SPEC[self.kind]]
        args += ["--max-lifetime-s", str(NFQ_LIFETIME_S)]
        args += ["--seed", str(self.bed.rng.randrange(1 << 30))]
        self.proc = LineProcess(h, args)
        if self.proc.wait_for(lambda line: '"ready"' in line, NFQ_START_TIMEOUT_S) is None:
            raise RuntimeError(
                f"the NFQUEUE injector did not start on {self.bed.names[self.host]}:\n"
                + self.proc.output()[-2000:]
            )

    def heal(self) -> None:
        if self.proc is None:
            return
        code = self.proc.stop(NFQ_STOP_TIMEOUT_S)
        if code is None:
            self.proc.kill()
        for line in self.proc.lines:
            if line.startswith("{") and '"stopped"' in line:
                with contextlib.suppress(ValueError):
                    self.counts = json.loads(line)
        left = self._remove_rules()
        if code != 0 or left:
            raise RuntimeError(
                f"the NFQUEUE injector on {self.bed.names[self.host]} "
                + ("hung" if code is None else f"exited {code}")
                + (f", leaving {left} rule(s) (removed)" if left else "")
                + ":\n"
                + self.proc.output()[-2000:]
            )

    def _remove_rules(self) -> int:
        """Delete whatever NFQUEUE rule an injector left in ``OUTPUT``; how many."""
        h = self.bed.hosts[self.host]
        rules = [r for r in h.run([*IPTABLES, "-S", "OUTPUT"]).splitlines() if "NFQUEUE" in r]
        for r in rules:
            h.run([*IPTABLES, "-D", *r.split()[1:]])
        return len(rules)

    def window(self, start: float, end: float) -> FaultWindow:
        name = self.bed.names[self.host]
        detail = f"{name} nfqueue (user space) {' '.join(NETEM_SPEC[self.kind])}"
        if self.counts:
            c = self.counts
            detail += f": {c.get('packets')} packets, {c.get('at_once')} sent at once"
        return FaultWindow(self.kind, start, end, impaired=frozenset({name}), detail=detail)


def delay_fault(bed: Bed, kind: str, host: int, mechanism: str) -> Netem | NfqDelay:
    """A ``delay`` or ``reorder`` fault on ``host`` by ``mechanism`` (see
    :func:`delay_mechanism`)."""
    if kind not in NETEM_KINDS:
        raise ValueError(f"{kind!r} is not one of {NETEM_KINDS}")
    if mechanism == "netem":
        return Netem(bed, kind, host)
    if mechanism == "nfqueue":
        return NfqDelay(bed, kind, host)
    raise ValueError(f"unknown delay mechanism {mechanism!r}; known: {DELAY_MECHANISMS}")


class Pause:
    """SIGSTOP ``host``'s agent and worker; the heal is SIGCONT."""

    kind = "pause"

    def __init__(self, bed: Bed, host: int) -> None:
        self.bed, self.host = bed, host

    def inject(self) -> None:
        agent = self.bed.agents[self.host]
        agent.faulted = True
        agent.signal(signal.SIGSTOP)
        self.bed.workers[self.host].signal(signal.SIGSTOP)

    def heal(self) -> None:
        agent = self.bed.agents[self.host]
        self.bed.workers[self.host].signal(signal.SIGCONT)
        agent.signal(signal.SIGCONT)
        agent.faulted = False

    def window(self, start: float, end: float) -> FaultWindow:
        name = self.bed.names[self.host]
        return FaultWindow(self.kind, start, end, impaired=frozenset({name}), detail=name)


class Crash:
    """SIGKILL ``host``'s agent; the heal restarts it with the same flags and data dir."""

    kind = "crash"

    def __init__(self, bed: Bed, host: int) -> None:
        self.bed, self.host = bed, host

    def inject(self) -> None:
        agent = self.bed.agents[self.host]
        agent.faulted = True  # down on purpose: not a failure of the bed
        agent.kill()

    def heal(self) -> None:
        agent = self.bed.agents[self.host]
        agent.start()
        agent.faulted = False

    def window(self, start: float, end: float) -> FaultWindow:
        name = self.bed.names[self.host]
        server = "server" if self.host < self.bed.cfg.servers else "client"
        detail = f"{name} ({server})"
        return FaultWindow(self.kind, start, end, impaired=frozenset({name}), detail=detail)


def hold(fault: Fault, duration_s: float) -> FaultWindow:
    """Inject ``fault``, keep it for ``duration_s``, heal it (even on error): its window."""
    start = time.monotonic()
    try:
        fault.inject()
        time.sleep(duration_s)
    finally:
        fault.heal()
    return fault.window(start, time.monotonic())
