"""What the planner's writes make PostgreSQL write, per event: statements, rows and WAL, by relation.

Prints figures; never asserts. `bench.planner_bench`'s ticket mix (password, delivery, a refund to a new payee and
an account deletion, each refused once and handed off) runs through the planner's handlers and
`PostgresTaskRepository` on a database of its own (the planner's migrations applied), after a warm-up. Around the
measured tasks it reads `pg_stat_statements` (each statement's calls, rows, buffer blocks touched, WAL bytes and
records) and, with `pg_walinspect` (PostgreSQL's contrib module), every WAL record written in between, each counted
against the table, index or TOAST table it changed. These are counts, not times: the same on a busy machine as on an
idle one; WAL is what each commit makes the database flush (docs/benchmarks.md, 'What PostgreSQL's time goes to').
Needs the local cluster (`tidegate infra up`) with `pg_stat_statements` loaded; run it with nothing else writing to the
cluster, since WAL records of other databases in the range are counted apart ("elsewhere").

    .venv/bin/python -m bench.planner_db              # 300 tasks after 40
    .venv/bin/python -m bench.planner_db --tasks 1000
"""

from __future__ import annotations

import argparse
import asyncio
import re
import uuid
from collections import Counter
from typing import Any

import asyncpg

from bench.clients import emit_figures
from bench.planner_bench import mix_driver, run_mix
from servicekit import REPO_ROOT, KitSettings
from servicekit.db import apply_migrations, create_pool
from servicekit.dbroles import with_database
from tidegate.database import local_superuser_url

_STATEMENTS = """SELECT s.query, s.calls, s.rows, s.wal_bytes, s.wal_records, s.shared_blks_hit + s.shared_blks_read AS blocks
FROM pg_stat_statements s
JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database() AND s.query LIKE '%planner.%'"""
# Each relation by its file, a TOAST table and its index under the table they belong to.
_RELATIONS = """SELECT c.relfilenode::text AS node, coalesce(t.relname || ' (TOAST)', c.relname) AS name FROM pg_class c
LEFT JOIN pg_class t ON t.reltoastrelid = c.oid
    OR t.reltoastrelid = (SELECT i.indrelid FROM pg_index i WHERE i.indexrelid = c.oid AND c.relname LIKE 'pg_toast%')
WHERE c.relfilenode <> 0"""
_BLOCK = re.compile(r"rel \d+/(\d+)/(\d+)")


def _what(query: str) -> str:
    """A statement named by its first words, which tell the planner's statements apart."""
    return " ".join(query.split())[:60]


async def bench(n_tasks: int, warm: int) -> dict[str, Any]:
    """Run `warm` tasks of the mix, then `n_tasks` measured; figures per event."""
    kit0 = KitSettings()
    dbname = f"tidegate_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(local_superuser_url(kit0))
    await admin.execute(f"CREATE DATABASE {dbname}")
    await admin.close()
    pool = await create_pool(with_database(local_superuser_url(kit0), dbname), max_size=2)
    try:
        for extension in ("pg_stat_statements", "pg_walinspect"):
            await pool.execute(f"CREATE EXTENSION IF NOT EXISTS {extension}")
        await apply_migrations(pool, "planner", REPO_ROOT / "services" / "planner" / "migrations")
        driver = mix_driver(pool)
        await run_mix(driver, "warm", warm)
        await pool.execute("SELECT pg_stat_statements_reset()")
        start, first = await pool.fetchval("SELECT pg_current_wal_lsn()"), driver.events
        await run_mix(driver, "bench", n_tasks)
        end, events = await pool.fetchval("SELECT pg_current_wal_lsn()"), driver.events - first
        statements = await pool.fetch(_STATEMENTS)
        database = str(await pool.fetchval("SELECT oid FROM pg_database WHERE datname = current_database()"))
        names = {r["node"]: r["name"] for r in await pool.fetch(_RELATIONS)}
        records = await pool.fetch("SELECT record_length, fpi_length, block_ref FROM pg_get_wal_records_info($1, $2)", start, end)
    finally:
        await pool.close()
        admin = await asyncpg.connect(local_superuser_url(kit0))
        await admin.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        await admin.close()
    wal: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for r in records:
        block = _BLOCK.search(r["block_ref"] or "")
        name = "no relation (commits)" if block is None else "elsewhere" if block[1] != database else names.get(block[2], block[2])
        wal[name] += r["record_length"]
        count[name] += 1
    ours = sum(b for name, b in wal.items() if name != "elsewhere")
    return {
        "tasks": n_tasks,
        "events": events,
        "statements_per_event": round(sum(s["calls"] for s in statements) / events, 3),
        "wal_bytes_per_event": round(ours / events),
        "wal_records_per_event": round(sum(n for name, n in count.items() if name != "elsewhere") / events, 2),
        "statements": {
            _what(s["query"]): {
                "calls": round(s["calls"] / events, 3),
                "rows": round(s["rows"] / events, 3),
                "wal_bytes": round(int(s["wal_bytes"]) / events),
                "wal_records": round(s["wal_records"] / events, 2),
                "blocks": round(s["blocks"] / events, 1),
            }
            for s in sorted(statements, key=lambda s: -int(s["wal_bytes"]))
        },
        "wal_bytes_by_relation": {name: round(b / events) for name, b in wal.most_common()},
        "wal_records_by_relation": {name: round(count[name] / events, 2) for name, _ in wal.most_common()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=300, help="Tasks of the mix measured (default 300).")
    parser.add_argument("--warm", type=int, default=40, help="Tasks of the mix run first, not measured (default 40).")
    args = parser.parse_args()
    r = asyncio.run(bench(args.tasks, args.warm))
    print(
        f"{r['events']} events: {r['statements_per_event']} statements, {r['wal_bytes_per_event']:,} bytes and "
        f"{r['wal_records_per_event']} records of WAL per event"
    )
    for what, s in r["statements"].items():
        counted = f"{s['calls']:5.2f} calls {s['rows']:5.2f} rows {s['blocks']:5.1f} blocks"
        print(f"  {counted} {s['wal_bytes']:6,} B {s['wal_records']:5.2f} records  {what}")
    print("WAL per event by relation:")
    for name, b in r["wal_bytes_by_relation"].items():
        print(f"  {b:6,} B {r['wal_records_by_relation'][name]:5.2f} records  {name}")
    emit_figures("planner_db", r)


if __name__ == "__main__":
    main()
