"""The audit's ingest in process, through its real handler path: the figure to A/B a cut of the audit by on a shared machine.

Prints figures; never asserts but that every event was recorded valid. The audit service is built by its wiring point
(`services.audit.build`) on a database of its own (made, migrated and dropped here; the local cluster, synchronous
commit on), its pool opened, and polled batches of `bench.audit_bench`'s signed events (a 50-event task, then proposals
of 1,000 tasks) are handed, as aiokafka hands them over, to the handler its bus gives the audit's poller: bounds,
contract, each producer's signature checked, fields, the hash chain, the COPY and the commit. What aiokafka's fetch and
the offset commit cost is not in it (`bench.audit_bench` measures the ingest from Kafka). The key folders' look, every
0.1 s, is left out once warm (set to an hour): it is time-based, so a slower process (callgrind) would make it per event.

What is timed is this process's CPU (`time.process_time`). For an A/B on a loaded machine count instructions instead:
with `--callgrind` the process switches callgrind's instrumentation on for the measured batches only, and prints the
command that reads the count.

    .venv/bin/python -m bench.audit_cpu                       # 500 warm, 5 rounds of 2,000, batches of 500
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=cg.out .venv/bin/python -m bench.audit_cpu --callgrind
    callgrind_annotate cg.out | head -30                      # "PROGRAM TOTALS" / events measured: instructions an event
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import ConsumerRecord

from bench.audit_bench import bench_events
from servicekit import KitSettings
from servicekit.db import open_pool
from servicekit.dbroles import with_database
from servicekit.runner import tune_gc
from services.audit import AuditSettings, build
from tidegate.database import local_superuser_url, migrate

PREFIX = "bench."
BATCH = 500  # the audit's `batch_max_records`: a burst's polled batch


def records_of(kit: KitSettings, n: int, first_offset: dict[tuple[str, int], int]) -> list[ConsumerRecord[Any, Any]]:
    """`n` of `bench.audit_bench`'s signed events as polled records, each topic-partition's offsets going on from `first_offset`."""
    out = []
    now_ms = int(time.time() * 1000)
    for i, (topic, value, key, headers) in enumerate(bench_events(n, f"bench-task-{uuid.uuid4().hex[:8]}", kit)):
        partition = i % 6 if topic == "actions.proposed" else 0
        offset = first_offset.get((topic, partition), 0)
        first_offset[(topic, partition)] = offset + 1
        # timestamp type 1: the broker's append time, as every catalog topic is stamped
        out.append(ConsumerRecord(PREFIX + topic, partition, offset, now_ms, 1, key, value, None, 0, len(value), headers))
    return out


async def batches(handle: Any, records: Sequence[ConsumerRecord[Any, Any]], batch: int) -> None:
    """Hand `records` to the poller's handler `batch` at a time, as the poller does."""
    for i in range(0, len(records), batch):
        await handle(records[i : i + batch])


def callgrind(on: bool) -> None:
    """Switch callgrind's instrumentation of this process on or off (a no-op outside valgrind)."""
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())], check=False, capture_output=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="Measured rounds (medians printed).")
    parser.add_argument("--events", type=int, default=2000, help="Events a round.")
    parser.add_argument("--warm", type=int, default=500, help="Events handled first, not measured.")
    parser.add_argument("--batch", type=int, default=BATCH, help="Records a polled batch.")
    parser.add_argument("--callgrind", action="store_true", help="Under valgrind: instrument the measured batches only (one round).")
    parser.add_argument("--profile", type=Path, help="cProfile the measured rounds into this file.")
    opts = parser.parse_args()
    logging.disable(logging.WARNING)
    kit0 = KitSettings()
    admin = local_superuser_url(kit0)
    dbname = f"tidegate_auditcpu_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f"CREATE DATABASE {dbname} OWNER tidegate")
    await conn.close()
    keys = Path(tempfile.mkdtemp(prefix="tidegate-auditcpu-keys-"))
    kit = KitSettings(
        database_url=with_database(kit0.database_url, dbname),
        topic_prefix=PREFIX,
        keys_dir=keys,
        operator_keys_dir=keys / "operators",
        client_keys_dir=keys / "clients",
        operator_private_keys_dir=keys / "operator-keys",
        client_private_keys_dir=keys / "client-keys",
        metrics_port=None,
    )
    try:
        await migrate(kit)
        svc = build(kit, AuditSettings())
        assert svc.pool is not None
        await open_pool(svc.pool, "the bench's database")
        svc.bus._register()  # the consumer made into a poller, as `Bus.start` does, without connecting it
        handle = svc.bus.pollers[0]._handler
        offsets: dict[tuple[str, int], int] = {}
        rounds = 1 if opts.callgrind else opts.rounds
        warm = records_of(kit, opts.warm, offsets)
        work = [records_of(kit, opts.events, offsets) for _ in range(rounds)]
        tune_gc()  # as the service process does once started
        await batches(handle, warm, opts.batch)
        authority = svc.recorder.authority
        assert authority is not None
        authority.recheck_s = 3600.0  # time-based, not per event: left out once warm
        profiler = cProfile.Profile(time.process_time) if opts.profile else None
        figures = []
        for records in work:
            if opts.callgrind:
                callgrind(True)
            if profiler is not None:
                profiler.enable()
            started = time.process_time()
            await batches(handle, records, opts.batch)
            spent = time.process_time() - started
            if profiler is not None:
                profiler.disable()
            if opts.callgrind:
                callgrind(False)
            figures.append(spent * 1e6 / len(records))
        recorded = svc.recorder.recorded
        async with svc.pool.acquire() as db:
            valid = await db.fetchval("SELECT count(*) FROM audit.log WHERE valid")
        total = opts.warm + rounds * opts.events
        assert recorded == valid == total, (recorded, valid, total)  # every event recorded, each signature verified
        each = " / ".join(f"{v:.1f}" for v in figures)
        print(f"audit ingest in process, batches of {opts.batch}: median {statistics.median(figures):.1f} µs of CPU an event ({each})")
        if opts.callgrind:
            print(f"events measured under callgrind: {opts.events} (instructions an event: PROGRAM TOTALS / {opts.events})")
        if profiler is not None and opts.profile is not None:
            profiler.dump_stats(str(opts.profile))
            print(f"profile: {opts.profile}")
        await svc.pool.close()
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
