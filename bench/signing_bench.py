"""What an envelope signature costs per event (µs, printed): signing, the consumer's check, and their parts.

Beside each: canonicalising the event (what both sides do before Ed25519), and a bare `json.dumps` of the
same envelope (what any producer pays anyway), so the signature's own share is plain. Times are CPU time of
this process (`time.process_time`), so a machine shared with other work still reports what one event costs.

PYTHONPATH=. .venv/bin/python bench/signing_bench.py [-n 5000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import schemas as s
from bench.clients import emit_figures
from schemas.examples import sample_events
from servicekit import KitSettings, SigningKey, deployment_authority, sign_as_producer, sign_event
from servicekit.authority import signed_bytes
from servicekit.signing import verifies


def main() -> None:
    """Sign and verify every sample event type `n` times; print the mean per event."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000, help="Signatures and checks per event type (default 5,000).")
    parser.add_argument("--full", action="store_true", help="20,000 of each.")
    opts = parser.parse_args()
    n = 20_000 if opts.full else opts.n
    kit = KitSettings(keys_dir=Path(tempfile.mkdtemp(prefix="tidegate-bench-keys-")))
    authority = deployment_authority(kit)
    events = [e for _, e in sample_events() if e.type == "tidegate.action.decided"] + [
        e for _, e in sample_events() if e.type == "tidegate.action.proposed"
    ]
    measured: list[dict[str, float]] = []
    for event in events:
        signed = sign_as_producer(kit, event)  # makes the key; then time the signature alone, key in memory
        key = SigningKey.load_or_create(kit.keys_dir, "policy")
        started = time.process_time()
        for _ in range(n):
            sign_event(event, key)
        sign_us = (time.process_time() - started) / n * 1e6
        raw = s.encode(signed)
        decoded = s.decode_any(raw)
        assert authority.check(raw, decoded) is None
        started = time.process_time()
        for _ in range(n):
            authority.check(raw, decoded)
        verify_us = (time.process_time() - started) / n * 1e6
        started = time.process_time()
        for _ in range(n):
            s.decode_any(raw)
        decode_us = (time.process_time() - started) / n * 1e6
        document = json.loads(raw)
        started = time.process_time()
        for _ in range(n):
            signed_bytes(document)
        canonical_us = (time.process_time() - started) / n * 1e6
        started = time.process_time()
        for _ in range(n):
            json.dumps(document)
        dumps_us = (time.process_time() - started) / n * 1e6
        message, public = signed_bytes(document), key.private.public_key()
        started = time.process_time()
        for _ in range(n):
            signature = key.private.sign(message)
        ed_sign_us = (time.process_time() - started) / n * 1e6
        started = time.process_time()
        for _ in range(n):
            public.verify(signature, message)
        ed_verify_us = (time.process_time() - started) / n * 1e6
        started = time.process_time()
        for _ in range(n):
            key.sign(message)
        na_sign_us = (time.process_time() - started) / n * 1e6
        started = time.process_time()
        for _ in range(n):
            verifies(public, signature, message)
        na_verify_us = (time.process_time() - started) / n * 1e6
        print(
            f"{event.type:<26} {len(raw):4d} B  sign {sign_us:6.1f}  verify {verify_us:6.1f}  canonicalise {canonical_us:5.1f}  "
            f"json.dumps {dumps_us:5.1f}  ed25519 (OpenSSL) sign {ed_sign_us:5.1f} verify {ed_verify_us:5.1f}  "
            f"(libsodium, what the kit uses) sign {na_sign_us:5.1f} verify {na_verify_us:5.1f}  decode {decode_us:5.1f}  (µs)"
        )
        measured.append({"sign_us": sign_us, "check_us": verify_us, "ed25519_sign_us": na_sign_us, "ed25519_verify_us": na_verify_us})
    emit_figures("signing", {name: sum(m[name] for m in measured) / len(measured) for name in measured[0]})


if __name__ == "__main__":
    main()
