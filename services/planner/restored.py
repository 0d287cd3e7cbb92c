"""The planner's database restored from a backup: its consumer group moved back, so that it handles again what it handled since.

A restored planner holds its tasks as the backup did, while its consumer offsets (on the broker) are past every event it
handled since: started so, a task that moved on since would wait for answers it already had and fail `step_timeout`.
`tidegate db catch-up` moves the group back (`rewind`) to the first record appended since the newest row its database
holds (less `CLOCK_SKEW_S`), never forward. Handling those events again is safe: an event applied before the backup
is in `planner.processed_events` and skipped; one applied since proposes the same call under the same action id
(`action_ids`), which the policy answers with its recorded decision and the executor with its kept result, never run
again; an answer read before the task's state has come back to its step changes nothing and is not marked applied, and
the answer republished for the re-proposal moves the task on.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from servicekit import KitSettings, kafka_options
from servicekit.bus_history import CLOCK_SKEW_S, Rewound, rewind_group

__all__ = ["READS", "consumer_group", "rewind"]

READS = ("tasks", "actions.decided", "approvals", "actions.results")  # the topics the planner consumes, on one group


def consumer_group(prefix: str) -> str:
    """The planner's consumer group in deployment `prefix` (one for every topic it reads)."""
    return f"{prefix}planner"


async def rewind(kit: KitSettings, pool: asyncpg.Pool, *, since_ms: int | None = None, **client: Any) -> list[Rewound]:
    """Move the planner's group back on every partition it reads to what its database has not seen; the partitions moved.

    From the newest task row of the deployment (`updated_at`, written with every event applied) less `CLOCK_SKEW_S`, or
    from `since_ms` when that is earlier (a planner behind the bus at the backup had not handled all that came before
    its newest row: an earlier `--since` covers that lag); from the earliest record kept when its database holds no task.
    Committed as the planner's own login (`client` overrides the options: tests). `GroupInUse` while a planner runs.
    """
    newest = await pool.fetchval("SELECT max(updated_at) FROM planner.tasks WHERE topic_prefix = $1", kit.topic_prefix)
    at = None if newest is None else int((newest.timestamp() - CLOCK_SKEW_S) * 1000)
    if since_ms is not None:
        at = since_ms if at is None else min(at, since_ms)
    options = client or kafka_options(kit, "planner")
    return await rewind_group(
        kit.kafka_bootstrap, kit.topic_prefix, list(READS), consumer_group(kit.topic_prefix), at, client_options=options
    )
