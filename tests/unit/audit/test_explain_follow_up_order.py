"""`tidegate audit explain`: a follow-up's resolution reads after the call it resolves, not before the authorization."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.audit.explanation import ActionStory, ApprovalStep, Costs, Explanation, ToolCall
from tidegate.audit_render import render_html, render_markdown

AT = datetime(2026, 12, 4, 23, 20, tzinfo=UTC)


def _step(status: str, minutes: int, resolution: str | None = None) -> ApprovalStep:
    at = AT + timedelta(minutes=minutes)
    return ApprovalStep(
        at=at, status=status, approval_id=f"ap-{status}", approver="sue@acme.example", approvers=["sue@acme.example"],
        comment=None, decided_at=at, edited_args=None, reasons=[], resolution=resolution,
    )  # fmt: skip


def test_a_resolution_is_told_after_the_call_it_resolves() -> None:
    call = ToolCall(at=AT + timedelta(minutes=24), status="unknown", result=None, error=None, attempts=3, duration_ms=30_000, cost_usd=0.0)
    story = ActionStory(
        action_id="a-1", tool="issue_refund", approvals=[_step("granted", 2), _step("resolved", 8, "confirmed_done")], calls=[call]
    )
    x = Explanation(
        task_id="t-1", tenant_id="acme", workflow=None, requested_by=None, mode=None, status="failed", summary=None,
        submitted_at=AT, ended_at=None, sources={}, untrusted_fields=[], actions=[story], policy_versions=[],
        costs=Costs(model_usd=0, tools_usd=0, reported=None, total_usd=0), dead_letters=[], records=5, trace_ids=[],
    )  # fmt: skip
    md = render_markdown(x)
    assert md.index("ap-granted") < md.index("**Tool call** unknown") < md.index("ap-resolved resolved (confirmed_done)")
    html = render_html(x)
    assert html.index("ap-granted") < html.index("ap-resolved")
