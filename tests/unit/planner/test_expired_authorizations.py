"""An authorization the executor refused as expired before any call: the planner proposes the call again, bounded.

Found by an outside probe (an executor down for 5 min 15 s): every task in flight failed `tool_failed` though no tool
was called, and a human-approved refund was silently dropped. Now the step is proposed again as a new action that
policy decides afresh (a human is asked again), a bounded number of times, and the task fails `authorization_expired`
past the bound; a refusal is counted `refused`, never `failed`.
"""

from __future__ import annotations

from typing import Any

from schemas import ActionFailed, ActionResultData, ErrorInfo, TaskSubmittedData
from systems.seed import TICKETS
from tidegate.demo.tickets import ticket_task

TICKET = {t.ticket_id: t for t in TICKETS}


def task(ticket_id: str) -> TaskSubmittedData:
    return ticket_task(TICKET[ticket_id], task_id=f"t-{ticket_id}")


async def refuse(harness: Any, proposal: Any, code: str = "authorization_expired", *, attempts: int = 0, event: Any = None) -> Any:
    """Publish the executor's refusal of `proposal`'s authorization (no call made), or a redelivery of `event`."""
    if event is None:
        data = ActionResultData(
            action_id=proposal.action_id,
            task_id=proposal.task_id,
            tenant_id=proposal.tenant_id,
            step=proposal.step,
            tool=proposal.tool,
            status="failed",
            error=ErrorInfo(type=code, message=f"{code} at 2026-01-01T00:05:00+00:00"),
            attempts=attempts,
            duration_ms=0.0,
        )
        event = ActionFailed.build(data, source="test")
    await harness.handlers.on_result(event)
    return event


async def test_an_expired_authorization_proposes_the_same_call_again_as_a_new_action_and_the_task_goes_on(harness):
    await harness.submit(task("T-1007"))
    first = harness.last()
    await harness.decide(first, "allow", "low_risk_write_allowed")
    await refuse(harness, first)
    again = harness.last()
    assert (again.tool, again.args, again.tainted_args) == (first.tool, first.args, first.tainted_args)
    assert again.action_id != first.action_id  # the executor's record closed the old id for good
    assert again.action_id == harness.handlers.ids.of("acme", "t-T-1007", 2)
    assert again.repeats == first.action_id  # the link the audit shows
    assert again.rationale.startswith(f"Proposed again (2 of 3): the authorization of {first.action_id} expired before any executor ran it")
    assert harness.outcomes() == []
    await harness.run_allowed(again)
    await harness.run_allowed(harness.last())
    await harness.run_allowed(harness.last())
    [outcome] = harness.outcomes()
    assert outcome.type == "tidegate.task.completed"
    counts = outcome.data.counts
    assert (counts.refused, counts.failed, counts.succeeded, counts.proposed) == (1, 0, 3, 4)
    assert "tag_ticket refused (authorization_expired)" in outcome.data.summary


async def test_past_the_bound_the_task_fails_authorization_expired_never_tool_failed(harness):
    await harness.submit(task("T-1007"))
    for _ in range(3):  # proposed once and again twice (the default bound)
        proposal = harness.last()
        await harness.decide(proposal, "allow", "low_risk_write_allowed")
        await refuse(harness, proposal)
    assert [p.tool for p in harness.proposals()] == ["tag_ticket"] * 3
    [outcome] = harness.outcomes()
    assert outcome.type == "tidegate.task.failed"
    assert outcome.data.reason == "authorization_expired"
    assert "proposed 3 time(s), each authorization expired before an executor ran it" in outcome.data.summary
    assert (outcome.data.counts.refused, outcome.data.counts.failed) == (3, 0)


async def test_the_bound_is_a_setting_and_zero_fails_at_once(harness):
    harness.handlers.proposals_again = 0
    await harness.submit(task("T-1007"))
    first = harness.last()
    await harness.decide(first, "allow")
    await refuse(harness, first)
    assert len(harness.proposals()) == 1
    assert harness.outcomes()[0].data.reason == "authorization_expired"


async def test_a_human_approved_call_whose_authorization_expired_is_proposed_again_with_the_args_granted(harness):
    await harness.submit(task("T-1001"))
    await harness.run_allowed(harness.last())  # tag
    await harness.run_allowed(harness.last())  # note
    await harness.run_allowed(harness.last())  # lookup
    refund = harness.last()
    assert refund.tool == "issue_refund"
    await harness.decide(refund, "escalate", "needs_human_approval")
    await harness.approval(refund, "requested")
    edited = {**refund.args, "amount_usd": 10.0}
    await harness.approval(refund, "granted", ["bob@acme.example"], edited_args=edited)
    await harness.decide(refund, "allow", "approved_by_human", via="approval")
    await refuse(harness, refund)
    again = harness.last()
    assert (again.tool, again.args, again.repeats) == ("issue_refund", edited, refund.action_id)
    assert f"a person is asked again (the approval ap-{refund.action_id} could not be carried out)" in again.rationale
    await harness.decide(again, "escalate", "needs_human_approval")  # policy's fresh decision: a human again
    state = await harness.repo.get(again.tenant_id, again.task_id)
    assert state.status == "waiting_human"
    assert harness.outcomes() == []


async def test_other_refusals_are_not_proposed_again_and_the_task_fails_with_the_refusal_not_tool_failed(harness):
    await harness.submit(task("T-1007"))
    first = harness.last()
    await harness.decide(first, "allow")
    await refuse(harness, first, "kill_switch")
    assert len(harness.proposals()) == 1
    [outcome] = harness.outcomes()
    assert outcome.data.reason == "kill_switch"
    assert "the executor refused the call before making it (kill_switch: " in outcome.data.summary


async def test_a_call_made_that_failed_is_still_a_tool_failure(harness):
    await harness.submit(task("T-1007"))
    first = harness.last()
    await harness.decide(first, "allow")
    await refuse(harness, first, "authorization_expired", attempts=1)  # a retry the expiry stopped: a call was made
    assert len(harness.proposals()) == 1
    assert harness.outcomes()[0].data.reason == "tool_failed"


async def test_a_redelivered_refusal_proposes_again_once(harness):
    await harness.submit(task("T-1007"))
    first = harness.last()
    await harness.decide(first, "allow")
    event = await refuse(harness, first)
    await refuse(harness, first, event=event)  # the same event again: already applied
    await refuse(harness, first)  # another copy (new event id) of the result: the step has its outcome
    assert len(harness.proposals()) == 2


async def test_a_refusal_that_overtakes_its_decision_is_handled(harness):
    await harness.submit(task("T-1007"))
    first = harness.last()
    await refuse(harness, first)  # the result topic was read before the decision
    await harness.decide(first, "allow")
    assert len(harness.proposals()) == 2
    state = await harness.repo.get(first.tenant_id, first.task_id)
    assert [s.status for s in state.steps] == ["refused", "proposed"]
    assert state.counts.allowed == 1
