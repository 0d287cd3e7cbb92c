"""On-call's lookups in the audit log: an action id's task, and who asked for an approval (never "requested by -")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import schemas as s
from services.audit.explanation import explain
from services.audit.reading import tasks_of_action
from services.audit.repository import InMemoryAuditLog
from tidegate.audit_render import render_html, render_markdown

NOW = datetime(2026, 12, 5, 5, 20, tzinfo=UTC)


def _approval(kind: type[s.Envelope], task: str, tenant: str, action: str, source: str = "tidegate/approval", **extra: Any) -> s.Envelope:
    data = s.ApprovalData(
        approval_id="ap-1", action_id=action, task_id=task, tenant_id=tenant, tool="issue_refund", args={}, action_digest="d",
        expires_at=NOW + timedelta(minutes=5), requested_by="demo@acme.example", **extra,
    )  # fmt: skip
    return kind.build(data, source=source)  # type: ignore[attr-defined]


async def _log(make: Any, events: list[s.Envelope]) -> InMemoryAuditLog:
    log = InMemoryAuditLog()
    await log.append([make("approvals", s.encode(e), offset=n, key=e.key) for n, e in enumerate(events)])
    return log


async def test_an_action_id_leads_to_its_task_or_to_each_task_that_names_it(make: Any) -> None:
    log = await _log(
        make, [_approval(s.ApprovalRequested, "t-1", "acme", "refund-7"), _approval(s.ApprovalRequested, "t-2", "globex", "x:1")]
    )
    assert await tasks_of_action(log, "refund-7", "tidegate.") == [("t-1", "acme")]
    assert await tasks_of_action(log, "refund-7", "sandbox.") == []  # another deployment's log
    assert await tasks_of_action(log, "t-1", "tidegate.") == []
    both = await _log(
        make, [_approval(s.ApprovalRequested, "t-1", "acme", "reused"), _approval(s.ApprovalRequested, "t-9", "globex", "reused")]
    )
    assert await tasks_of_action(both, "reused", "tidegate.") == [("t-1", "acme"), ("t-9", "globex")]


async def test_the_explanation_names_the_requester_and_the_expiring_service(make: Any) -> None:
    log = await _log(make, [_approval(s.ApprovalRequested, "t-1", "acme", "a-1"), _approval(s.ApprovalExpired, "t-1", "acme", "a-1")])
    x = explain("t-1", await log.task_rows("t-1", "tidegate."))
    requested, expired = x.actions[0].approvals
    assert (requested.requested_by, requested.expires_at, expired.source) == (
        "demo@acme.example",
        NOW + timedelta(minutes=5),
        "tidegate/approval",
    )
    md = render_markdown(x)
    assert "**Approval** ap-1 requested by demo@acme.example (the proposal's requester) at " in md
    assert f"; expires {NOW + timedelta(minutes=5)}" in md
    assert "ap-1 expired unanswered: closed by tidegate/approval at its expiry, no human decided" in md
    assert " by -" not in md
    html = render_html(x)
    assert "requested by demo@acme.example" in html
    assert "closed by tidegate/approval" in html


async def test_an_expiry_closed_late_says_how_late_not_at_its_expiry(make: Any) -> None:
    """The on-call's F3: PostgreSQL was down across a request's deadline; the approval service closed it 61 s late.

    The story said "closed by tidegate/approval at its expiry, no human decided at 02:57:09" under "expires 02:56:08".
    """
    expiry = NOW + timedelta(minutes=5)
    log = await _log(
        make,
        [
            _approval(s.ApprovalRequested, "t-1", "acme", "a-1"),
            _approval(s.ApprovalExpired, "t-1", "acme", "a-1", decided_at=expiry + timedelta(seconds=61)),
        ],
    )
    md = render_markdown(explain("t-1", await log.task_rows("t-1", "tidegate.")))
    assert "ap-1 expired unanswered: closed by tidegate/approval 1 min 1 s after its expiry" in md
    assert f"({expiry}; the approval service or its database was down or behind), no human decided" in md
    assert "at its expiry" not in md

    on_time = await _log(
        make,
        [
            _approval(s.ApprovalRequested, "t-2", "acme", "a-2"),
            _approval(s.ApprovalExpired, "t-2", "acme", "a-2", decided_at=expiry + timedelta(seconds=2)),  # the next sweep
        ],
    )
    md = render_markdown(explain("t-2", await on_time.task_rows("t-2", "tidegate.")))
    assert "ap-1 expired unanswered: closed by tidegate/approval at its expiry, no human decided" in md
