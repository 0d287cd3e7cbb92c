"""A planner's proposal waits for its task past the usual wait while the consumer that learns tasks is retrying.

An SRE probe stopped PostgreSQL under load: once it came back, the proposals were decided at once while the `tasks`
consumer still waited out its backoff (up to 5 s), longer than the 2 s a proposal waits for its task, so 16 of 23
autonomous tasks were decided `draft_mode` ("the task runs in draft mode") and went to humans.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from test_policy_provenance import onboarded_service

from schemas import ActionProposed, ActionProposedData, TaskSubmitted, TaskSubmittedData
from services.policy.service import PolicyService
from services.policy.settings import PolicySettings

NOTE = {"ticket_id": "T-1001", "note": "triaged"}  # write_low with an undo: alone when autonomous


async def _service(tmp_path: Path, held: list[bool]) -> PolicyService:
    return await onboarded_service(
        tmp_path, settings=PolicySettings(provenance_wait_s=0.2), planned=lambda event: True, inputs_held=lambda: held[0]
    )


async def _decided_while_the_task_comes_late(svc: PolicyService, held: list[bool]) -> list[str]:
    data = ActionProposedData(
        action_id="t-1:1", task_id="t-1", tenant_id="acme", step=1, tool="add_internal_note", args=NOTE,
        proposer="tidegate/planner/playbook", requested_by="ann@acme.example", mode="autonomous",
    )  # fmt: skip
    request = TaskSubmittedData(
        task_id="t-1", tenant_id="acme", workflow="support_triage", input={"ticket_id": "T-1001"}, requested_by="ann@acme.example",
        mode="autonomous",
    )  # fmt: skip

    async def tasks_consumer_after_its_backoff() -> None:
        await asyncio.sleep(0.6)  # three times the proposal's own wait
        await svc.on_tasks([TaskSubmitted.build(request, source="tidegate/cli")])
        held[0] = False

    late = asyncio.create_task(tasks_consumer_after_its_backoff())
    decided = (await svc.on_proposed(ActionProposed.build(data, source="tidegate/planner"))).decided
    await late
    assert decided is not None
    return [r.code.value for r in decided.data.reasons]


async def test_a_proposal_waits_for_its_task_while_the_tasks_consumer_retries(tmp_path: Path) -> None:
    held = [True]
    assert await _decided_while_the_task_comes_late(await _service(tmp_path, held), held) == ["low_risk_write_allowed"]


async def test_with_nothing_held_it_still_fails_closed_after_its_wait(tmp_path: Path) -> None:
    held = [False]
    assert await _decided_while_the_task_comes_late(await _service(tmp_path, held), held) == ["draft_mode"]


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.policy import service

    monkeypatch.setattr(service, "HELD_WAIT_S", 5.0)
