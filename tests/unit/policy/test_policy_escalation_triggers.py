"""The rubric's escalation triggers through the policy service: low confidence, and the tool errors and retries of a task."""

from __future__ import annotations

from typing import Any

from test_policy_provenance import _decide, service  # noqa: F401  (the fixture)

from schemas import ActionFailed, ActionResultData, ActionSucceeded, ErrorInfo
from services.policy.service import PolicyService

TAG = {"ticket_id": "T-9", "tags": ["refund"]}


async def _result(svc: PolicyService, action_id: str, status: str, attempts: int = 1) -> None:
    error = ErrorInfo(type="timeout", message="helpdesk did not answer", retryable=True) if status == "failed" else None
    data = ActionResultData(
        action_id=action_id,
        task_id="t-1",
        tenant_id="acme",
        tool="tag_ticket",
        status=status,
        error=error,
        attempts=attempts,
        duration_ms=3,
    )
    event_type: Any = ActionFailed if status == "failed" else ActionSucceeded
    await svc.on_result(event_type.build(data, source="tidegate/executor"))


async def test_a_low_confidence_write_escalates_and_a_sure_one_does_not(service: PolicyService) -> None:  # noqa: F811
    unsure = await _decide(service, "a-1", "tag_ticket", TAG, confidence=0.3)
    sure = await _decide(service, "a-2", "tag_ticket", TAG, confidence=0.95)
    assert (unsure.outcome, [r.code.value for r in unsure.reasons]) == ("escalate", ["low_confidence"])
    assert sure.outcome == "allow"
    assert (unsure.facts["confidence"], sure.facts["confidence"]) == (0.3, 0.95)


async def test_repeated_tool_errors_in_a_task_escalate_its_further_writes(service: PolicyService) -> None:  # noqa: F811
    await _result(service, "a-1", "failed", attempts=1)
    after_one = await _decide(service, "a-2", "tag_ticket", TAG)
    await _result(service, "a-2", "failed", attempts=1)
    await _result(service, "a-2", "failed", attempts=1)  # a redelivered result counts once
    after_two = await _decide(service, "a-3", "tag_ticket", TAG)
    read = await _decide(service, "a-4", "get_ticket", {"ticket_id": "T-9"})
    assert after_one.outcome == "allow"
    assert (after_two.outcome, [r.code.value for r in after_two.reasons]) == ("escalate", ["repeated_tool_errors"])
    assert (after_two.facts["flow"]["tool_errors"], read.outcome) == (2, "allow")


async def test_authorizations_refused_before_any_call_are_no_tool_errors(service: PolicyService) -> None:  # noqa: F811
    """Two authorizations that expired while the executor was down (refused, 0 attempts) do not make the task's tools look failing."""
    await _result(service, "a-1", "failed", attempts=0)
    await _decide(service, "a-2", "tag_ticket", TAG)
    await _result(service, "a-2", "failed", attempts=0)
    after = await _decide(service, "a-3", "tag_ticket", TAG)
    assert (after.outcome, after.facts["flow"]["tool_errors"]) == ("allow", 0)


async def test_retries_that_ended_in_success_count_too(service: PolicyService) -> None:  # noqa: F811
    await _result(service, "a-1", "succeeded", attempts=4)
    d = await _decide(service, "a-2", "tag_ticket", TAG)
    assert (d.outcome, d.facts["flow"]["retries"]) == ("escalate", 3)
