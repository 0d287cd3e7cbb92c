"""The planner's state machine through its handlers, on the in-memory repository."""

from __future__ import annotations

import pytest

from schemas import TaskSubmittedData
from servicekit import EventOutlet
from systems.seed import TICKETS
from tidegate.demo.tickets import ticket_task

TICKET = {t.ticket_id: t for t in TICKETS}


def task(ticket_id: str, **kw) -> TaskSubmittedData:
    return ticket_task(TICKET[ticket_id], task_id=f"t-{ticket_id}", **kw)


async def test_proposes_one_action_at_a_time_and_completes_with_cost(harness):
    await harness.submit(task("T-1007"))
    assert [p.tool for p in harness.proposals()] == ["tag_ticket"]
    first = harness.last()
    assert first.action_id == harness.handlers.ids.of("acme", "t-T-1007", 1)  # `t-T-1007:1.<tag>`
    assert (first.mode, first.requested_by, first.budget_usd) == ("autonomous", "demo@acme.example", 5.0)
    assert (first.proposer, first.confidence) == ("tidegate/planner/playbook", 1.0)  # a playbook is sure of its steps
    await harness.run_allowed(first, usd=0.0002)
    assert [p.tool for p in harness.proposals()] == ["tag_ticket", "add_internal_note"]
    await harness.run_allowed(harness.last(), usd=0.0002)
    await harness.run_allowed(harness.last(), usd=0.0002)
    [outcome] = harness.outcomes()
    assert outcome.type == "tidegate.task.completed"
    data = outcome.data
    assert data.counts.proposed == 3
    assert data.counts.allowed == 3
    assert data.counts.succeeded == 3
    assert data.cost.tools == pytest.approx(0.0006)
    # submitted + 3 x (proposed, decided, result) + completed = 11 events at 0.001
    assert data.cost.orchestration == pytest.approx(0.011)
    assert data.cost.total == pytest.approx(0.0116)
    assert data.human_touches == 0
    assert data.cost.human_review == 0


async def test_read_tool_costs_are_retrieval_and_extra_attempts_are_retries(harness):
    await harness.submit(task("T-1001"))
    await harness.run_allowed(harness.last())  # tag
    await harness.run_allowed(harness.last())  # note
    lookup = harness.last()
    assert lookup.tool == "lookup_order"
    await harness.decide(lookup, "allow", "read_allowed")
    await harness.result(lookup, usd=0.0003, attempts=3)
    refund = harness.last()
    assert refund.tool == "issue_refund"
    assert refund.tainted_args == []
    await harness.decide(refund, "allow", "within_threshold")
    await harness.result(refund, usd=0.02, attempts=2)
    await harness.run_allowed(harness.last())  # reply
    cost = harness.outcomes()[0].data.cost
    assert cost.retrieval == pytest.approx(0.0001)
    assert cost.tools == pytest.approx(0.01)
    assert cost.retries == pytest.approx(0.0002 + 0.01)


async def test_denied_refund_is_replanned_into_a_handoff(harness):
    await harness.submit(task("T-1003"))
    for _ in range(3):
        await harness.run_allowed(harness.last())
    refund = harness.last()
    assert refund.tool == "issue_refund"
    assert refund.args["payee_id"] == "acct_new_7731"
    assert refund.tainted_args == ["payee_id"]
    await harness.decide(refund, "deny", "new_payee_blocked")
    note = harness.last()
    assert note.tool == "add_internal_note"
    assert "new_payee_blocked" in note.args["note"]
    await harness.run_allowed(note)
    reply = harness.last()
    assert reply.tool == "draft_reply"
    assert "follow up" in reply.args["body"]
    await harness.run_allowed(reply)
    [outcome] = harness.outcomes()
    assert outcome.type == "tidegate.task.completed"
    assert outcome.data.counts.denied == 1
    # the confirmation reply of the original plan was replaced, never proposed
    assert not any("we have refunded" in p.args.get("body", "") for p in harness.proposals())


async def test_denied_step_without_alternative_fails_the_task_with_the_reason(harness):
    await harness.submit(task("T-1007"))
    await harness.decide(harness.last(), "deny", "kill_switch")
    [outcome] = harness.outcomes()
    assert outcome.type == "tidegate.task.failed"
    assert outcome.data.reason == "kill_switch"
    assert len(harness.proposals()) == 1


async def test_escalation_waits_for_a_human_then_runs_after_the_grant(harness):
    await harness.submit(task("T-1002"))
    for _ in range(3):
        await harness.run_allowed(harness.last())
    refund = harness.last()
    await harness.decide(refund, "escalate", "needs_human_approval")
    await harness.approval(refund, "requested")
    state = await harness.repo.get("acme", "t-T-1002")
    assert state.status == "waiting_human"
    assert state.current.approval_id == f"ap-{refund.action_id}"
    assert len(harness.proposals()) == 4
    assert not harness.outcomes()
    await harness.approval(refund, "granted", approvers=["bob@acme.example"])
    await harness.decide(refund, "allow", "approved_by_human", via="approval")
    await harness.result(refund, usd=0.01)
    await harness.run_allowed(harness.last())
    [outcome] = harness.outcomes()
    data = outcome.data
    assert outcome.type == "tidegate.task.completed"
    assert (data.counts.escalated, data.counts.approved, data.counts.allowed, data.human_touches) == (1, 1, 5, 1)
    assert data.cost.human_review == pytest.approx(5.0)  # 6 minutes at 50 USD/h


@pytest.mark.parametrize(("kind", "code"), [("rejected", "approval_rejected"), ("expired", "approval_expired")])
async def test_rejected_or_expired_approval_is_replanned(harness, kind, code):
    await harness.submit(task("T-1002"))
    for _ in range(3):
        await harness.run_allowed(harness.last())
    refund = harness.last()
    await harness.decide(refund, "escalate", "needs_human_approval")
    await harness.approval(refund, kind, approvers=["bob@acme.example"] if kind == "rejected" else None)
    note = harness.last()
    assert note.tool == "add_internal_note"
    assert code in note.args["note"]
    state = await harness.repo.get("acme", "t-T-1002")
    assert state.human_touches == (1 if kind == "rejected" else 0)
    assert getattr(state.counts, kind) == 1


async def test_result_overtaking_its_decision_still_advances_once(harness):
    await harness.submit(task("T-1007"))
    first = harness.last()
    await harness.result(first)
    await harness.decide(first, "allow", "low_risk_write_allowed")
    assert [p.tool for p in harness.proposals()] == ["tag_ticket", "add_internal_note"]
    state = await harness.repo.get("acme", "t-T-1007")
    assert state.counts.allowed == 1
    assert state.counts.succeeded == 1


async def test_redelivered_events_change_nothing_and_publish_nothing_new(harness):
    submitted = await harness.submit(task("T-1007"))
    await harness.handlers.on_task(submitted)
    first = harness.last()
    decided = await harness.decide(first, "allow", "low_risk_write_allowed")
    result = await harness.result(first)
    before = len(harness.published)
    await harness.handlers.on_decided(decided)
    await harness.handlers.on_result(result)
    await harness.handlers.on_task(submitted)
    assert len(harness.published) == before
    ids = [p.action_id for p in harness.proposals()]
    assert len(ids) == len(set(ids)) == 2


async def test_a_crash_before_publishing_republishes_the_same_events_on_redelivery(harness):
    submitted = task("T-1007")
    from schemas import TaskSubmitted

    event = TaskSubmitted.build(submitted, source="test")
    lost: list = []

    async def crash(topic, ev):
        lost.append(ev)
        raise ConnectionError("broker gone")

    harness.handlers.out = EventOutlet(crash)
    with pytest.raises(ConnectionError):
        await harness.handlers.on_task(event)
    harness.handlers.out = EventOutlet(harness._publish)
    await harness.handlers.on_task(event)
    [(_, again)] = harness.published
    assert again.id == lost[0].id
    assert again.data.action_id == lost[0].data.action_id


async def test_failed_call_fails_the_task_and_unknown_outcome_is_left_to_a_human(harness):
    await harness.submit(task("T-1007"))
    first = harness.last()
    await harness.decide(first, "allow")
    await harness.result(first, "failed")
    assert harness.outcomes()[0].data.reason == "tool_failed"
    await harness.submit(task("T-1008"))
    other = harness.last()
    await harness.decide(other, "allow")
    await harness.result(other, "unknown")
    assert harness.outcomes()[1].data.reason == "outcome_unknown"


async def test_tasks_planned_by_an_outside_agent_are_ignored(harness):
    outside = task("T-1007").model_copy(update={"planner": "external:byoa"})
    await harness.submit(outside)
    assert harness.published == []
    assert await harness.repo.get(outside.tenant_id, outside.task_id) is None


async def test_unknown_workflow_fails_closed(harness):
    bad = task("T-1007").model_copy(update={"workflow": "mystery"})
    await harness.submit(bad)
    [outcome] = harness.outcomes()
    assert outcome.data.reason == "unknown_workflow"


async def test_decisions_on_actions_of_other_agents_are_ignored(harness):
    await harness.submit(task("T-1007"))
    foreign = harness.last().model_copy(update={"action_id": "someone-else:1", "task_id": "other-task"})
    await harness.decide(foreign, "deny", "no_permit")
    assert len(harness.published) == 1


async def test_decisions_and_results_of_another_tenant_on_our_action_id_are_ignored(harness):
    await harness.submit(task("T-1007"))
    ours = harness.last()
    squatted = ours.model_copy(update={"tenant_id": "globex"})  # another tenant's events naming our task and action id
    await harness.decide(squatted, "deny", "no_permit")
    await harness.result(squatted, "failed")
    assert len(harness.published) == 1
    assert (await harness.repo.get(ours.tenant_id, ours.task_id)).status == "running"
    await harness.run_allowed(ours, usd=0.0002)  # our own decision still moves the task on
    assert [p.tool for p in harness.proposals()] == ["tag_ticket", "add_internal_note"]
