"""Four eyes refuses the task's requester as well as the proposal's: Bob may not approve an outside agent's refund in his task.

As an outside review found (security5 F3): an outside agent's proposal names the agent as `requested_by` (it signs it), so
the request named the agent and Bob, who submitted the task, approved its refund. The policy's escalation now names the
task's signed requester too (`task_requested_by`), and the approval service refuses either, in any spelling.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from test_approval_domain import GROUPS, NOW, approve, decided

from schemas import ActionResultData, ApprovalData
from services.approval import domain
from services.approval.domain import ApprovalRecord, Approver, Refusal, Transition, Vote

AGENT, BOB_SUBMITTED = "agent@acme.example", "Bob@Acme.example"


def request(**over: Any) -> ApprovalRecord:
    data = decided(**({"requested_by": AGENT} | over))
    record = domain.request_from_decision(data, approval_id="ap-1", now=NOW, ttl=timedelta(hours=1), groups=GROUPS, risk="financial")
    assert record is not None
    return record


def finance(name: str) -> Approver:
    return Approver(approver=name, tenant_id="acme", groups=frozenset({"finance"}))


def test_the_request_names_both_requesters_and_its_event_carries_them() -> None:
    record = request(task_requested_by=BOB_SUBMITTED)
    assert (record.requested_by, record.task_requested_by) == (AGENT, BOB_SUBMITTED)
    assert domain.requesters(record) == (AGENT, BOB_SUBMITTED)
    asked = domain.unsigned_request(record)
    assert (asked.requested_by, asked.task_requested_by) == (AGENT, BOB_SUBMITTED)


@pytest.mark.parametrize("bob", ["Bob@Acme.example", "bob@acme.example", " BOB@ACME.EXAMPLE ", "\uff42ob@acme.example"])
def test_bob_may_not_approve_the_agents_refund_in_his_task(bob: str) -> None:
    refused = approve(request(task_requested_by=BOB_SUBMITTED), finance(bob))
    assert isinstance(refused, Refusal)
    assert (refused.code, refused.status) == ("four_eyes", 403)
    assert domain.check_access(request(task_requested_by=BOB_SUBMITTED), finance(bob), GROUPS) == refused


def test_nor_the_agent_and_another_approver_still_may() -> None:
    record = request(task_requested_by=BOB_SUBMITTED)
    refused = approve(record, finance(AGENT.upper()))
    assert isinstance(refused, Refusal)
    assert refused.code == "four_eyes"
    granted = approve(record, finance("carol@acme.example"))
    assert isinstance(granted, Transition)
    assert granted.event_type == domain.GRANTED


def test_a_task_nobody_submitted_keeps_the_proposals_rule_and_bob_may_not_reject_his_own_either() -> None:
    unlearned = request()  # the policy had not learned the task: the proposal's requester only, as before
    assert unlearned.task_requested_by is None
    assert isinstance(approve(unlearned, finance("bob@acme.example")), Transition)
    rejecting = Vote(decision="reject")
    refused = domain.decide(request(task_requested_by=BOB_SUBMITTED), finance("bob@acme.example"), rejecting, now=NOW, groups=GROUPS)
    assert isinstance(refused, Refusal)
    assert refused.code == "four_eyes"  # neither does a requester reject their own task's call: four eyes, as for the proposal's


def test_a_request_naming_only_the_tasks_requester_is_decidable() -> None:
    record = request(requested_by=None, task_requested_by=BOB_SUBMITTED)
    assert isinstance(approve(record, finance("carol@acme.example")), Transition)
    refused = approve(record, finance("bob@acme.example"))
    assert isinstance(refused, Refusal)
    assert refused.code == "four_eyes"


def test_a_re_proposal_keeps_a_requester_it_learned_since_and_old_records_still_read() -> None:
    first = request()
    fresh = request(task_requested_by=BOB_SUBMITTED, args={"payee_id": "cus_1", "amount_usd": 800.0, "order_id": "O-1"})
    refreshed = domain.refresh_request(first, fresh.model_copy(update={"approval_id": "ap-2"}))
    assert refreshed is not None
    assert refreshed.task_requested_by == BOB_SUBMITTED
    stored = first.model_dump(mode="json")
    stored.pop("task_requested_by")  # as a request stored before the field was
    assert ApprovalRecord.model_validate(stored).task_requested_by is None
    sent = domain.unsigned_request(first).model_dump(mode="json")
    sent.pop("task_requested_by")  # as an event published before the field was
    assert ApprovalData.model_validate(sent).task_requested_by is None


def test_a_follow_up_inherits_the_tasks_requester() -> None:
    record = request(task_requested_by=BOB_SUBMITTED)
    result = ActionResultData(
        action_id="a-1", task_id="t-1", tenant_id="acme", tool="issue_refund", status="unknown", attempts=1, duration_ms=1.0,
        idempotency_key="a-1",
    )  # fmt: skip
    follow = domain.follow_up_from_result(
        result, approval_id="fu-1", now=NOW, ttl=timedelta(hours=1), risk="financial", requested_by=AGENT, args=record.args,
        requested_call=record,
    )  # fmt: skip
    refused = domain.check_access(follow, finance("bob@acme.example"), GROUPS)
    assert refused is not None
    assert refused.code == "four_eyes"
