"""What a SASL/SCRAM-SHA-512 login costs a Kafka client: connect time with and without it, in one run.

    PYTHONPATH=. .venv/bin/python bench/bus_login_bench.py --plain 127.0.0.1:19092 [--runs 20]

Connect = an aiokafka producer's start (bootstrap, metadata) and stop. The login side uses
`TIDEGATE_KAFKA_BOOTSTRAP` as the `agent` principal; `--plain` is a broker without authentication.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from aiokafka import AIOKafkaProducer

from servicekit import AGENT, KitSettings, kafka_options


async def connect_ms(bootstrap: str, options: dict[str, Any], runs: int) -> list[float]:
    """Milliseconds of `runs` producer start+stop cycles."""
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **options)
        await producer.start()
        await producer.stop()
        out.append((time.perf_counter() - started) * 1000)
    return out


async def main() -> None:
    """Measure both and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plain", required=True, help="bootstrap of a broker without authentication")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    kit = KitSettings()
    for label, bootstrap, options in (
        ("no auth           ", args.plain, {}),
        ("SASL/SCRAM-SHA-512", kit.kafka_bootstrap, kafka_options(kit, AGENT)),
    ):
        await connect_ms(bootstrap, options, 2)  # warm-up
        ms = await connect_ms(bootstrap, options, args.runs)
        print(f"connect {label} {bootstrap}: median {statistics.median(ms):.1f} ms, p90 {sorted(ms)[int(0.9 * len(ms)) - 1]:.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
