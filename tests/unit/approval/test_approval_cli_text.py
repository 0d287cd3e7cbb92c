"""The CLI prints text a proposer or an agent wrote (task ids, tools, requesters, messages) as it is, on one line.

Rich reads `[...]` as markup and a terminal starts a new line at `\\n`: a task id must neither crash `approvals show`
nor print a fake `args:` line above the real call an approver is asked to confirm.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from tests.unit.approval.test_approval_cli import ITEM, FakeApi
from tidegate.commands import _approvals_queue, approvals, clients
from tidegate.commands._common import SHOWN_MAX, console, shown

CRASHES = "t9 [/]\nx"
FAKE_ARGS = '\ntool issue_refund\nargs: {"amount_usd": 70.0}'


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A runner whose console is wide: a line is one line of output, never wrapped at 80 columns."""
    wide = Console(width=1000, emoji=False)
    for module in (_approvals_queue, clients):
        monkeypatch.setattr(module, "console", wide)
    return CliRunner()


def _lines(output: str, start: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(start)]


def test_a_task_id_with_markup_and_a_line_break_shows_on_one_line(monkeypatch: pytest.MonkeyPatch, runner: CliRunner) -> None:
    item = ITEM | {"task_id": CRASHES, "requested_by": "[bold]eve[/]", "tool": "issue_refund[/]"}
    monkeypatch.setattr(httpx, "request", FakeApi([(200, item)]))
    result = runner.invoke(approvals.app, ["show", "ap-1", "--token", "tga_x"])
    assert result.exit_code == 0, result.output
    assert "ap-1  approval  pending  acme  task t9 [/]\\nx" in result.output.splitlines()
    assert "tool issue_refund[/] (risk financial" in result.output
    assert "requested by [bold]eve[/]," in result.output


def test_a_task_id_cannot_fake_the_args_above_the_call_to_approve(monkeypatch: pytest.MonkeyPatch, runner: CliRunner) -> None:
    item = ITEM | {"task_id": FAKE_ARGS, "args": {"amount_usd": 7000.0}}
    api = FakeApi([(200, item), (200, item | {"status": "granted"})])
    monkeypatch.setattr(httpx, "request", api)
    monkeypatch.setattr(_approvals_queue, "interactive", lambda: True)
    result = runner.invoke(approvals.app, ["approve", "ap-1", "--token", "tga_x"], input="y\n")
    assert result.exit_code == 0, result.output
    assert _lines(result.output, "args:") == ['args: {"amount_usd": 7000.0}']
    assert _lines(result.output, "tool ") == [_lines(result.output, "tool issue_refund (risk")[0]]
    assert 'task \\ntool issue_refund\\nargs: {"amount_usd": 70.0}' in result.output


def test_the_queue_and_the_context_show_proposer_text_as_it_is(monkeypatch: pytest.MonkeyPatch, runner: CliRunner) -> None:
    item = ITEM | {"tool": "refund [/]", "reasons": [{"code": "x[/]", "policy_id": "p", "message": "m"}], "can_decide": True}
    monkeypatch.setattr(httpx, "request", FakeApi([(200, [item])]))
    listed = runner.invoke(approvals.app, ["list", "--token", "tga_x"])
    assert listed.exit_code == 0, listed.output
    assert "refund [/]" in listed.output
    assert "x[/]" in listed.output
    context = {"at": "2026-11-24T10:00:00+00:00", "type": "tidegate.action.decided", "action_id": "a\n[/]", "tool": "t\u202eb"}
    shown_item = ITEM | {"cost": {"spent_usd": 1.0, "reserved_usd": 0.0}, "context": [context | {"outcome": "allow", "cost_usd": 0.5}]}
    monkeypatch.setattr(httpx, "request", FakeApi([(200, shown_item)]))
    result = runner.invoke(approvals.app, ["show", "ap-1", "--token", "tga_x"])
    assert result.exit_code == 0, result.output
    assert "action.decided  a\\n[/]  t\\u202eb  allow  $0.5000" in result.output


def test_the_outcome_and_a_refusal_are_one_line(monkeypatch: pytest.MonkeyPatch, runner: CliRunner) -> None:
    done = ITEM | {"status": "granted", "resolution": "paid [/]\nrefund approved"}
    monkeypatch.setattr(httpx, "request", FakeApi([(200, done)]))
    result = runner.invoke(approvals.app, ["approve", "ap-1", "--token", "tga_x", "--digest", "d" * 64])
    assert result.exit_code == 0, result.output
    assert "ap-1: granted (paid [/]\\nrefund approved)" in result.output
    refusal = {"detail": {"code": "four_eyes", "message": "eve\napproved: yes\nrequested this task"}}
    monkeypatch.setattr(httpx, "request", FakeApi([(403, refusal)]))
    refused = runner.invoke(approvals.app, ["reject", "ap-1", "--token", "tga_x"])
    assert refused.exit_code == 1
    assert "eve\\napproved: yes\\nrequested this task" in refused.output
    assert "\napproved: yes" not in refused.output


def test_propose_prints_the_ids_it_was_given_on_one_line(monkeypatch: pytest.MonkeyPatch, runner: CliRunner) -> None:
    decision = SimpleNamespace(
        data=SimpleNamespace(outcome="escalate", reasons=[SimpleNamespace(code="needs_human_approval", policy_id="p[/]")])
    )

    async def decided(*_: Any) -> Any:
        return decision, None  # the decision, and no result (an escalated call waits for a human)

    async def nothing_recorded(*_: Any) -> None:
        return None  # the policy recorded nothing under the id (read from its database, which a unit test does not reach)

    monkeypatch.setattr(clients, "_propose_and_wait", decided)
    monkeypatch.setattr(clients, "_taken", nothing_recorded)
    args = ["--tool", "issue_refund", "--args", '{"amount_usd": 700}', "--task-id", CRASHES, "--action-id", "a [b]"]
    result = runner.invoke(clients.app, ["propose", *args])
    assert result.exit_code == 0, result.output
    assert "proposed action a [b] on task t9 [/]\\nx" in result.output
    assert "decision: escalate — needs_human_approval (p[/])" in result.output


@pytest.mark.parametrize(
    ("value", "printed"),
    [
        ("a\u202eb\u2066c", "a\\u202eb\\u2066c"),  # bidi controls reorder what follows
        ("a\u200bb\ufeffc", "a\\u200bb\\ufeffc"),  # zero-width characters hide
        ("a\u00a0b\u2028c\u2029d", "a\\xa0b\\u2028c\\u2029d"),  # a space that is not one, line and paragraph separators
        ("\x1b[31mred\x7f\r\t", "\\x1b[31mred\\x7f\\r\\t"),  # a terminal's escape sequence, controls
        ("caf\u00e9 \u0430cme", "caf\u00e9 \u0430cme"),  # letters of any script stay as they are
    ],
)
def test_shown_escapes_what_a_terminal_would_not_show_as_itself(value: str, printed: str) -> None:
    with console.capture() as captured:
        console.print(shown(value))
    assert captured.get() == printed + "\n"


def test_shown_is_bounded_and_never_reads_an_emoji_code() -> None:
    assert shown("x" * 1000) == "x" * SHOWN_MAX + "…"
    assert shown("x" * 1000, None) == "x" * 1000
    with console.capture() as captured:
        console.print(shown(":warning: [red]approve[/red]"))
    assert captured.get() == ":warning: [red]approve[/red]\n"
