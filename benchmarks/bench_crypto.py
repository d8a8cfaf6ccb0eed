"""Seal + open cost of one 1,400-byte datagram (meshlite._crypto), median of repeats.

    python benchmarks/bench_crypto.py [--repeats 9] [--batch 2000]

Cases: AES-GCM with the primary key; a frame only the second installed key opens (the
cost during a key rotation); no encryption; and the worst case a peer without the
key can cause: a garbage frame tried against a full keyring of 16 keys.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable

from meshlite._crypto import MAX_KEYS, AuthError, Keyring, Sealer, generate_key

PACKET_BYTES = 1400
T0 = 1_700_000_000.0


def per_op_us(run_batch: Callable[[], None], batch: int, repeats: int) -> float:
    """Median over ``repeats`` of (time of one batch / batch size), in microseconds."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_batch()
        samples.append((time.perf_counter() - start) / batch * 1e6)
    return statistics.median(samples)


def seal_open(sender: Sealer, receiver: Sealer, batch: int) -> Callable[[], None]:
    payload = os.urandom(PACKET_BYTES)
    clock = iter(range(10**9))

    def run() -> None:
        for _ in range(batch):
            now_s = T0 + next(clock) * 1e-4  # advancing, as real traffic does
            receiver.open(sender.seal(payload, now_s), now_s)

    return run


def reject_garbage(receiver: Sealer, batch: int) -> Callable[[], None]:
    frame = b"\x01" + os.urandom(PACKET_BYTES + 36)

    def run() -> None:
        for _ in range(batch):
            with contextlib.suppress(AuthError):
                receiver.open(frame, T0)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batch", type=int, default=2000)
    args = parser.parse_args()
    key, old = generate_key(), generate_key()
    full = [generate_key() for _ in range(MAX_KEYS)]
    cases: dict[str, Callable[[], None]] = {
        "aes-gcm, primary key": seal_open(
            Sealer(Keyring([key]), "prod"), Sealer(Keyring([key]), "prod"), args.batch
        ),
        "aes-gcm, 2nd key (rotation)": seal_open(
            Sealer(Keyring([old]), "prod"), Sealer(Keyring([key, old]), "prod"), args.batch
        ),
        "no encryption": seal_open(Sealer(None, "prod"), Sealer(None, "prod"), args.batch),
        f"garbage vs {MAX_KEYS} keys (open only)": reject_garbage(
            Sealer(Keyring(full), "prod"), args.batch
        ),
    }
    print(f"{PACKET_BYTES}-byte packets, median of {args.repeats} x {args.batch}")
    results = {name: per_op_us(run, args.batch, args.repeats) for name, run in cases.items()}
    base = results["aes-gcm, primary key"]
    for name, us in results.items():
        print(f"  {name:34s} {us:8.2f} us/packet  ({us / base:5.2f}x primary)")
    print(f"  => {1e6 / base:,.0f} sealed+opened packets/s on one core")


if __name__ == "__main__":
    main()
