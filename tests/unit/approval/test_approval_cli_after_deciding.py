"""`tidegate approvals approve|reject` as the approver woken at 2 a.m. reads them: what the decision just did.

The approver2am probe: `approve` answered `ap-…: granted` and no more while the refund ran a second later, and a kill
switch's refusal read "the request is no longer in the state you saw", as if someone had decided it meanwhile.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console
from typer.testing import CliRunner

from schemas import ActionDecidedData, Reason
from servicekit import action_digest
from services.approval import domain
from services.approval.domain import Approver, GroupsConfig, Refusal, Vote
from tests.unit.approval.test_approval_cli import ITEM, FakeApi
from tidegate.commands import _approvals_queue, approvals

GRANTED = ITEM | {"status": "granted", "approvers": ["bob@acme.example"], "can_decide": False, "outcome": None}
EXECUTED = {"status": "executed", "reason": None, "message": None, "attempts": 1, "at": "2026-12-07T06:22:53.239643+00:00"}
APPROVE = ["approve", "ap-1", "--token", "tga_x", "--url", "http://approvals.test", "--digest", "d" * 64]


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A runner whose console is wide (a line is a line of output), and a clock that does not sleep between reads."""
    monkeypatch.setattr(_approvals_queue, "console", Console(width=1000, emoji=False))
    monkeypatch.setattr("time.sleep", lambda _s: None)
    return CliRunner()


def test_a_grant_waits_for_its_result_and_says_what_became_of_the_call(monkeypatch: pytest.MonkeyPatch, runner: CliRunner) -> None:
    api = FakeApi([(200, GRANTED), (200, GRANTED), (200, GRANTED | {"outcome": EXECUTED})])
    monkeypatch.setattr("httpx.request", api)
    result = runner.invoke(approvals.app, [*APPROVE, "--wait", "30"])
    assert result.exit_code == 0, result.output
    assert "ap-1: granted" in result.output
    assert "what became of it: executed at 2026-12-07 06:22:53 UTC" in result.output.splitlines()
    assert [c["method"] for c in api.calls] == ["POST", "GET", "GET"]  # read again until the result came, then no more


def test_a_grant_not_waited_for_says_what_happens_next_and_where_to_read_it(monkeypatch: pytest.MonkeyPatch, runner: CliRunner) -> None:
    api = FakeApi([(200, GRANTED)])
    monkeypatch.setattr("httpx.request", api)
    result = runner.invoke(approvals.app, APPROVE)  # no terminal: nothing waited for
    assert result.exit_code == 0, result.output
    said = (
        "what became of it: no result yet: the policy service checks the call again, then the executor calls issue_refund once; "
        "`tidegate approvals show ap-1` says what became of it"
    )
    assert said in result.output.splitlines()
    assert len(api.calls) == 1


def test_a_rejection_says_that_nothing_runs(monkeypatch: pytest.MonkeyPatch, runner: CliRunner) -> None:
    monkeypatch.setattr("httpx.request", FakeApi([(200, ITEM | {"status": "rejected", "can_decide": False})]))
    result = runner.invoke(approvals.app, ["reject", "ap-1", "--token", "tga_x", "--url", "http://approvals.test", "-m", "injection"])
    assert result.exit_code == 0, result.output
    assert "nothing runs: the call is not made, and the agent is told it was rejected" in result.output.splitlines()


def test_a_kill_switch_refusal_says_what_holds_the_request(monkeypatch: pytest.MonkeyPatch, runner: CliRunner) -> None:
    message = "a kill switch is set on issue_refund (refund incident INC-42): a grant now ends in a deny that stays final"
    monkeypatch.setattr("httpx.request", FakeApi([(409, {"detail": {"code": "killswitch", "message": message}})]))
    result = runner.invoke(approvals.app, APPROVE)
    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert "409 conflict: a kill switch holds this tool, the request is still pending [killswitch]" in said
    assert "no longer in the state you saw" not in said


def test_show_names_the_action_the_audit_log_knows_the_call_by(monkeypatch: pytest.MonkeyPatch, runner: CliRunner) -> None:
    """The morning after, the on-call holds the chat message's `ap-…`; the audit log knows the call by its action id."""
    monkeypatch.setattr("httpx.request", FakeApi([(200, GRANTED | {"context": [], "cost": {"spent_usd": 0, "reserved_usd": 0}})]))
    result = runner.invoke(approvals.app, ["show", "ap-1", "--token", "tga_x", "--url", "http://approvals.test"])
    assert result.exit_code == 0, result.output
    assert "action a-1 (its story in the audit log: tidegate audit explain a-1)" in result.output.splitlines()


def test_a_request_of_another_group_says_whose_it_is_in_words() -> None:
    """Bob (finance) at 2 a.m. read "need a member of ['support']; bob@… is in ['finance']": a Python list, and no word of what to do."""
    data = ActionDecidedData(
        action_id="a-1", task_id="t-1", tenant_id="acme", tool="tag_ticket", args={"ticket_id": "T-1"},
        action_digest=action_digest("acme", "tag_ticket", {"ticket_id": "T-1"}), outcome="escalate",
        reasons=[Reason(code="draft_mode", policy_id="draft", message="draft mode")], policy_version="sha256:x", risk="write_low",
        latency_ms=0.1, requested_by="alice@acme.example",
    )  # fmt: skip
    now = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
    groups = GroupsConfig()
    record = domain.request_from_decision(data, approval_id="ap-1", now=now, ttl=timedelta(hours=1), groups=groups, risk="write_low")
    assert record is not None
    bob = Approver(approver="bob@acme.example", tenant_id="acme", groups=frozenset({"finance"}))
    refused = domain.decide(record, bob, Vote(decision="reject"), now=now, groups=groups)
    assert isinstance(refused, Refusal)
    assert refused.code == "not_in_group"
    assert refused.message == (
        "write_low actions of acme are decided by a member of support; bob@acme.example is in finance, so neither approve nor "
        "reject is yours: leave it to support"
    )
