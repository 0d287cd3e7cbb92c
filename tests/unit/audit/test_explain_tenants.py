"""`tidegate audit explain` never mixes two tenants' tasks of one id (security review 5, F4).

Before, globex's `squat-T1001` and acme's were explained as one task: acme's header (tenant, requester, sources) over
globex's steps and outcome. Now a task id several tenants used is an error naming them, unless a tenant is given.
"""

from __future__ import annotations

from typing import Any

import pytest

import schemas as s
from schemas.examples import sample_events
from services.audit.explanation import explain_task
from services.audit.reading import SeveralTenants
from services.audit.repository import InMemoryAuditLog
from tidegate.audit_render import render_markdown

SQUATTED = "squat-T1001"
PREFIX = "tidegate."


def _submitted(tenant: str, requested_by: str, ticket: str) -> s.TaskSubmitted:
    data = s.TaskSubmittedData(
        task_id=SQUATTED, tenant_id=tenant, workflow="support_triage", input={"ticket_id": ticket}, requested_by=requested_by
    )
    return s.TaskSubmitted.build(data, source="tidegate/cli")


def _proposed(tenant: str, ticket: str) -> s.ActionProposed:
    data = s.ActionProposedData(
        action_id=f"{SQUATTED}:1.{tenant}", task_id=SQUATTED, tenant_id=tenant, step=1, tool="tag_ticket",
        args={"ticket_id": ticket}, proposer="tidegate/planner/playbook",
    )  # fmt: skip
    return s.ActionProposed.build(data, source="tidegate/planner")


def _failed(tenant: str, why: str) -> s.Envelope:
    sample = next(e for _, e in sample_events() if isinstance(e, s.TaskFailed))
    data = sample.data.model_copy(update={"task_id": SQUATTED, "tenant_id": tenant, "summary": why})
    return s.TaskFailed.build(data, source="tidegate/planner")


def _dead(tenant: str, raw: s.Envelope) -> s.EventRejected:
    data = s.EventRejectedData(
        tenant_id=tenant, task_id=SQUATTED, topic="tidegate.tasks", partition=0, offset=3, raw_value=s.encode(raw).decode(),
        code="task_id_reused", error="task id 'squat-T1001' of tenant acme is taken: agent@acme.example submitted it first",
        service="planner",
    )  # fmt: skip
    return s.EventRejected.build(data, source="tidegate/planner", subject=SQUATTED)


async def _log(make: Any, events: list[tuple[str, s.Envelope]]) -> InMemoryAuditLog:
    log = InMemoryAuditLog()
    records = [make(topic, s.encode(e), offset=n, key=e.key) for n, (topic, e) in enumerate(events)]
    records.append(make("tasks", b"<html>not an event</html>", offset=len(events), key=SQUATTED.encode()))  # names no tenant
    unreadable = s.EventRejectedData(
        task_id=SQUATTED, topic="tidegate.tasks", partition=0, offset=9, raw_value='{"subject": "squat-T1001"',
        code="invalid_event", error="undecodable", service="planner",
    )  # fmt: skip  # its tenant could not be read: `unknown`
    dead = s.EventRejected.build(unreadable, source="tidegate/planner", subject=SQUATTED)
    records.append(make("deadletter", s.encode(dead), offset=len(events) + 1, key=dead.key))
    await log.append(records)
    return log


async def test_a_task_id_of_two_tenants_is_explained_per_tenant_never_mixed(make: Any) -> None:
    log = await _log(
        make,
        [
            ("tasks", _submitted("globex", "agent@globex.example", "T-2001")),
            ("actions.proposed", _proposed("globex", "T-2001")),
            ("tasks.outcomes", _failed("globex", "tag_ticket failed: T-2001 does not exist")),
            ("tasks", _submitted("acme", "agent@acme.example", "T-1001")),
        ],
    )
    with pytest.raises(SeveralTenants) as several:
        await explain_task(log, SQUATTED, PREFIX)
    assert several.value.tenants == ["globex", "acme"]
    assert "used by 2 tenants: globex, acme; say whose (--tenant)" in str(several.value)

    acme = await explain_task(log, SQUATTED, PREFIX, tenant="acme")
    assert (acme.tenant_id, acme.requested_by, acme.sources, acme.actions, acme.status) == (
        "acme", "agent@acme.example", {"ticket_id": "T-1001"}, [], "open",
    )  # fmt: skip
    assert "T-2001" not in render_markdown(acme)
    assert {d.code for d in acme.dead_letters} == {"invalid_json", "invalid_event"}  # records naming no tenant: with either tenant's

    globex = await explain_task(log, SQUATTED, PREFIX, tenant="globex")
    assert (globex.tenant_id, globex.requested_by, globex.status) == ("globex", "agent@globex.example", "failed")
    assert [(a.tool, a.args) for a in globex.actions] == [("tag_ticket", {"ticket_id": "T-2001"})]
    assert "T-1001" not in render_markdown(globex)

    assert (await explain_task(log, SQUATTED, PREFIX, tenant="initech")).records == 0  # no row of that tenant: nothing


async def test_a_task_id_of_one_tenant_needs_no_tenant_and_shows_the_submission_that_runs(make: Any) -> None:
    mallory = _submitted("acme", "mallory@acme.example", "T-1003")
    log = await _log(
        make,
        [
            ("tasks", _submitted("acme", "agent@acme.example", "T-1001")),
            ("actions.proposed", _proposed("acme", "T-1001")),
            ("tasks", mallory),  # another requester's submission of the id: the planner dead-letters it
            ("deadletter", _dead("acme", mallory)),
        ],
    )
    x = await explain_task(log, SQUATTED, PREFIX)
    assert (x.tenant_id, x.requested_by, x.sources) == ("acme", "agent@acme.example", {"ticket_id": "T-1001"})
    assert "task_id_reused" in {d.code for d in x.dead_letters}
    md = render_markdown(x)
    assert "task_id_reused" in md
