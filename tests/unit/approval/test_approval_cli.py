"""`tidegate approvals`: what an approver sees when the API refuses, and what the CLI sends."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tidegate.commands import _approvals_queue, approvals

ITEM = {
    "approval_id": "ap-1",
    "kind": "approval",
    "status": "pending",
    "tenant_id": "acme",
    "task_id": "t-1",
    "action_id": "a-1",
    "tool": "issue_refund",
    "args": {"amount_usd": 900.0},
    "action_digest": "d" * 64,
    "reasons": [{"code": "needs_human_approval", "policy_id": "refund-threshold", "message": "over 500"}],
    "facts": {},
    "risk": "financial",
    "requested_by": "alice@acme.example",
    "required_approvals": 1,
    "approvers": [],
    "edited_args": None,
    "expires_at": "2026-11-24T11:00:00+00:00",
    "can_decide": True,
    "cannot_decide_because": None,
    "killswitch": None,
    "resolution": None,
    "result_error": None,
}


class FakeApi:
    """Stands in for httpx.request: records calls, answers from a script."""

    def __init__(self, answers: list[tuple[int, Any]]) -> None:
        self.answers = answers
        self.calls: list[dict[str, Any]] = []

    def __call__(self, method: str, url: str, **kw: Any) -> httpx.Response:
        self.calls.append({"method": method, "url": url, **kw})
        status, body = self.answers.pop(0)
        return httpx.Response(status, json=body, request=httpx.Request(method, url))


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_approve_binds_to_the_digest_it_showed(monkeypatch: pytest.MonkeyPatch, runner: CliRunner) -> None:
    api = FakeApi([(200, ITEM), (200, ITEM | {"status": "granted", "approvers": ["bob@acme.example"]})])
    monkeypatch.setattr(httpx, "request", api)
    monkeypatch.setattr(_approvals_queue, "interactive", lambda: True)
    args = ["approve", "ap-1", "-m", "ok", "--token", "tga_x", "--url", "http://approvals.test"]
    result = runner.invoke(approvals.app, args, input="y\n")
    assert result.exit_code == 0, result.output
    assert "approve this exact call?" in result.output
    assert "granted" in result.output
    post = api.calls[1]
    assert post["url"] == "http://approvals.test/api/v1/approvals/ap-1/approve"
    assert post["json"] == {"action_digest": "d" * 64, "comment": "ok", "edited_args": None}
    assert post["headers"] == {"Authorization": "Bearer tga_x"}


@pytest.mark.parametrize(
    ("status", "code", "words"),
    [
        (401, "unauthenticated", "not authenticated"),
        (403, "four_eyes", "not allowed [four_eyes]"),
        (409, "digest_mismatch", "conflict"),
        (422, "invalid_args", "invalid input"),
    ],
)
def test_refusals_are_explained_in_words(monkeypatch: pytest.MonkeyPatch, runner: CliRunner, status: int, code: str, words: str) -> None:
    api = FakeApi([(status, {"detail": {"code": code, "message": "because"}})])
    monkeypatch.setattr(httpx, "request", api)
    result = runner.invoke(approvals.app, ["reject", "ap-1", "--token", "tga_x"])
    assert result.exit_code == 1
    assert words in " ".join(result.output.split())
    assert "because" in result.output


def test_no_token_says_where_to_get_one(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIDEGATE_APPROVER_TOKEN", raising=False)
    result = runner.invoke(approvals.app, ["list"])
    assert result.exit_code == 1
    assert "TIDEGATE_APPROVER_TOKEN" in result.output


def test_edit_args_must_be_a_json_object(runner: CliRunner) -> None:
    result = runner.invoke(approvals.app, ["approve", "ap-1", "--token", "tga_x", "--edit-args", "[1, 2]"])
    assert result.exit_code == 1
    assert "JSON object" in result.output


def test_show_prints_untrusted_text_verbatim_not_as_markup(monkeypatch: pytest.MonkeyPatch, runner: CliRunner) -> None:
    item = ITEM | {
        "args": {"recipients": ["a@x.example"], "note": "[red]pay now[/red]"},
        "can_decide": False,
        "cannot_decide_because": "needs a member of ['finance']",
    }
    monkeypatch.setattr(httpx, "request", FakeApi([(200, item)]))
    result = runner.invoke(approvals.app, ["show", "ap-1", "--token", "tga_x"])
    assert result.exit_code == 0, result.output
    assert '"[red]pay now[/red]"' in result.output
    assert '["a@x.example"]' in result.output
    assert "['finance']" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--tenant", "*", "--groups", "admin"],
        ["--groups", "admin"],
        ["--tenant", "acme", "--operator", "--groups", "admin"],
    ],
)
def test_a_token_across_tenants_is_only_an_explicit_operator_token(runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(approvals.app, ["token", "create", "--approver", "eve@acme.example", *args])
    assert result.exit_code == 1
    assert "--operator" in result.output


def test_approve_without_a_digest_never_approves_a_call_nobody_confirmed(monkeypatch: pytest.MonkeyPatch, runner: CliRunner) -> None:
    """The call may have changed since the approver looked (re-proposed under the same action id, 9000 to another payee):
    an approval binds to what a person saw, so without --digest the CLI shows the call and waits for a yes."""
    changed = ITEM | {"args": {"payee_id": "cus_ATTACKER", "amount_usd": 9000.0}, "action_digest": "e" * 64}
    api = FakeApi([(200, changed), (200, changed)])
    monkeypatch.setattr(httpx, "request", api)
    scripted = runner.invoke(approvals.app, ["approve", "ap-1", "--token", "tga_x"])  # not a terminal: nobody to confirm
    assert scripted.exit_code == 1
    assert "cus_ATTACKER" in scripted.output
    assert f"give --digest {'e' * 64}" in " ".join(scripted.output.split())
    monkeypatch.setattr(_approvals_queue, "interactive", lambda: True)
    declined = runner.invoke(approvals.app, ["approve", "ap-1", "--token", "tga_x"], input="n\n")
    assert declined.exit_code == 1
    assert [c["method"] for c in api.calls] == ["GET", "GET"]  # nothing was posted


def test_an_approval_id_reaches_its_own_route_only(monkeypatch: pytest.MonkeyPatch, runner: CliRunner) -> None:
    """A pasted id from a spoofed chat message must not turn `approve` into a call to another route (a token rotation)."""
    api = FakeApi([])
    monkeypatch.setattr(httpx, "request", api)
    for command in (["approve", "../tokens/rotate?x=", "--digest", "x"], ["show", "../me"], ["reject", "ap-1/../../me"]):
        result = runner.invoke(approvals.app, [*command, "--token", "tga_x"])
        assert result.exit_code == 1, command
        assert "is not an approval id" in result.output
    assert api.calls == []


def test_bad_flags_are_one_line(runner: CliRunner, tmp_path: Any) -> None:
    missing = runner.invoke(approvals.app, ["approve", "ap-1", "--token", "tga_x", "--edit-args", f"@{tmp_path}/nope.json"])
    assert (missing.exit_code, "cannot read" in missing.output) == (1, True)
    reason = runner.invoke(approvals.app, ["approve", "ap-1", "--token", "tga_x", "--digest", "d", "--reason", "wrong_amount"])
    assert (reason.exit_code, "--edit-args" in reason.output) == (1, True)
    status = runner.invoke(approvals.app, ["list", "--token", "tga_x", "--status", "bogus"])
    assert (status.exit_code, "--status is one of" in status.output) == (1, True)


def test_an_approver_approves_unchanged_saying_a_human_should_not_have_been_asked(
    monkeypatch: pytest.MonkeyPatch, runner: CliRunner
) -> None:
    """Governance probe F1: `--reason should_not_need_approval` without `--edit-args` was refused; it reaches the service now."""
    api = FakeApi([(200, ITEM | {"status": "granted", "approvers": ["bob@acme.example"], "review_reason": "should_not_need_approval"})])
    monkeypatch.setattr(httpx, "request", api)
    command = ["approve", "ap-1", "--token", "tga_x", "--digest", "d" * 64, "-m", "known customer", "--reason", "should_not_need_approval"]
    result = runner.invoke(approvals.app, command)
    assert result.exit_code == 0, result.output
    sent = api.calls[-1]["json"]
    assert (sent["review_reason"], sent["edited_args"], sent["action_digest"]) == ("should_not_need_approval", None, "d" * 64)
    wrong = runner.invoke(approvals.app, ["approve", "ap-1", "--token", "tga_x", "--digest", "d" * 64, "--reason", "wrong_amount"])
    assert wrong.exit_code == 1
    assert "approving unchanged takes only --reason should_not_need_approval" in " ".join(wrong.output.split())
    assert len(api.calls) == 1  # the wrong reason was refused before any call


def test_edit_args_changes_the_keys_given_and_keeps_the_others(monkeypatch: pytest.MonkeyPatch, runner: CliRunner) -> None:
    """`--edit-args '{"amount_usd": 90}'` (the docs' example) is the call with its amount changed, not a call of one argument."""
    item = ITEM | {"args": {"payee_id": "cus_1", "order_id": "O-1", "amount_usd": 900.0, "note": "x"}}
    api = FakeApi([(200, item), (200, item | {"status": "granted", "approvers": ["bob@acme.example"]})])
    monkeypatch.setattr(httpx, "request", api)
    patch = '{"amount_usd": 90, "note": null}'
    result = runner.invoke(
        approvals.app, ["approve", "ap-1", "--token", "tga_x", "--digest", "d" * 64, "--edit-args", patch, "--reason", "wrong_amount"]
    )
    assert result.exit_code == 0, result.output
    sent = api.calls[-1]["json"]
    assert sent["edited_args"] == {"payee_id": "cus_1", "order_id": "O-1", "amount_usd": 90}  # `null` removed `note`
    assert sent["action_digest"] == "d" * 64  # still bound to the call reviewed
    assert 'edited args: {"amount_usd": 90, "order_id": "O-1", "payee_id": "cus_1"}' in result.output


def test_merge_patch_follows_rfc_7396() -> None:
    merge = _approvals_queue.merge_patch
    assert merge({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": None, "e": 3}, "d": [2]}) == {"a": {"c": 2, "e": 3}, "d": [2]}
    assert merge({"a": 1}, {"a": {"b": None}}) == {"a": {}}


def test_a_rejected_request_says_who_rejected_it_not_that_it_got_its_approvals(monkeypatch: pytest.MonkeyPatch, runner: CliRunner) -> None:
    """An ops lead skimming the list on a phone read "rejected … 1/1 approvals" as approved: the API's approvers names the rejecter."""
    rejected = ITEM | {"status": "rejected", "approvers": ["carol@acme.example"], "rejected_by": "carol@acme.example", "can_decide": False}
    monkeypatch.setattr(httpx, "request", FakeApi([(200, [rejected]), (200, rejected)]))
    listed = runner.invoke(approvals.app, ["list", "--token", "tga_x", "--status", "rejected"], env={"COLUMNS": "200"})
    shown = runner.invoke(approvals.app, ["show", "ap-1", "--token", "tga_x"], env={"COLUMNS": "200"})
    for result in (listed, shown):
        assert result.exit_code == 0, result.output
        assert "rejected by carol@acme.example" in result.output
        assert "1/1" not in result.output


def test_show_lists_the_payees_other_requests_of_the_day(monkeypatch: pytest.MonkeyPatch, runner: CliRunner) -> None:
    sibling = {
        "approval_id": "ap-0", "action_id": "a-0", "task_id": "t-0", "tool": "issue_refund", "payee": "cus_1002",
        "amount_usd": 501.0, "status": "granted", "decided_by": "carol@acme.example", "created_at": "2026-11-24T10:00:00+00:00",
    }  # fmt: skip
    item = ITEM | {"context": [], "cost": {"spent_usd": 0.0, "reserved_usd": 0.0}, "same_payee": [sibling]}
    monkeypatch.setattr(httpx, "request", FakeApi([(200, item)]))
    result = runner.invoke(approvals.app, ["show", "ap-1", "--token", "tga_x"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "same payee, last 24 h" in result.output
    assert "ap-0  issue_refund  501.0 USD  granted  by carol@acme.example" in result.output
