"""The bare limit of audit ingest: asyncpg COPY of hash-chained ~700-byte rows, synchronous commit on.

Prints figures; never asserts. Each row is chained like the audit's (sha256 of the previous hash and the
row's bytes, per topic-partition) and COPYed in batches of 5,000, one transaction each, into a table of
its own (primary key on the chain position), dropped at the end. No Kafka, no validation, no indexes
beyond the key: the floor the audit service's ingest is compared with.

With `--signed`, each row's Ed25519 signature (libsodium, what the kit uses, over the raw bytes) is checked
before it is chained: the floor of an audit that records whether every event verifies, as Tidegate's does
(docs/security/signatures.md).

    .venv/bin/python -m bench.bare_copy           # short: 30,000 rows
    .venv/bin/python -m bench.bare_copy --full    # 200,000 rows
    .venv/bin/python -m bench.bare_copy --signed  # each row's signature checked first
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from nacl.signing import SigningKey

from bench.clients import emit_figures
from servicekit import KitSettings

BATCH = 5000
PARTITIONS = 6


def row_bytes(i: int) -> bytes:
    """~700 bytes of JSON, shaped like a recorded proposal."""
    event = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "type": "tidegate.action.proposed",
        "source": "tidegate/planner",
        "time": datetime.now(UTC).isoformat(),
        "traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
        "data": {
            "action_id": f"bare-a{i}",
            "task_id": f"bare-t{i % 1000}",
            "tenant_id": "acme",
            "step": i % 20,
            "tool": "issue_refund",
            "args": {"payee_id": f"cus_{i % 97}", "amount_usd": 40.0 + i % 500, "order_id": f"O-{i}"},
            "rationale": "customer asked for a refund of a duplicate charge on their last order; the agent checked the order first",
            "proposer": "tidegate/planner/playbook",
            "cost": {"model": "gpt-4o-mini", "tokens_in": 812, "tokens_out": 64, "usd": 0.00042},
        },
    }
    return json.dumps(event).encode()


async def run(rows: int, *, signed: bool = False) -> dict[str, Any]:
    kit = KitSettings()
    table = f"bench_bare_copy_{uuid.uuid4().hex[:8]}"
    key = SigningKey.generate() if signed else None
    values = [row_bytes(i) for i in range(rows)]  # built before the clock starts, as Kafka would hand them over
    signatures = [key.sign(v).signature for v in values] if key is not None else []
    conn = await asyncpg.connect(kit.operator_database_url)
    try:
        sync = await conn.fetchval("SHOW synchronous_commit")
        await conn.execute(
            f"CREATE TABLE {table} (topic text NOT NULL, partition integer NOT NULL, seq bigint NOT NULL, "
            "kafka_ts timestamptz NOT NULL, value bytea NOT NULL, prev_hash bytea NOT NULL, hash bytea NOT NULL, "
            "PRIMARY KEY (topic, partition, seq))"
        )
        heads: dict[int, tuple[int, bytes]] = {}
        started, cpu_started = time.perf_counter(), time.process_time()
        for start in range(0, rows, BATCH):
            batch = []
            for i in range(start, min(rows, start + BATCH)):
                partition = i % PARTITIONS
                seq, prev = heads.get(partition, (0, bytes(32)))
                if key is not None:
                    key.verify_key.verify(values[i], signatures[i])
                digest = hashlib.sha256(prev + values[i]).digest()
                heads[partition] = (seq + 1, digest)
                batch.append(("bench.actions.proposed", partition, seq + 1, datetime.now(UTC), values[i], prev, digest))
            async with conn.transaction():
                await conn.copy_records_to_table(table, records=batch)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()
    return {
        "copy_events_per_s": rows / seconds,
        "copy_us_per_event": cpu / rows * 1e6,
        "copy_rows": rows,
        "row_bytes": sum(map(len, values)) // rows,
        "synchronous_commit": sync,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="200,000 rows instead of 30,000.")
    parser.add_argument("--signed", action="store_true", help="Check each row's Ed25519 signature before it is chained.")
    opts = parser.parse_args()
    figures = asyncio.run(run(200_000 if opts.full else 30_000, signed=opts.signed))
    print(
        f"bare COPY of {figures['copy_rows']} hash-chained rows (~{figures['row_bytes']} bytes), {BATCH} per transaction, "
        f"synchronous_commit = {figures['synchronous_commit']}{', each signature checked first' if opts.signed else ''}:\n"
        f"  {figures['copy_events_per_s']:,.0f} events/s, {figures['copy_us_per_event']:.1f} µs of Python CPU per event"
    )
    emit_figures("bare_copy_signed" if opts.signed else "bare_copy", figures)


if __name__ == "__main__":
    main()
