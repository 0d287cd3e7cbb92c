"""The suites' `Collector` keeps each record of its topics once, however long a test holds its event loop.

A test that dumps or restores its database with `subprocess.run` holds its event loop while `pg_dump` or `pg_restore`
runs: over ten seconds on a loaded two-core machine. A collector reading as a member of a consumer group sent no heartbeat
meanwhile; the broker dropped it from its group, and it joined again with nothing committed and read its topics from the
beginning again: every event it had collected was in it twice. So `test_planner_restore_escalated` saw the task's outcome
"published twice" (2 == 1) while the broker held it once, at one offset, read twice.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from bus_helpers import Collector, Producer

from schemas import TaskCompleted
from schemas.examples import sample_events
from servicekit import KitSettings

SESSION_S = 10  # aiokafka's default `session_timeout_ms`: a group's member silent this long is dropped from it


async def test_an_event_is_collected_once_after_the_test_held_its_loop_longer_than_a_group_session(kit: KitSettings, wait_for: Any) -> None:
    sample = next(e for _, e in sample_events() if isinstance(e, TaskCompleted))
    first, second = (sample.model_copy(update={"id": str(uuid.uuid4())}) for _ in range(2))  # one task's: one partition
    producer, collector = Producer(kit), Collector(kit, ["tasks.outcomes"])
    await producer.start()
    await collector.start()
    try:
        await producer.send("tasks.outcomes", first)
        await wait_for(lambda: collector.events["tasks.outcomes"], what="the first outcome collected", timeout=60)
        time.sleep(SESSION_S + 2)  # the loop held, as by a `pg_restore` run with `subprocess.run`
        await producer.send("tasks.outcomes", second)
        await wait_for(
            lambda: any(e.id == second.id for e in collector.events["tasks.outcomes"]), what="the second outcome collected", timeout=60
        )
        assert [e.id for e in collector.events["tasks.outcomes"]] == [first.id, second.id]  # each record of the topic once
    finally:
        await collector.stop()
        await producer.stop()
