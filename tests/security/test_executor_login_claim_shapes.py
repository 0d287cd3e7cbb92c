"""One claim row of the wrong shape, written with the executor's database login, no longer stops the executor's start.

At start the executor reads every claim its deployment left `running` and settles those it must not call again
(`settle_interrupted`). The attacker, holding only the executor's login, inserts one such row whose `error` is a JSON
text instead of an object: before, `CallError.from_json` raised `AttributeError` inside the start, and the executor
restarted for ever (seen live: `tidegate restart executor`, "not healthy 90s after the restart", 5 restarts), so no
authorized call of any tenant ran. Now that row is refused (logged, counted) and left as it is; the others are settled.
"""

from __future__ import annotations

import uuid

import pytest
from prometheus_client import REGISTRY

from servicekit import KitSettings, create_pool
from servicekit.dbroles import service_database_url
from services.executor import build as build_executor

pytestmark = pytest.mark.integration

_RUNNING = (
    "INSERT INTO executor.actions (action_id, event_id, tenant_id, task_id, tool, args, action_digest, status, attempts, error, "
    "topic_prefix) VALUES ($1, $2, $3, 't-1', 'issue_refund', '{\"payee_id\": \"cus_1001\", \"amount_usd\": 5.0}', 'sha256:x', "
    "'running', 99, $4::jsonb, $5)"
)


def refused() -> float:
    labels = {"service": "executor", "table": "actions", "reason": "invalid"}
    return REGISTRY.get_sample_value("tidegate_rows_refused_total", labels) or 0.0


async def test_a_running_claim_of_the_wrong_shape_is_refused_and_the_executor_starts_and_settles_the_others(
    kit: KitSettings, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = f"claims-{uuid.uuid4().hex[:8]}"
    junk, interrupted = f"junk-{uuid.uuid4().hex[:12]}", f"cut-{uuid.uuid4().hex[:12]}"
    login = await create_pool(service_database_url(kit, "executor"), max_size=1)
    executor = build_executor(kit, environ={})
    before = refused()
    try:
        await login.execute(_RUNNING, junk, f"e-{junk}", tenant, '"boom"', kit.topic_prefix)  # a text where an object is kept
        # a process cut mid-call, its attempts used up: settled at start, never called again
        await login.execute(_RUNNING, interrupted, f"e-{interrupted}", tenant, None, kit.topic_prefix)
        await executor.start()  # before: AttributeError: 'str' object has no attribute 'get'
        try:
            status = await login.fetchval("SELECT status FROM executor.actions WHERE action_id = $1", interrupted)
            assert status != "running", "the genuine interrupted refund was not settled"
            assert await login.fetchval("SELECT status FROM executor.actions WHERE action_id = $1", junk) == "running"
            assert refused() > before
            told = [r.getMessage() for r in caplog.records if junk in r.getMessage()]
            assert told, "the refused row is not logged"
            assert "AttributeError" in told[0]
        finally:
            await executor.stop()
    finally:  # the session's database is shared: later executors would refuse the row at each start
        await login.execute("DELETE FROM executor.actions WHERE action_id = ANY($1::text[])", [junk, interrupted])
        await login.close()
