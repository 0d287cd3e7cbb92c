"""`tidegate audit actions`: one line per governed action, across tasks, for an auditor's spreadsheet.

An auditor's questions span tasks: every refund over 500 USD last quarter, who approved each and with which
credential, under which policy and what ran; every action that ran with nobody's approval and why it needed none;
everything one approver approved. `explain` answers them one task at a time. `action_lines` flattens each task's
`Explanation` (the same reading of the same rows) into one `ActionLine` per action, and `ActionFilters` picks the
lines asked for; the CLI prints them as a table, CSV or JSON lines.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.audit.credentials import approver_credentials
from services.audit.explanation import ActionStory, ApprovalStep, Explanation

__all__ = ["COMPARISONS", "ActionFilters", "ActionLine", "action_lines", "csv_columns", "csv_row"]


class ActionLine(BaseModel):
    """One governed action as an auditor reads it: what was asked, what the policy said, who approved it, what ran."""

    model_config = ConfigDict(frozen=True)

    proposed_at: datetime | None
    tenant: str | None
    task_id: str
    action_id: str
    tool: str | None
    args: dict[str, Any]
    proposer: str | None
    decision: str | None = Field(description="The last decision's outcome: allow, deny or escalate (None: never decided).")
    first_decision: str | None = Field(description="The first decision's outcome: `escalate` then `allow` went through approval.")
    reasons: list[str] = Field(description="The reason codes of every decision, in order (why it was allowed, denied or escalated).")
    policy_versions: list[str]
    approval: str = Field(description="`granted`, `rejected`, `expired`, `pending`, or `none` (nobody was asked).")
    approval_ids: list[str]
    approvers: list[str] = Field(description="Who granted (or rejected) it.")
    credentials: list[str] = Field(
        description="`approver: credential` for each approver's signed vote, in `explain`'s words (`bob: operator token tok_…, issued "
        "by key operator-… at TIME`; a one-time link, a chat callback by its endpoint)."
    )
    comment: str | None
    authorized: bool
    bound: bool | None = Field(description="What ran is exactly what was approved (or proposed): `explain`'s Bound line.")
    result: str | None = Field(description="The call's last status: succeeded, failed, unknown (None: it never ran).")
    result_detail: dict[str, Any] | None
    unverified_rows: int = Field(description="Rows of its task that do not verify from their own value (not evidence).")


def _approval(steps: list[ApprovalStep]) -> tuple[str, list[str], list[str], list[str], str | None]:
    decided = [s for s in steps if s.status in ("granted", "rejected", "expired")]
    if not steps:
        return "none", [], [], [], None
    last = decided[-1] if decided else steps[-1]
    status = last.status if decided else "pending"
    approvers = sorted({a for s in decided for a in ([s.approver] if s.approver else []) + list(s.approvers)})
    creds = [text for s in decided for text in approver_credentials(s.credentials)]
    return status, sorted({s.approval_id for s in steps}), approvers, creds, last.comment if decided else None


def _line(x: Explanation, a: ActionStory) -> ActionLine:
    status, ids, approvers, creds, comment = _approval(a.approvals)
    call = a.calls[-1] if a.calls else None
    detail = (call.result if call.result is not None else (call.error.model_dump(mode="json") if call.error else None)) if call else None
    return ActionLine(
        proposed_at=a.proposed_at, tenant=x.tenant_id, task_id=x.task_id, action_id=a.action_id, tool=a.tool, args=a.args,
        proposer=a.proposer, decision=a.decisions[-1].outcome if a.decisions else None,
        first_decision=a.decisions[0].outcome if a.decisions else None,
        reasons=[r.code for d in a.decisions for r in d.reasons], policy_versions=sorted({d.policy_version for d in a.decisions}),
        approval=status, approval_ids=ids, approvers=approvers, credentials=creds, comment=comment,
        authorized=a.authorization is not None, bound=a.bound, result=call.status if call else None, result_detail=detail,
        unverified_rows=len(x.unverified or []),
    )  # fmt: skip


def action_lines(explanations: Iterable[Explanation]) -> list[ActionLine]:
    """Every action of every task explained, one line each, in the order they were proposed."""
    lines = [_line(x, a) for x in explanations for a in x.actions]
    return sorted(lines, key=lambda line: (line.proposed_at is None, line.proposed_at or datetime.min, line.task_id, line.action_id))


@dataclass(frozen=True)
class ActionFilters:
    """What `audit actions` keeps; every field optional, combined with AND."""

    tool: str | None = None
    approver: str | None = None
    approval: str | None = None  # granted, rejected, expired, pending, none
    decision: str | None = None  # allow, deny, escalate
    ran: bool | None = None  # the call ran (any result) or not
    arg: tuple[str, str, float] | None = None  # (arg name, `>`/`>=`/`<`/`<=`/`=`, number): actions whose numeric arg compares so

    def matches(self, line: ActionLine) -> bool:
        """Whether `line` is one asked for."""
        return (
            (self.tool is None or line.tool == self.tool)
            and (self.approver is None or self.approver in line.approvers)
            and (self.approval is None or line.approval == self.approval)
            and (self.decision is None or line.decision == self.decision)
            and (self.ran is None or (line.result is not None) == self.ran)
            and (self.arg is None or _compares(line.args.get(self.arg[0]), self.arg[1], self.arg[2]))
        )


_COMPARE = {">": float.__gt__, ">=": float.__ge__, "<": float.__lt__, "<=": float.__le__, "=": float.__eq__}
COMPARISONS = tuple(_COMPARE)


def _compares(value: Any, op: str, number: float) -> bool:
    """Whether `value` is a number (not a boolean) that compares to `number` by `op`; an argument missing or of text never does."""
    return isinstance(value, int | float) and not isinstance(value, bool) and _COMPARE[op](float(value), number)


_FIXED = (
    "proposed_at", "tenant", "task_id", "action_id", "tool", "decision", "first_decision", "reasons", "approval", "approvers",
    "credentials", "comment", "authorized", "bound", "result", "policy_versions", "approval_ids", "proposer", "unverified_rows",
)  # fmt: skip


def csv_columns(lines: list[ActionLine]) -> list[str]:
    """The CSV's columns: the fixed ones, then one `arg.<name>` per argument any line's call has, then the result's JSON."""
    names = sorted({name for line in lines for name in line.args})
    return [*_FIXED, *(f"arg.{n}" for n in names), "result_detail"]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    if isinstance(value, list):
        return "; ".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def csv_row(line: ActionLine, columns: list[str]) -> list[str]:
    """`line`'s cells under `columns` (`csv_columns`). A cell a spreadsheet would run as a formula is quoted with `'`."""
    cells = []
    for column in columns:
        value = line.args.get(column[4:]) if column.startswith("arg.") else getattr(line, column)
        text = _cell(value)
        cells.append("'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _number(text) else text)
    return cells


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
