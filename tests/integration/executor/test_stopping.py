"""A real executor process stopped (SIGTERM) between two attempts of a call unsafe to repeat, then started again."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from servicekit import Bus
from tests.integration.executor.conftest import ledger_entry_tool


async def test_a_stop_during_the_backoff_leaves_the_call_to_the_next_process_not_to_a_person(
    spawn_executor: Any,
    http_stub: Any,
    make_tools_dir: Any,
    publisher: Bus,
    listener: Any,
    authorize: Any,
    pool: asyncpg.Pool,
    tenant: str,
    wait_for: Any,
) -> None:
    async def busy_once(request: dict[str, Any]) -> Any:
        if len(ledger.requests) == 1:
            return 429, {"error": "rate limited"}, {"Retry-After": "30"}  # refused: certainly not posted
        return 200, {"entry": "E-1"}

    ledger = await http_stub(busy_once)
    tools = make_tools_dir(ledger_entry_tool(ledger.url, retry={"max_attempts": 3, "backoff_initial_s": 1, "backoff_max_s": 60}))
    first = await spawn_executor(tools, log_level="INFO")
    event = authorize(tenant, "post_ledger_entry", {"amount_usd": 250.0})
    await publisher.publish("actions.authorized", event)
    row_sql = (
        "SELECT status, attempts, retry_at > now() + interval '20 seconds' AS honours_retry_after "
        "FROM executor.actions WHERE action_id = $1"
    )
    waiting = await wait_for(lambda: _row_if(pool, row_sql, event.data.action_id, "waiting"), timeout=30, what="the action waiting")
    assert (waiting["attempts"], waiting["honours_retry_after"]) == (1, True)  # the ledger's Retry-After, not the 1 s backoff

    stopping = time.monotonic()
    await asyncio.to_thread(first.stop)  # SIGTERM, as `tidegate down` and every supervisor send it
    print(f"\nstopped in {time.monotonic() - stopping:.1f} s with the action waiting for its next attempt")
    assert len(ledger.requests) == 1  # no attempt started during the stop's grace
    # ... nor did the stop wait its grace for the parked action: its batch ended as soon as nothing else was at work
    assert "parked while the process stops" in first.log.read_text()
    assert listener.for_action(event.data.action_id) == []
    await pool.execute("UPDATE executor.actions SET retry_at = now() WHERE action_id = $1", event.data.action_id)  # the wait is over

    await spawn_executor(tools)
    [result] = await wait_for(lambda: listener.for_action(event.data.action_id), timeout=60, what="the action's result")
    assert (result.type, result.data.attempts) == ("tidegate.action.succeeded", 2)  # before: unknown, `interrupted`, for a person
    assert len(ledger.requests) == 2


async def _row_if(pool: asyncpg.Pool, sql: str, action_id: str, status: str) -> asyncpg.Record | None:
    row = await pool.fetchrow(sql, action_id)
    return row if row is not None and row["status"] == status else None
