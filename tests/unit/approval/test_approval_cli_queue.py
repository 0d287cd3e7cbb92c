"""`tidegate approvals` at 2 a.m. (probe oncall3, F2, F9, F10, F13): ids that can be copied from an 80-column list,
requests told apart by their summary, ids pasted with whitespace, and no pointless `--digest` hint for a settled request."""

from __future__ import annotations

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from tests.unit.approval.test_approval_cli import ITEM, FakeApi
from tidegate.commands import _approvals_queue, approvals

LONG_ID = "ap-b41f0c9e2d7a4b55"
SUMMARY = {
    "subject": "899.00 USD · to cus_1002 · order_id O-5002",
    "tool_does": "Refund an amount in USD to a payee for an order.",
    "on_approve": "the policy service checks the call again and, if it still holds, the executor calls issue_refund once",
    "untrusted_args": [{"arg": "payee_id", "why": "cus_1002 was read in ticket T-1002 body"}],
    "human_review_usd": 4.0,
}


@pytest.fixture
def narrow(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """The CLI as in an 80-column terminal, or a pipe."""
    monkeypatch.setattr(_approvals_queue, "console", Console(width=80, emoji=False))
    return CliRunner()


def test_the_list_never_cuts_an_id_at_80_columns(monkeypatch: pytest.MonkeyPatch, narrow: CliRunner) -> None:
    items = [
        ITEM | {"approval_id": LONG_ID, "summary": SUMMARY, "expires_at": "2026-12-05T05:40:58.975082+00:00"},
        ITEM | {"approval_id": "ap-" + "c" * 16, "summary": SUMMARY | {"subject": "450.00 USD · to cus_1007 · order_id O-5007"}},
    ]
    monkeypatch.setattr(httpx, "request", FakeApi([(200, items)]))
    result = narrow.invoke(approvals.app, ["list", "--token", "tga_x"])
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    assert LONG_ID in result.output  # whole, on one line: it can be copied into `approve`
    assert "ap-" + "c" * 16 in result.output
    flat = " ".join(result.output.split())
    assert "899.00 USD" in flat
    assert "cus_1007" in flat


def test_show_says_what_is_decided_what_approving_does_and_what_a_decision_costs(
    monkeypatch: pytest.MonkeyPatch, narrow: CliRunner
) -> None:
    monkeypatch.setattr(_approvals_queue, "console", Console(width=1000, emoji=False))
    item = ITEM | {"summary": SUMMARY, "cost": {"spent_usd": 0.0, "reserved_usd": 0.0}, "context": []}
    monkeypatch.setattr(httpx, "request", FakeApi([(200, item)]))
    result = narrow.invoke(approvals.app, ["show", "ap-1", "--token", "tga_x"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "what: 899.00 USD · to cus_1002 · order_id O-5002" in lines
    assert "untrusted: payee_id: cus_1002 was read in ticket T-1002 body" in lines
    assert f"on approve: {SUMMARY['on_approve']}" in lines
    assert "your decision costs $4.00 of a person's time" in result.output


def test_an_id_pasted_with_whitespace_is_stripped(monkeypatch: pytest.MonkeyPatch, narrow: CliRunner) -> None:
    api = FakeApi([(200, ITEM | {"approval_id": LONG_ID})])
    monkeypatch.setattr(httpx, "request", api)
    result = narrow.invoke(approvals.app, ["show", f" {LONG_ID} ", "--token", "tga_x"])
    assert result.exit_code == 0, result.output
    assert api.calls[0]["url"].endswith(f"/api/v1/approvals/{LONG_ID}")


def test_approving_a_settled_request_says_so_instead_of_asking_for_a_digest(monkeypatch: pytest.MonkeyPatch, narrow: CliRunner) -> None:
    expired = ITEM | {"status": "expired", "can_decide": False, "cannot_decide_because": "expired at 2026-12-05T05:38:23+00:00"}
    api = FakeApi([(200, expired)])
    monkeypatch.setattr(httpx, "request", api)
    result = narrow.invoke(approvals.app, ["approve", "ap-1", "--token", "tga_x"])
    assert result.exit_code == 1
    flat = " ".join(result.output.split())
    assert "nothing to approve: expired at 2026-12-05T05:38:23+00:00" in flat
    assert "--digest" not in flat
    assert [c["method"] for c in api.calls] == ["GET"]
