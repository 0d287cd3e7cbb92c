"""Whether a `tidegate db catch-up` began on a service's schema and did not finish: a start's check refuses until it has.

A catch-up writes back, in several steps, what a restored database lost (`tidegate/ops/catch_up.py`); each row it writes
is dated when it is written, so one cut off partway (an ssh session dropped, a broker timeout) leaves a database newer
than the events it still lacks, and a start's check, which reads the bus from the database's newest row, would pass it
(restore8 N1: the policy then released as never run ten reservations of calls that had run). So the catch-up marks each
schema it writes before its first write (`catch_up_began`) and again once every step is done (`catch_up_finished`), and
each service's start refuses while its schema's mark says begun and not finished (`unfinished_catch_up`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

__all__ = ["SCHEMAS", "catch_up_began", "catch_up_finished", "unfinished_catch_up", "unfinished_message"]

SCHEMAS = ("executor", "approval", "policy")  # the schemas a catch-up writes (each has its `catch_up_runs`, one row)


async def catch_up_began(db: Any, schemas: Iterable[str] = SCHEMAS) -> None:
    """Mark `schemas` as being caught up (committed at once, before anything is written back)."""
    for schema in schemas:
        await db.execute(
            f"INSERT INTO {schema}.catch_up_runs (started_at, finished_at) VALUES (now(), NULL)"
            " ON CONFLICT (only_row) DO UPDATE SET started_at = now(), finished_at = NULL"
        )


async def catch_up_finished(db: Any, schemas: Iterable[str] = SCHEMAS) -> None:
    """Mark `schemas` as caught up: every step of the catch-up wrote what it had to."""
    for schema in schemas:
        await db.execute(f"UPDATE {schema}.catch_up_runs SET finished_at = now()")


async def unfinished_catch_up(db: Any, schema: str) -> datetime | None:
    """When a catch-up of `schema` began that has not finished; None when none did, or the last one finished."""
    began: datetime | None = await db.fetchval(f"SELECT started_at FROM {schema}.catch_up_runs WHERE finished_at IS NULL")
    return began


def unfinished_message(service: str, began: datetime) -> str:
    """What a start says when its schema's catch-up has not finished."""
    return (
        f"the database is behind the bus: a `tidegate db catch-up` began at {began.isoformat(timespec='seconds')} and has not "
        f"finished (cut off, or running now), so {service}'s database may still lack what the bus holds; run `tidegate db "
        "catch-up` again to its end (it writes only what is missing), then start it again"
    )
