"""One hop through the kit, beside the bare hop: what the kit costs per event (bounds, contract, signature, span, metrics, publish).

Prints figures; never asserts. The same driver as `bench.bare_hop` (same messages, same load, the hop in
a process of its own), but the hop is a service's: `Bus.consume` decodes each signed proposal into its
event (bounds, contract, the producer's signature verified), runs the handler under its span with its
metrics, and the handler publishes a new signed event through `Bus.publish`; offsets are committed once
the batch is handled and what it published acknowledged. Its topics are deleted at the end.

    .venv/bin/python -m bench.kit_hop            # short: 200 one at a time, a burst of 5,000
    .venv/bin/python -m bench.kit_hop --full     # 1,000 one at a time, a burst of 20,000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

from bench.bare_hop import drive
from bench.clients import emit_figures
from schemas import ActionProposed, decode, encode
from servicekit import ADMIN, Bus, KitSettings, Producer, deployment_authority, kafka_options, service_key, sign_as_producer


def hop_bus(kit: KitSettings, producer: Producer, prefix: str, group: str) -> Bus:
    """The hop's bus: `actions.proposed` under `prefix` consumed in `group`, each published again as a new signed event."""
    bus = Bus(
        producer,
        "policy",
        kit.kafka_bootstrap,
        prefix,
        bounds=kit.bounds,
        signer=service_key(kit, "policy"),
        authority=deployment_authority(kit),
    )

    async def handle(event: ActionProposed) -> None:
        await bus.publish("actions.decided", event.model_copy(update={"keyid": None, "signature": None}))

    bus.consume("actions.proposed", handle, group_id=group, max_records=500)
    return bus


async def hop(source: str, sink: str, group: str) -> None:
    """A service's hop: consume `actions.proposed` under `source`'s prefix, publish each as a new signed event on `sink`."""
    kit = KitSettings()
    prefix = source.removesuffix("actions.proposed")
    assert sink == prefix + "actions.decided"
    bus = hop_bus(kit, Producer(kit.kafka_bootstrap, "bench-kit-hop", **kafka_options(kit, ADMIN)), prefix, group)
    await bus.start()
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await bus.stop()


def sign(value: bytes) -> bytes:
    """The proposal signed by the key of its producer (the planner), as the hop's consumer requires."""
    return encode(sign_as_producer(KitSettings(), decode("actions.proposed", value)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="1,000 one at a time and a burst of 20,000.")
    parser.add_argument("--hop", nargs=3, metavar=("SOURCE", "SINK", "GROUP"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.hop:
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
            asyncio.run(hop(*opts.hop))
        return
    figures: dict[str, Any] = asyncio.run(drive(1000 if opts.full else 200, 20_000 if opts.full else 5_000, "bench.kit_hop", sign))
    print(
        f"one hop through the kit ({figures['message_bytes']} bytes a message, signed and verified), one process:\n"
        f"  one at a time: p50 {figures['hop_p50_ms']:.2f} ms, p99 {figures['hop_p99_ms']:.2f} ms (n={figures['hop_sequential_n']}), "
        f"{figures['hop_sequential_cpu_us_per_message']:.0f} µs of the hop's CPU a message "
        f"({figures['hop_sequential_net_cpu_us_per_message']:.0f} µs beyond its idle {figures['hop_idle_cpu_ms_per_s']:.1f} ms/s)\n"
        f"  burst of {figures['hop_burst_n']}: {figures['hop_burst_per_s']:,.0f} messages/s, "
        f"{figures['hop_cpu_us_per_message']:.0f} µs of the hop's CPU a message"
    )
    emit_figures("kit_hop", figures)


if __name__ == "__main__":
    main()
