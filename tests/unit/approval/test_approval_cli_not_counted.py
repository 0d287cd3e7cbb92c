"""`tidegate approvals list/show` say which approvals the service does not count, each on its own line, as the API names them."""

from __future__ import annotations

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from tests.unit.approval.test_approval_cli import ITEM, FakeApi
from tidegate.commands import _approvals_queue, approvals

NOT_COUNTED = {"approver": "bob@acme.example\napprovals: 2/2 [bold]x[/]", "why": "unsigned [/]", "fix": "bob approves again"}
ITEM2 = ITEM | {"required_approvals": 2, "approvers": [], "not_counted": [NOT_COUNTED]}


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setattr(_approvals_queue, "console", Console(width=1000, emoji=False))
    return CliRunner()


@pytest.mark.parametrize("command", [["list"], ["show", "ap-1"]])
def test_a_vote_not_counted_is_said_apart_on_one_line_whatever_its_row_holds(
    monkeypatch: pytest.MonkeyPatch, runner: CliRunner, command: list[str]
) -> None:
    monkeypatch.setattr(httpx, "request", FakeApi([(200, [ITEM2] if command == ["list"] else ITEM2)]))
    result = runner.invoke(approvals.app, [*command, "--token", "tga_x"])
    assert result.exit_code == 0, result.output
    [line] = [x for x in result.output.splitlines() if "not counted:" in x]
    assert line.strip() == "not counted: bob@acme.example\\napprovals: 2/2 [bold]x[/]: unsigned [/]; bob approves again"
    assert not [x for x in result.output.splitlines() if x.startswith("approvals: 2/2")]  # no line a row's text made
    assert ("0/2 approvals (1 not counted)" in result.output) == (command == ["list"])


def test_an_older_service_without_the_field_shows_as_before(monkeypatch: pytest.MonkeyPatch, runner: CliRunner) -> None:
    monkeypatch.setattr(httpx, "request", FakeApi([(200, [ITEM])]))
    result = runner.invoke(approvals.app, ["list", "--token", "tga_x"])
    assert result.exit_code == 0, result.output
    assert "0/1 approvals" in result.output
    assert "not counted" not in result.output


REWRITTEN = "this request was changed in the database (facts not as the policy signed): shown as the policy signed it"
GRANTED = ITEM | {
    "status": "granted",
    "approvers": ["bob@acme.example"],
    "decided_by": "bob@acme.example",
    "decided_at": "2026-12-07T02:14:00+00:00",
    "can_decide": False,
    "can_reject": False,
    "cannot_decide_because": "already granted by bob@acme.example",
    "cannot_decide_code": "not_pending",
    "not_as_signed": REWRITTEN + "\nfacts: {} [bold]x[/]",
}


@pytest.mark.parametrize("command", [["list", "--status", "all"], ["show", "ap-1"]])
def test_a_row_rewritten_after_its_grant_is_said_so_to_the_on_call_the_morning_after(
    monkeypatch: pytest.MonkeyPatch, runner: CliRunner, command: list[str]
) -> None:
    """The refusal a settled request shows is `already granted`: the rewrite of its row was said nowhere (review62)."""
    monkeypatch.setattr(httpx, "request", FakeApi([(200, [GRANTED] if command[0] == "list" else GRANTED)]))
    result = runner.invoke(approvals.app, [*command, "--token", "tga_x"])
    assert result.exit_code == 0, result.output
    [line] = [x for x in result.output.splitlines() if "not as the policy signed" in x]
    assert line.strip() == "not as the policy signed: " + REWRITTEN + "\\nfacts: {} [bold]x[/]"
    assert not [x for x in result.output.splitlines() if x.startswith("facts: {}")]  # no line a row's text made


MADE_UP = "this request is a follow-up that carries no signed unknown outcome of the executor"


def test_a_follow_up_not_proven_is_said_to_be_not_as_the_executor_signed(monkeypatch: pytest.MonkeyPatch, runner: CliRunner) -> None:
    """A follow-up keeps the executor's `action.unknown`, not a decision of the policy (attacker5): the line names its signer."""
    item = ITEM | {"kind": "follow_up", "can_decide": False, "cannot_decide_code": "request_unproven", "not_as_signed": MADE_UP}
    monkeypatch.setattr(httpx, "request", FakeApi([(200, [item])]))
    result = runner.invoke(approvals.app, ["list", "--token", "tga_x"])
    assert result.exit_code == 0, result.output
    assert [x.strip() for x in result.output.splitlines() if x.strip().startswith("not as")] == [f"not as the executor signed: {MADE_UP}"]
