"""Ports for a test's own servers (Kafka, PostgreSQL, an HTTP service), chosen below the kernel's ephemeral range.

A port the OS hands out (`bind` to port 0) is an ephemeral one: between the test choosing it and its
server binding it, any outgoing connection on the machine may take it as its local port, and the server
then fails with "Address already in use" (a chaos run in CI did: Kafka could not bind 127.0.0.1:58022).
Ports below the range are never handed to outgoing connections, so a port free when chosen stays free
unless another test server takes it; each choice is random and checked by binding it.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["free_port", "free_port_block"]

_LOWEST = 10_000


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(p) for p in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return low, high


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(n: int = 1) -> int:
    """The first of `n` consecutive ports on the loopback that bind now and lie outside the ephemeral range."""
    low, high = _ephemeral_range()
    below = (_LOWEST, low - n) if low - n > _LOWEST else None
    above = (high + 1, 65535 - n) if 65535 - n > high + 1 else None
    spans = [span for span in (below, above) if span is not None]
    for _ in range(200):
        start, end = random.choice(spans)
        base = random.randrange(start, end)
        if all(_bindable(port) for port in range(base, base + n)):
            return base
    raise RuntimeError(f"no {n} consecutive free ports outside the ephemeral range {low}-{high}")


def free_port() -> int:
    """One port that binds now and lies outside the ephemeral range."""
    return free_port_block(1)
