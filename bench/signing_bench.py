"""What an envelope signature costs: signing one event, and the consumer's check of it (µs, printed).

PYTHONPATH=. .venv/bin/python bench/signing_bench.py [-n 5000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import schemas as s
from schemas.examples import sample_events
from servicekit import KitSettings, SigningKey, deployment_authority, sign_as_producer, sign_event


def main() -> None:
    """Sign and verify every sample event type `n` times; print the mean per event."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000)
    n = parser.parse_args().n
    kit = KitSettings(keys_dir=Path(tempfile.mkdtemp(prefix="tidegate-bench-keys-")))
    authority = deployment_authority(kit)
    events = [e for _, e in sample_events() if e.type == "tidegate.action.decided"] + [
        e for _, e in sample_events() if e.type == "tidegate.action.proposed"
    ]
    for event in events:
        signed = sign_as_producer(kit, event)  # makes the key; then time the signature alone, key in memory
        key = SigningKey.load_or_create(kit.keys_dir, "policy")
        started = time.perf_counter()
        for _ in range(n):
            sign_event(event, key)
        sign_us = (time.perf_counter() - started) / n * 1e6
        raw = s.encode(signed)
        decoded = s.decode_any(raw)
        assert authority.check(raw, decoded) is None
        started = time.perf_counter()
        for _ in range(n):
            authority.check(raw, decoded)
        verify_us = (time.perf_counter() - started) / n * 1e6
        started = time.perf_counter()
        for _ in range(n):
            s.decode_any(raw)
        decode_us = (time.perf_counter() - started) / n * 1e6
        print(
            f"{event.type:<28} {len(raw):5d} bytes  sign {sign_us:6.1f} µs  verify {verify_us:6.1f} µs  (decode alone {decode_us:5.1f} µs)"
        )


if __name__ == "__main__":
    main()
