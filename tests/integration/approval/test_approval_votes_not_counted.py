"""On the real database: `tidegate approvals list/show` show what the service counts, and a vote it does not count as such.

A request pending at the upgrade that signed approvals holds its approvals without a ballot (the service's signature):
the service no longer counts them. The CLI, through the real service's API, must not show them as counted (`1/2 bob`),
nor tell their approver they approved already: it says the vote is not counted, why, and that they vote again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from approval_harness import ApprovalHarness, StartApproval
from rich.console import Console
from typer.testing import CliRunner, Result

from tidegate.commands import _approvals_queue, approvals

GROUPS = """
default:
  risk_groups: {financial: [finance]}
  required_approvals: {financial: 2}
"""
BOB = "bob@acme.example"


async def cli(h: ApprovalHarness, token: str, *args: str) -> Result:
    """The CLI as an approver runs it, against the running service (in a thread: the service answers on this loop)."""
    result = await asyncio.to_thread(CliRunner().invoke, approvals.app, [*args, "--url", h.url, "--token", token])
    assert result.exit_code == 0, result.output
    return result


async def test_a_vote_from_before_approvals_were_signed_is_shown_not_counted_and_its_approver_may_vote_again(
    infra: Any,
    start_approval: StartApproval,
    wait_for: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(_approvals_queue, "console", Console(width=1000, emoji=False))  # one line a line, whatever the width
    caplog.set_level(logging.WARNING, logger="servicekit.row_proofs")
    groups = tmp_path / "groups.yaml"
    groups.write_text(GROUPS)
    h = await start_approval(groups_file=groups)
    bob, cy = await h.token(BOB, ["finance"]), await h.token("cy@acme.example", ["finance"])
    await h.escalate(d := h.decided())
    record = await h.request_for(d.action_id, wait_for)
    owner = await asyncpg.connect(infra.database_url)
    try:  # bob's approval as the service kept it before approvals were signed: in the row, without a ballot
        await owner.execute(
            "UPDATE approval.approvals SET record = jsonb_set(jsonb_set(record, '{approvers}', $2::jsonb), '{approver_groups}', $3::jsonb) "
            "WHERE approval_id = $1",
            record.approval_id, json.dumps([BOB]), json.dumps({BOB: ["finance"]}),
        )  # fmt: skip
    finally:
        await owner.close()

    listed = (await cli(h, cy, "list")).output
    assert f"{record.approval_id}  pending  issue_refund · {h.tenant}  0/2 approvals (1 not counted)" in listed
    assert f"not counted: {BOB}: it carries no signature of the approval service" in listed
    assert f"{BOB} approves again (their vote is then signed and counted)" in listed

    shown = (await cli(h, bob, "show", record.approval_id)).output
    assert "approvals: 0/2 \n" in shown
    assert f"not counted: {BOB}: it carries no signature" in shown
    assert "you cannot decide it" not in shown  # not "you already approved": the service would take bob's vote
    assert f"to approve this exact call: tidegate approvals approve {record.approval_id}" in shown
    # each listing reads the request again: the operator is told of the vote not counted once, not at every read
    told = [r for r in caplog.records if f"approval of {record.approval_id} by {BOB} refused" in r.getMessage()]
    assert len(told) == 1, [r.getMessage() for r in told]

    approved = (await cli(h, bob, "approve", record.approval_id, "--digest", record.action_digest)).output
    assert "recorded your approval (1/2); waiting for another approver" in approved
    again = (await cli(h, cy, "show", record.approval_id)).output
    assert f"approvals: 1/2 {BOB}\n" in again
    assert "not counted" not in again
    assert "not counted" not in (await cli(h, cy, "list")).output
