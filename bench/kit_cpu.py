"""One hop through the kit in process, without Kafka: the kit's own CPU per event, the figure to A/B a cut of the kit by.

Prints figures; never asserts. The hop of `bench.kit_hop` (a signed proposal consumed through `Bus.consume`: bounds,
contract, the planner's signature checked, the handler run under its span with its metrics, a new signed event published
through `Bus.publish`, the batch's deliveries settled, its records marked handled) driven through the very handler the
bus gives its consumer (`Bus.on_polled`'s), with the polled records made as aiokafka hands them over and a producer that
connects nowhere (each send acknowledged at once). What is timed is this process's CPU (`time.process_time`); what a
poll, a fetch and a produce request cost in aiokafka is not in it (`bench.kit_hop` and `bench.bare_hop` measure those).

    .venv/bin/python -m bench.kit_cpu                  # 5 rounds of 5,000 events, batches of 500 (a burst) and of one
    .venv/bin/python -m bench.kit_cpu --profile out.prof
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord

from bench.kit_hop import hop_bus
from schemas import ActionProposed, ActionProposedData, encode, headers_for
from servicekit import Bus, KitSettings, Producer, sign_as_producer
from servicekit.runner import tune_gc

PREFIX = "bench."


class NowhereProducer(Producer):
    """A producer that connects nowhere: each record is acknowledged at once (a done future), and counted."""

    def __init__(self) -> None:
        super().__init__("unused:1", "policy")
        self.sent = 0

    async def send(self, topic: str, value: bytes | None, *, key: bytes | None, headers: Any) -> asyncio.Future[Any] | None:
        self.sent += 1
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def make_bus(kit: KitSettings) -> tuple[Bus, Any]:
    """`bench.kit_hop`'s hop, as its bus builds it, and the handler the bus gives its consumer's polled batches."""
    bus = hop_bus(kit, NowhereProducer(), PREFIX, "bench.kit_cpu")
    bus._register()  # the subscriptions made into pollers, as `Bus.start` does, without connecting them
    return bus, bus.pollers[0]._handler


def workload(kit: KitSettings, n: int) -> list[ConsumerRecord[Any, Any]]:
    """`n` proposals signed by the planner's key, as polled records of `actions.proposed` (a demo refund each)."""
    run = uuid.uuid4().hex[:6]
    records = []
    for i in range(n):
        data = ActionProposedData(
            action_id=f"kit-{run}-{i}",
            task_id=f"task-{run}-{i // 4}",
            tenant_id="acme",
            step=i % 4,
            tool="issue_refund",
            args={"payee_id": f"cus_100{1 + i % 5}", "amount_usd": 12.5, "order_id": f"O-{i}"},
            proposer="bench",
            mode="autonomous",
        )
        event = sign_as_producer(kit, ActionProposed.build(data, source="tidegate/planner"))
        value = encode(event)
        headers = [(k, v.encode()) for k, v in headers_for(event).items()]
        now_ms = int(time.time() * 1000)
        records.append(ConsumerRecord(PREFIX + "actions.proposed", i % 6, i, now_ms, 1, event.key, value, None, 0, len(value), headers))
    return records


async def one_round(keys: Path, n: int, batch: int, profiler: cProfile.Profile | None = None) -> float:
    """A fresh bus handles `n` records, `batch` a poll: CPU µs per event."""
    kit = KitSettings(topic_prefix=PREFIX, keys_dir=keys)
    bus, handle = make_bus(kit)
    records = workload(kit, n)
    started = time.process_time()
    if profiler is not None:
        profiler.enable()
    await batches(handle, records, batch)
    if profiler is not None:
        profiler.disable()
    spent = time.process_time() - started
    assert bus.producer.sent == n, (bus.producer.sent, n)  # type: ignore[attr-defined]  # every one handled, none dead-lettered
    return spent * 1e6 / n


async def batches(handle: Any, records: Sequence[ConsumerRecord[Any, Any]], batch: int) -> None:
    """Hand `records` to the bus's handler `batch` at a time, as its poller does."""
    for i in range(0, len(records), batch):
        await handle(records[i : i + batch])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="Rounds of each batch size, each on a fresh bus (medians printed).")
    parser.add_argument("--events", type=int, default=5000, help="Events a round.")
    parser.add_argument("--profile", type=Path, help="cProfile one more round (batches of 500) into this file.")
    opts = parser.parse_args()
    tune_gc()  # as a running service does
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as keys:
        await one_round(Path(keys), 200, 500)  # warm up: imports, keys made
        for batch in (500, 1):
            values = [await one_round(Path(keys), opts.events, batch) for _ in range(opts.rounds)]
            each = " / ".join(f"{v:.1f}" for v in values)
            print(f"  batches of {batch:<4} µs of CPU an event: median {statistics.median(values):7.1f}   ({each})")
        if opts.profile is not None:
            profiler = cProfile.Profile(time.process_time)
            await one_round(Path(keys), opts.events, 500, profiler)
            profiler.dump_stats(str(opts.profile))
            print(f"  profile of one more round: {opts.profile}")


if __name__ == "__main__":
    asyncio.run(main())
