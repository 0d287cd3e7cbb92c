"""An authorization the executor failed on (a bug, since fixed) is redriven by the on-call and runs, once.

The record goes back to `actions.authorized` as the policy signed it, logged in as `policy` (the topic's one writer):
the executor verifies the policy's signature as always. Redriven again, it is answered from its claim: no second refund.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from redrive_helpers import audit_service, dead_letters, listed

from servicekit import Bus, KitSettings, ServiceProcess, operator_key
from services.executor.executor import Executor

pytestmark = pytest.mark.timeout(240)

REFUND = {"payee_id": "cus_1001", "amount_usd": 10.0, "order_id": "O-5001"}


async def test_an_authorization_the_executor_failed_on_runs_once_when_redriven_after_the_fix(
    kit: KitSettings,
    executor: ServiceProcess,
    publisher: Bus,
    listener: Any,
    authorize: Any,
    pool: asyncpg.Pool,
    tenant: str,
    wait_for: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bug = {"on": True}
    real = Executor.handle

    async def handle(self: Executor, event: Any) -> None:
        if bug["on"]:
            raise ValueError("a bug in the executor")
        await real(self, event)

    monkeypatch.setattr(Executor, "handle", handle)
    operator_key(kit)
    audit = audit_service(kit)
    await audit.start()
    try:
        event = authorize(tenant, "issue_refund", REFUND)
        await publisher.publish("actions.authorized", event)
        [dead] = await listed(kit, wait_for, event.data.task_id)
        assert (dead["service"], dead["code"], dead["topic"]) == ("executor", "handler_error", "actions.authorized")

        dry = await dead_letters(kit, "redrive", dead["id"], "--reason", "INC-2", "--dry-run")
        assert dry.exit_code == 0, dry.output
        assert f"to {kit.topic_prefix}actions.authorized as `policy`" in " ".join(dry.stdout.split())

        bug["on"] = False  # the fix deployed
        result = await dead_letters(kit, "redrive", dead["id"], "--reason", "INC-2: fix deployed", "--yes")
        assert result.exit_code == 0, result.output
        [done] = await wait_for(lambda: listener.for_action(event.data.action_id), timeout=60, what="the refund's result")
        assert done.type == "tidegate.action.succeeded"

        # Once the audit holds the signed success, the dead letter is listed as handled and is not sent again, even
        # with --again: the call ran (attacker3 F3: a dead letter of a record whose action succeeded is never redriven).
        async def handled() -> dict[str, Any] | None:
            [row] = [r for r in await listed(kit, wait_for, event.data.task_id) if r["id"] == dead["id"]]
            return row if row.get("ran") else None

        await wait_for(handled, timeout=60, what="the dead letter listed as handled")
        again = await dead_letters(kit, "redrive", dead["id"], "--reason", "INC-2 again", "--yes", "--again")
        assert again.exit_code != 0, again.output
        assert "its record was handled" in " ".join(again.output.split()), again.output
        assert [r.id for r in listener.for_action(event.data.action_id)] == [done.id]  # nothing sent: no second answer
        rows = await pool.fetch("SELECT * FROM payments.refunds WHERE tenant_id = $1", tenant)
        assert len(rows) == 1  # one refund, however often the authorization came
    finally:
        await audit.stop()
