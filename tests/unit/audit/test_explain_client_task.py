"""`tidegate audit explain` of a task no outcome will close: who asked, from its proposals; its status, from its actions' ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import schemas as s
from services.audit.explanation import Explanation, explain
from services.audit.repository import InMemoryAuditLog
from tidegate.audit_render import render_html, render_markdown

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
AGENT = "agent@acme.example"
SRC = "urn:tidegate:client:external:langgraph"


def _proposed(action_id: str, step: int) -> tuple[str, s.Envelope]:
    data = s.ActionProposedData(
        action_id=action_id, task_id="t-c", tenant_id="acme", step=step, tool="issue_refund", args={"amount_usd": 5},
        proposer="external:langgraph", mode="draft", requested_by=AGENT,
    )  # fmt: skip
    return "actions.proposed", s.ActionProposed.build(data, source=SRC)


def _decided(action_id: str, outcome: str, via: str = "policy") -> tuple[str, s.Envelope]:
    data = s.ActionDecidedData(
        action_id=action_id, task_id="t-c", tenant_id="acme", tool="issue_refund", args={"amount_usd": 5}, action_digest="d" * 64,
        outcome=outcome, reasons=[], policy_version="sha256:abc", latency_ms=0.3, via=via, requested_by=AGENT,
    )  # fmt: skip
    return "actions.decided", s.ActionDecided.build(data, source="tidegate/policy")


def _approval(kind: type[s.Envelope], action_id: str, approver: str | None = None) -> tuple[str, s.Envelope]:
    data = s.ApprovalData(
        approval_id=f"ap-{action_id}", action_id=action_id, task_id="t-c", tenant_id="acme", tool="issue_refund",
        args={"amount_usd": 5}, action_digest="d" * 64, expires_at=NOW + timedelta(hours=1), approver=approver,
        requested_by=AGENT,
    )  # fmt: skip
    return "approvals", kind.build(data, source="tidegate/approval")


def _succeeded(action_id: str) -> tuple[str, s.Envelope]:
    data = s.ActionResultData(
        action_id=action_id, task_id="t-c", tenant_id="acme", tool="issue_refund", status="succeeded", result={"ok": True},
        attempts=1, duration_ms=12.0,
    )  # fmt: skip
    return "actions.results", s.ActionSucceeded.build(data, source="tidegate/executor")


def _submitted(planner: str) -> tuple[str, s.Envelope]:
    data = s.TaskSubmittedData(
        task_id="t-c", tenant_id="acme", workflow="refunds", input={}, requested_by="alice@acme.example", planner=planner
    )
    return "tasks", s.TaskSubmitted.build(data, source="tidegate/cli")


async def _explained(make: Any, events: list[tuple[str, s.Envelope]]) -> Explanation:
    log = InMemoryAuditLog()
    await log.append([make(topic, s.encode(event), offset=n, key=event.key) for n, (topic, event) in enumerate(events)])
    return explain("t-c", await log.task_rows("t-c", "tidegate."))


def _granted_and_run(action_id: str, step: int) -> list[tuple[str, s.Envelope]]:
    return [
        _proposed(action_id, step),
        _decided(action_id, "escalate"),
        _approval(s.ApprovalRequested, action_id),
        _approval(s.ApprovalGranted, action_id, "sue@acme.example"),
        _decided(action_id, "allow", via="approval"),
        _succeeded(action_id),
    ]


async def test_a_client_proposed_task_names_its_requester_and_ends_when_its_actions_ended(make: Any) -> None:
    x = await _explained(make, [*_granted_and_run("a-1", 1), _proposed("a-2", 2), _decided("a-2", "deny")])
    assert (x.requested_by, x.mode, x.workflow) == (AGENT, "draft", None)
    assert x.status == "ended"
    assert x.summary == "no task record (proposed by a client); 2 actions, all ended: 1 denied, 1 succeeded"
    md = render_markdown(x)
    assert f"**Requested by:** {AGENT}" in md
    assert "**Status:** ended: no task record (proposed by a client); 2 actions, all ended" in md
    assert "open" not in md
    html = render_html(x)
    assert AGENT in html
    assert "open" not in html


async def test_a_client_proposed_task_is_open_while_an_action_awaits_a_human(make: Any) -> None:
    waiting = [_proposed("a-2", 2), _decided("a-2", "escalate"), _approval(s.ApprovalRequested, "a-2")]
    x = await _explained(make, [*_granted_and_run("a-1", 1), *waiting])
    assert x.status == "open"
    assert x.summary == (
        "no task record (proposed by a client); 2 actions, 1 open (awaiting the policy, a human or the executor), 1 ended: 1 succeeded"
    )


async def test_a_rejected_or_expired_approval_ends_the_action(make: Any) -> None:
    rejected = [_proposed("a-1", 1), _decided("a-1", "escalate"), _approval(s.ApprovalRejected, "a-1", "sue@acme.example")]
    expired = [_proposed("a-2", 2), _decided("a-2", "escalate"), _approval(s.ApprovalExpired, "a-2")]
    x = await _explained(make, rejected + expired)
    assert (x.status, x.summary) == ("ended", "no task record (proposed by a client); 2 actions, all ended: 1 expired, 1 rejected")


async def test_a_task_planned_outside_tidegate_ends_with_its_actions_and_keeps_its_requester(make: Any) -> None:
    x = await _explained(make, [_submitted("external:langgraph"), *_granted_and_run("a-1", 1)])
    assert (x.requested_by, x.workflow) == ("alice@acme.example", "refunds")
    assert (x.status, x.summary) == ("ended", "no task outcome (planned by external:langgraph); 1 action, all ended: 1 succeeded")


async def test_a_task_of_our_planner_stays_open_until_its_outcome(make: Any) -> None:
    x = await _explained(make, [_submitted("tidegate"), *_granted_and_run("a-1", 1)])
    assert (x.status, x.summary) == ("open", None)
