"""`tidegate approvals show` says what the page says (probe approver6 A1, A3, A6, A7): the agent's rationale, the order as
the task read it, another approver's edit, what became of a grant, every approver of a grant; and `token list` and
`tidegate tasks` keep their ids whole in a pipe."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from services.approval._token_store import TokenInfo
from tests.unit.approval.test_approval_cli import ITEM, FakeApi
from tidegate.commands import _approvals_queue, _approvals_tokens, _whole_ids, approvals
from tidegate.commands._approvals_shown import minute

SUMMARY = {
    "subject": "620.00 USD · to cus_1005 · order_id O-5003777",
    "rationale": "the customer asked for the refund",
    "human_review_usd": 4.0,
}
READS = {
    "arg": "order_id",
    "id": "O-5003777",
    "checked": True,
    "reads": [
        {
            "tool": "lookup_order",
            "action_id": "a-0",
            "status": "succeeded",
            "at": "2026-12-05T11:23:00+00:00",
            "returned": {"payee_id": "cus_1003", "amount_usd": 620},
            "compared": [{"arg": "payee_id", "call": "cus_1005", "read": "cus_1003", "same": False}],
        }
    ],
    "said": "the call differs from the read: payee_id 'cus_1005' in the call, 'cus_1003' as read",
}


def show(monkeypatch: pytest.MonkeyPatch, item: dict[str, Any]) -> list[str]:
    monkeypatch.setattr(_approvals_queue, "console", Console(width=1000, emoji=False))
    monkeypatch.setattr(httpx, "request", FakeApi([(200, ITEM | {"context": [], "cost": {"spent_usd": 0, "reserved_usd": 0}} | item)]))
    result = CliRunner().invoke(approvals.app, ["show", "ap-1", "--token", "tga_x"])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_show_prints_the_agents_rationale_and_the_order_as_the_task_read_it(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = show(monkeypatch, {"summary": SUMMARY, "record_reads": READS})
    assert "the agent says (its words, not checked): the customer asked for the refund" in lines
    assert f"order_id O-5003777 as the task read it: {READS['said']}" in lines
    assert '  lookup_order (action a-0) succeeded: {"amount_usd": 620, "payee_id": "cus_1003"}' in lines


def test_show_says_a_refund_on_an_unread_order_was_not_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    said = "not checked: the task made no trusted read of order_id O-1; the figures are the agent's alone"
    lines = show(
        monkeypatch, {"summary": SUMMARY, "record_reads": {"arg": "order_id", "id": "O-1", "checked": False, "reads": [], "said": said}}
    )
    assert f"order_id O-1 as the task read it: {said}" in lines


def test_show_puts_a_pending_edit_first_and_the_proposed_call_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    edit = {
        "by": "bob@acme.example",
        "changed": ["amount_usd"],
        "said": "edited by bob@acme.example from 899.00 USD",
        "original_subject": "…",
    }
    item = {
        "summary": SUMMARY | {"edit": edit},
        "edited_args": {"amount_usd": 450.0},
        "args": {"amount_usd": 899.0},
        "approvers": ["bob@acme.example"],
    }
    lines = show(monkeypatch, item)
    assert "edited by bob@acme.example from 899.00 USD: approve approves the edited args" in lines
    assert 'args (edited): {"amount_usd": 450.0}' in lines
    assert 'args as proposed: {"amount_usd": 899.0}' in lines


def test_show_says_a_grant_the_policy_denied(monkeypatch: pytest.MonkeyPatch) -> None:
    message = "denied by policy after the grant: approval_quorum_not_met; nothing ran (`tidegate audit explain t-1`: the policy's words)"
    outcome = {"status": "denied_by_policy", "reason": "approval_quorum_not_met", "message": message, "attempts": 0, "at": "x"}
    granted = {"status": "granted", "can_decide": False, "decided_by": "carol@acme.example", "decided_at": "2026-12-05T11:30:00+00:00"}
    lines = show(
        monkeypatch, granted | {"outcome": outcome, "approvers": ["bob@acme.example", "carol@acme.example"], "required_approvals": 2}
    )
    assert f"what became of it: {message}" in lines
    assert "you cannot decide it: already granted by bob@acme.example, carol@acme.example at 2026-12-05T11:30:00+00:00" in lines


def test_show_of_a_grant_without_a_result_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = show(monkeypatch, {"status": "granted", "can_decide": False, "decided_by": "bob@acme.example", "outcome": None})
    assert "what became of it: no result yet" in lines


@pytest.fixture
def pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    """The listings as in a pipe (80 columns)."""
    monkeypatch.setattr(_whole_ids, "console", Console(width=80, emoji=False))


TOKEN_ID = "tok_5f3e9a1b2c3d4e5f6a7b8c9d0e1f2a3b"


def test_token_list_keeps_the_token_id_whole_in_a_pipe(
    monkeypatch: pytest.MonkeyPatch, pipe: None, capsys: pytest.CaptureFixture[str]
) -> None:
    at = datetime(2026, 12, 5, 11, 23, tzinfo=UTC)
    info = TokenInfo(TOKEN_ID, "bob@acme.example", "acme", ("finance", "admin"), at, expires_at=at, key_id="operator-2026")

    async def tokens(what: str) -> list[TokenInfo]:
        assert what == "tokens"
        return [info]

    monkeypatch.setattr(_approvals_tokens, "repo_call", tokens)
    _approvals_tokens.token_list(as_json=False)
    out = capsys.readouterr().out
    assert TOKEN_ID in out.splitlines()  # whole, on a line of its own: `token revoke` takes it
    assert "approver: bob@acme.example" in out


def test_a_listing_that_fits_is_a_table(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(_whole_ids, "console", Console(width=200, emoji=False))
    _whole_ids.print_listing(("task", "tenant"), [("p6-T-1002-964704082", "acme")], title="1 open task(s)")
    out = capsys.readouterr().out
    assert "┃ task" in out
    assert "p6-T-1002-964704082" in out


def test_tasks_keeps_the_task_id_whole_in_a_pipe(pipe: None, capsys: pytest.CaptureFixture[str]) -> None:
    headers = ("task", "tenant", "proposed by", "status", "step", "waits on", "since (UTC)", "waited", "expires / retry at (UTC)")
    row = ("p6-T-1002-964704082-long-task-id", "acme", "planner", "waiting", "2", "approval ap-2a6bf82abe5647a7", "11:23", "3 min", "11:53")
    _whole_ids.print_listing(headers, [row], title="1 open task(s), 0 open action(s) of outside agents")
    lines = capsys.readouterr().out.splitlines()
    assert "p6-T-1002-964704082-long-task-id" in lines
    assert any("waits on: approval ap-2a6bf82abe5647a7" in line for line in lines)


def test_show_says_how_long_a_pending_request_has_left_and_that_a_past_one_ran_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Probe approver F9: `show` printed `expires 2026-12-06T11:02:26.536077Z`, a raw timestamp to the microsecond in UTC, where
    `list` and the page say the minute and how long is left; at 2 a.m. an approver converts no time zones."""
    now = datetime.now(UTC)
    soon = (now + timedelta(minutes=12, seconds=30)).isoformat()
    (head,) = [line for line in show(monkeypatch, {"status": "pending", "expires_at": soon}) if line.startswith("tool issue_refund")]
    assert head.endswith(f"expires {minute(soon)} (in 12 min; undecided by then, it expires and nothing runs)")
    past = (now - timedelta(minutes=3, seconds=30)).isoformat()
    (head,) = [line for line in show(monkeypatch, {"status": "pending", "expires_at": past}) if line.startswith("tool issue_refund")]
    assert head.endswith(f"expires {minute(past)} (3 min ago, undecided: nothing ran)")
    (head,) = [line for line in show(monkeypatch, {"status": "granted", "expires_at": past}) if line.startswith("tool issue_refund")]
    assert head.endswith(f"expiry {minute(past)}")


def test_show_prints_the_ready_to_paste_approve_line_whole_on_a_narrow_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Probe approver F11: at 100 columns (a phone's SSH, half a laptop) `show` broke `tidegate approvals approve ap-…
    --digest d4a4…` into two lines; pasted, the shell ran `… --digest` alone and then the digest as a command."""
    monkeypatch.setattr(_approvals_queue, "console", Console(width=60, emoji=False))
    monkeypatch.setattr(httpx, "request", FakeApi([(200, ITEM | {"context": [], "cost": {"spent_usd": 0, "reserved_usd": 0}})]))
    result = CliRunner().invoke(approvals.app, ["show", "ap-1", "--token", "tga_x"])
    assert result.exit_code == 0, result.output
    command = f"tidegate approvals approve ap-1 --digest {ITEM['action_digest']}"
    assert f"to approve this exact call: {command}" in result.output.splitlines()
