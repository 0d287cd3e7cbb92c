"""A refund escalated and decided by a human since the backup: after `tidegate db catch-up` the task ends as it did.

Demo ticket T-1002 asks a refund of 899 USD, over acme's 500 threshold: the refund step escalates. The backup is taken at
the first step (no executor runs yet); then the task runs on, a finance approver grants (or rejects) the refund through
the approval service, the policy decides again after a grant and the executor pays, and the task ends. Restored, the
planner's database holds the task at its first step, while the bus holds, on four topics, everything since: a replay
that reads those topics side by side would meet the human's answer before the step it answers (the results of the
steps before it not handled yet) and pass it by, and the refund, proposed again, gets the policy's recorded escalation
only (nothing publishes the grant, or the rejection, again): the task would wait for a person who has answered. The
catch-up hands the planner those events in the order the broker appended them: the task ends as it did (its counts,
human touches, steps and summary), before any service starts, nothing is paid, called or published again.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from bus_helpers import Collector
from planner_restore_helpers import PAID, as_ended, dump, ended, planner_caught_up, restore
from signers import SigningBus

from schemas import TaskSubmitted
from servicekit import KitSettings, create_pool
from services.approval import auth
from services.approval.app import build as build_approval
from services.approval.settings import ApprovalSettings
from services.executor.app import build as build_executor
from services.planner import PlannerSettings
from services.planner.app import build as build_planner
from services.policy.app import build as build_policy
from systems.seed import TICKETS
from tidegate.demo.tickets import ticket_task
from tidegate.ops.catch_up import catch_up

pytestmark = pytest.mark.timeout(300)  # four services on two shared cores; polls end at the first answer

# Short steps: a task the restore left behind fails `step_timeout` within seconds of the planner's start, not minutes.
SHORT_STEPS = PlannerSettings(step_timeouts_s={}, step_timeout_default_s=20.0, step_timeout_check_s=0.5)
STEP = "SELECT status FROM planner.steps WHERE tenant_id = 'acme' AND task_id = $1 AND step = $2"


@pytest.mark.parametrize("answer", ["approve", "reject"])
async def test_a_refund_a_human_decided_after_the_backup_ends_as_it_did_after_the_catch_up(
    own_database: tuple[KitSettings, str], wait_for: Any, tmp_path: Path, answer: str
) -> None:
    kit, admin_url = own_database
    task = ticket_task(next(t for t in TICKETS if t.ticket_id == "T-1002"), task_id=f"restore-{uuid.uuid4().hex[:8]}")
    backup = tmp_path / "backup.dump"
    pool = await create_pool(kit.operator_database_url, max_size=2)
    client = SigningBus(kit, "restore-test")
    outcomes = Collector(kit, ["tasks.outcomes"])
    await client.start()
    await outcomes.start()
    approval = build_approval(kit, ApprovalSettings(http_port=0))
    policy, planner, executor = build_policy(kit), build_planner(kit, SHORT_STEPS), build_executor(kit)
    token = auth.new_token()
    http = httpx.AsyncClient(timeout=10, headers={"Authorization": f"Bearer {token}"})
    try:
        for svc in (approval, policy, planner):
            await svc.start()
        await approval.approval.repo.add_token(auth.hash_token(token), "fin@acme.example", "acme", ["finance"])
        http.base_url = httpx.URL(approval.http_url)
        await client.publish("tasks", TaskSubmitted.build(task, source="tidegate/test"))
        await wait_for(lambda: _status(pool, task.task_id, 1, "allowed"), what="the first step allowed (no executor runs)", timeout=60)
        dump(admin_url, backup)

        await executor.start()
        request = await wait_for(lambda: _pending(http, task.task_id), what="the refund's approval request", timeout=90)
        decided = await http.post(
            f"/api/v1/approvals/{request['approval_id']}/{answer}",
            json={"action_digest": request["action_digest"], "comment": f"{answer}d by the test"},
        )
        assert decided.status_code == 200, decided.text
        await wait_for(lambda: ended(pool, task.task_id), what="the task ended before the restore", timeout=90)
        before = await as_ended(pool, task.task_id)
        steps = {s[2]: s[3] for s in before[1]}
        assert steps["issue_refund"] == ("succeeded" if answer == "approve" else "rejected"), before
        assert await pool.fetchval(PAID, task.input["order_id"]) == (1 if answer == "approve" else 0)
        await _published(pool, outcomes, task.task_id, wait_for)
    finally:
        await http.aclose()
        for svc in (executor, planner, policy, approval):
            await svc.stop()
        await pool.close()

    restore(admin_url, backup)
    said: list[str] = []
    await catch_up(kit, say=said.append)

    pool = await create_pool(kit.operator_database_url, max_size=2)
    policy, planner, executor = build_policy(kit), build_planner(kit, SHORT_STEPS), build_executor(kit)
    try:
        for svc in (policy, executor, planner):
            await svc.start()
        await wait_for(lambda: ended(pool, task.task_id), what="the task ended after the restore", timeout=90)
        assert await as_ended(pool, task.task_id) == before, said  # its counts, human touches, steps and summary as they were
        assert executor.executor.calls == 0  # nothing called again
        assert await pool.fetchval(PAID, task.input["order_id"]) == 0  # the restored payments hold none: none paid again
        await wait_for(lambda: planner_caught_up(kit), what="the planner's group at the end of every topic it reads", timeout=90)
        assert len(await _published(pool, outcomes, task.task_id, wait_for)) == 1, said  # its outcome was published once
    finally:
        await client.stop()
        await outcomes.stop()
        for svc in (planner, executor, policy):
            await svc.stop()
        await pool.close()


async def _status(pool: Any, task_id: str, step: int, status: str) -> bool:
    return await pool.fetchval(STEP, task_id, step) == status


async def _pending(http: httpx.AsyncClient, task_id: str) -> dict[str, Any] | None:
    listed = (await http.get("/api/v1/approvals", params={"status": "pending"})).json()
    return next((a for a in listed if a["task_id"] == task_id), None)


async def _published(pool: Any, outcomes: Collector, task_id: str, wait_for: Any) -> list[Any]:
    """The task's outcomes on `tasks.outcomes`, once the planner's outbox holds nothing of the task (all it stored went out)."""
    unsent = "SELECT count(*) FROM planner.outbox WHERE tenant_id = 'acme' AND task_id = $1"

    async def sent() -> list[Any] | None:
        found = [e for e in outcomes.events["tasks.outcomes"] if e.data.task_id == task_id]
        return found if found and await pool.fetchval(unsent, task_id) == 0 else None

    return await wait_for(sent, what="the task's outcome published", timeout=60)  # type: ignore[no-any-return]
