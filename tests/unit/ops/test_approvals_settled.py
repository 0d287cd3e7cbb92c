"""`tidegate approvals list|show` say who settled a request and when; a resolved follow-up is `already resolved by …`, not a group."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

import tidegate.commands._approvals_queue as approvals_cli
from tidegate.cli import app

RESOLVED = {
    "approval_id": "fu-1f2e3d4c5b6a7980", "kind": "follow_up", "status": "resolved", "tenant_id": "acme", "task_id": "inc-inv-1",
    "action_id": "inc-inv-1:a1", "tool": "issue_refund", "args": {"amount_usd": 40.0}, "action_digest": "d" * 64,
    "reasons": [{"code": "outcome_unknown", "policy_id": "executor", "message": "timeout"}], "facts": {}, "risk": "financial",
    "policy_version": "v1", "requested_by": "alice@acme.example", "required_approvals": 1, "estimated_cost_usd": 0.01,
    "approvers": ["sue@acme.example"], "edited_args": None, "comment": "in the ledger", "review_reason": None,
    "decided_by": "sue@acme.example", "decided_at": "2026-12-04T23:28:00+00:00", "resolution": "confirmed_done",
    "result_error": {"type": "timeout", "message": "payments did not answer"}, "created_at": "2026-12-04T23:23:00+00:00",
    "expires_at": "2026-12-07T23:23:00+00:00", "escalated": False, "can_decide": False, "can_reject": False,
    "cannot_decide_because": "need a member of ['support']", "cannot_decide_code": "not_in_group", "key_args": [], "killswitch": None,
}  # fmt: skip
PENDING = RESOLVED | {
    "approval_id": "ap-2a3b4c5d6e7f8091", "kind": "approval", "status": "pending", "decided_by": None, "decided_at": None,
    "resolution": None, "approvers": [],
}  # fmt: skip


def _run(monkeypatch: pytest.MonkeyPatch, answer: Any, *args: str) -> str:
    monkeypatch.setattr(approvals_cli, "call", lambda *a, **kw: answer)
    result = CliRunner().invoke(app, ["approvals", *args, "--token", "t", "--url", "http://127.0.0.1:1"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_the_list_says_who_resolved_a_follow_up_and_when(monkeypatch: pytest.MonkeyPatch) -> None:
    said = _run(monkeypatch, [RESOLVED, PENDING], "list", "--status", "all")
    assert "no: already resolved (confirmed_done) by sue@acme.example at 2026-12-04T23:28:00+00:00" in said
    assert said.count("need a member of") == 1  # the pending one's own reason stays


def test_show_says_who_resolved_it_instead_of_a_group(monkeypatch: pytest.MonkeyPatch) -> None:
    said = _run(monkeypatch, RESOLVED, "show", "fu-1f2e3d4c5b6a7980")
    assert "you cannot decide it: already resolved (confirmed_done) by sue@acme.example at 2026-12-04T23:28:00+00:00" in said
    assert "need a member of" not in said
