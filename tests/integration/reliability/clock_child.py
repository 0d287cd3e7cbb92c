"""Run under `faketime` by test_clock_skew.py: the executor's bus publishes one result, then prints its `/health` as JSON.

With it, under `times`, the host's wall clock and what the services set and judge lifetimes at (`servicekit.clock`).

argv: the file holding the signed event's bytes, its key. The kit's settings come from the environment.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from servicekit import Bus, KitSettings, ServiceProcess, kafka_options
from servicekit.clock import issuing_clock, judging_clock
from servicekit.producer import Producer


async def main(value: bytes, key: bytes) -> None:
    kit = KitSettings()
    producer = Producer(kit.kafka_bootstrap, "executor", **kafka_options(kit, "executor"))
    bus = Bus(producer, "executor", kit.kafka_bootstrap, kit.topic_prefix)
    await producer.start()
    try:
        await bus.publish_recorded("actions.results", key, value, None)
        process = ServiceProcess.of(kit, "executor", bus, pool=None)
        process.started = True
        times = {"host": time.time(), "issuing": issuing_clock(producer)().timestamp(), "judging": judging_clock(producer)().timestamp()}
        print(json.dumps(process.health() | {"times": times}), flush=True)
    finally:
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]).read_bytes(), sys.argv[2].encode()))
