"""SWIM + Lifeguard tunables, named as memberlist names them so operators recognise them.

Two profiles: :meth:`SwimConfig.lan` is memberlist's ``DefaultLANConfig`` (the default);
:meth:`SwimConfig.local` is memberlist's ``DefaultLocalConfig`` tightened further for tests
on loopback, where round trips are microseconds.
"""

from __future__ import annotations

from typing import Any

import attrs

from meshlite.errors import ConfigError

__all__ = ["SwimConfig"]


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{attribute.name} must be > 0, got {value!r}")


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:
        raise ConfigError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen
class SwimConfig:
    # Failure detection (SWIM §3.1; memberlist ProbeInterval / ProbeTimeout / IndirectChecks).
    probe_interval_s: float = attrs.field(default=1.0, validator=_positive)
    probe_timeout_s: float = attrs.field(default=0.5, validator=_positive)
    indirect_checks: int = attrs.field(default=3, validator=_non_negative)
    # Lifeguard suspicion (memberlist SuspicionMult / SuspicionMaxTimeoutMult): the timeout
    # starts at max_mult * min and shrinks toward min = mult * log10(N) * probe_interval
    # as independent confirmations arrive.
    suspicion_mult: int = attrs.field(default=4, validator=_positive)
    suspicion_max_timeout_mult: int = attrs.field(default=6, validator=_positive)
    # Lifeguard local health awareness (memberlist AwarenessMaxMultiplier).
    awareness_max_multiplier: int = attrs.field(default=8, validator=_positive)
    # Dissemination (memberlist GossipInterval / GossipNodes / RetransmitMult).
    gossip_interval_s: float = attrs.field(default=0.2, validator=_positive)
    gossip_nodes: int = attrs.field(default=3, validator=_non_negative)
    retransmit_mult: int = attrs.field(default=4, validator=_positive)
    # Keep gossiping to a dead node this long (it may come back and refute), then reap it.
    gossip_to_the_dead_s: float = attrs.field(default=30.0, validator=_non_negative)
    # Anti-entropy (memberlist PushPullInterval); scaled up for large clusters.
    push_pull_interval_s: float = attrs.field(default=30.0, validator=_non_negative)
    # TCP timeout for push/pull and the fallback ping (memberlist TCPTimeout is 10 s).
    tcp_timeout_s: float = attrs.field(default=10.0, validator=_positive)
    # Fall back to a TCP ping when UDP probes fail (memberlist DisableTcpPings=false).
    tcp_fallback: bool = True
    # The plaintext budget of one datagram: 1,400 bytes stays under a 1,500-byte Ethernet
    # MTU after the IP/UDP headers (48 for IPv6) and the 37 bytes of encryption framing.
    udp_buffer_bytes: int = attrs.field(default=1400, validator=_positive)
    # How long a graceful leave waits for its broadcast to go out.
    leave_propagate_s: float = attrs.field(default=1.0, validator=_non_negative)
    # Serf's ReconnectInterval / ReconnectTimeout: retry a failed (not left) member this
    # often, for this long, so both halves of a partition longer than
    # gossip_to_the_dead_s find each other again (reconnect.py).  0 disables.
    reconnect_interval_s: float = attrs.field(default=30.0, validator=_non_negative)
    reconnect_timeout_s: float = attrs.field(default=24 * 3600.0, validator=_non_negative)

    @classmethod
    def lan(cls) -> SwimConfig:
        """memberlist's DefaultLANConfig."""
        return cls()

    @classmethod
    def local(cls) -> SwimConfig:
        """A fast profile for loopback tests and demos (about 5x LAN speed)."""
        return cls(
            probe_interval_s=0.2,
            probe_timeout_s=0.1,
            suspicion_mult=3,
            gossip_interval_s=0.05,
            gossip_to_the_dead_s=5.0,
            push_pull_interval_s=5.0,
            tcp_timeout_s=2.0,
            leave_propagate_s=0.3,
            reconnect_interval_s=5.0,
        )
