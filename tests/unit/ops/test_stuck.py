"""What an open task waits on, in words: a human's approval (since, until), policy, a call in progress, a retry at T."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from schemas import ActionDecided, ActionDecidedData, Reason, action_digest, encode
from services.executor import CallState
from services.planner import OpenTask
from services.planner.task_state import PlannedStep, StepRecord, TaskState
from services.planner.task_views import waiting_on
from tidegate.ops.stuck import Asked, Decided, _decided, describe

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def _state(status: str, **step: Any) -> TaskState:
    planned = PlannedStep(tool="issue_refund", args={})
    record = StepRecord(step=4, action_id="t:4.ab", tool="issue_refund", args={}, planned=planned, status=status, **step)
    return TaskState(
        task_id="t", tenant_id="acme", workflow="w", mode="draft", requested_by="r", strategy="playbook",
        status="waiting_human" if status == "escalated" else "running", steps=[record], started_at=NOW - timedelta(hours=1),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("status", "step", "waits"),
    [
        ("escalated", {}, "human"),
        ("escalated", {"waiting_since": NOW, "approval_id": "ap-1"}, "decision"),  # granted: policy re-decides
        ("proposed", {"waiting_since": NOW}, "decision"),
        ("allowed", {"waiting_since": NOW}, "result"),
        ("succeeded", {}, "nothing"),
    ],
)
def test_the_current_step_says_what_the_task_waits_on(status: str, step: dict[str, Any], waits: str) -> None:
    assert waiting_on(_state(status, **step))[0] == waits


def _open(waits: str, **extra: Any) -> OpenTask:
    return OpenTask(
        task_id="t", tenant_id="acme", workflow="w", status="running", waits=waits, step=4, tool="issue_refund", action_id="t:4.ab",  # type: ignore[arg-type]
        started_at=NOW - timedelta(hours=1), updated_at=NOW - timedelta(minutes=3), **extra,
    )  # fmt: skip


def _call(status: str, **extra: Any) -> CallState:
    return CallState(action_id="t:4.ab", status=status, attempts=2, retry_at=extra.get("retry_at"), started_at=extra.get("started_at"),
                     updated_at=NOW)  # fmt: skip


def test_a_human_wait_says_which_approval_since_when_and_until_when() -> None:
    asked = Asked("ap-1", NOW - timedelta(minutes=30), NOW + timedelta(minutes=5))
    stuck = describe(_open("human", approval_id="ap-1"), None, asked, NOW)
    assert (stuck.waits_on, stuck.since, stuck.expires_at) == (
        "a human's approval ap-1 of issue_refund",
        asked.requested_at,
        asked.expires_at,
    )
    late = describe(_open("human", approval_id="ap-1"), None, asked, NOW + timedelta(minutes=6))
    assert "past its expiry" in late.waits_on


def test_a_machine_wait_says_a_call_in_progress_or_a_retry_at_t() -> None:
    since = NOW - timedelta(minutes=20)
    retry = describe(_open("result", waiting_since=since), _call("waiting", retry_at=NOW + timedelta(seconds=30)), None, NOW)
    assert (retry.waits_on, retry.retry_at, retry.since) == (
        "a retry of issue_refund (attempt 2 failed)",
        NOW + timedelta(seconds=30),
        since,
    )
    running = describe(_open("result", waiting_since=since), _call("running", started_at=NOW - timedelta(minutes=1)), None, NOW)
    assert (running.waits_on, running.since) == ("the call of issue_refund in progress (attempt 2)", NOW - timedelta(minutes=1))
    unclaimed = describe(_open("result", waiting_since=since), None, None, NOW)
    assert unclaimed.waits_on == "the executor to take the call of issue_refund (authorized, not claimed)"
    decided = describe(_open("decision", waiting_since=since, approval_id="ap-1"), None, None, NOW)
    assert decided.waits_on == "policy's decision on issue_refund after a human's grant"


def test_a_decision_the_planner_never_took_is_named_not_the_policy_said_to_be_deciding() -> None:
    """Upgrade probe F7: a later release's policy beside this planner decided, the planner refused the event (a dead
    letter), and `tidegate tasks` said the task waited on the policy's decision: the operator looked at a policy that
    had answered."""
    since = NOW - timedelta(minutes=20)
    untaken = Decided("escalate", NOW - timedelta(minutes=19))
    stuck = describe(_open("decision", waiting_since=since), None, None, NOW, untaken)
    assert stuck.waits_on == (
        "the planner to take the policy's escalate decision on issue_refund, published at 2026-12-05 08:41:00 UTC and not "
        "applied: the planner refused it? `tidegate audit search --dead-letters`"
    )
    in_transit = describe(_open("decision", waiting_since=since), None, None, NOW, Decided("allow", NOW - timedelta(seconds=2)))
    assert in_transit.waits_on == "policy's decision on issue_refund"


def test_the_decision_read_is_the_newest_since_the_step_began_waiting_readable_or_not() -> None:
    def row(ts: datetime, outcome: str, *, valid: bool = True) -> Any:
        value = encode(ActionDecided.build(_decided_data(outcome), source="tidegate/policy"))
        return SimpleNamespace(kafka_ts=ts, valid=valid, value=value, event_type="tidegate.action.decided")

    since = NOW - timedelta(minutes=10)
    rows = [row(NOW - timedelta(minutes=30), "escalate"), row(NOW - timedelta(minutes=5), "allow")]  # before the grant, after it
    assert _decided(rows, since) == Decided("allow", NOW - timedelta(minutes=5))
    assert _decided(rows[:1], since) is None
    # an older audit stored a later release's decision invalid (a code it did not know): still a decision published
    assert _decided([row(NOW - timedelta(minutes=5), "escalate", valid=False)], since) == Decided("escalate", NOW - timedelta(minutes=5))


def _decided_data(outcome: str) -> ActionDecidedData:
    return ActionDecidedData(
        action_id="t:4.ab", task_id="t", tenant_id="acme", tool="issue_refund", args={},
        action_digest=action_digest("acme", "issue_refund", {}),
        outcome=outcome, reasons=[Reason(code="within_threshold", policy_id="p")], policy_version="v", latency_ms=0.1,
    )  # fmt: skip
