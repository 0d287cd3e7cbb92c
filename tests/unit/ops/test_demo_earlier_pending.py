"""`tidegate demo` run again: the approvals an earlier run left pending are named, apart from this run's.

The evaluator runs the demo twice. `tidegate approvals list` (and the approver page) then shows the first run's
escalations beside the second's, and the report said nothing of them: the evaluator approved one of the first run's, whose
stand-ins had stopped with it, and read the failure as a broken install.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pytest
from rich.console import Console

import tidegate.demo.run as demo
from servicekit import KitSettings

EXPIRES = datetime(2026, 12, 8, 9, 30, tzinfo=UTC)


class Pool:
    """The operator's pool as the approval service left it: rows of `approval.approvals`, or no such schema yet."""

    def __init__(self, rows: list[dict[str, Any]] | None) -> None:
        self.rows, self.asked = rows, []

    async def fetch(self, query: str, *args: Any) -> list[dict[str, Any]]:
        import asyncpg

        self.asked.append((query, args))
        if self.rows is None:
            raise asyncpg.InvalidSchemaNameError('schema "approval" does not exist')
        return self.rows


def report(monkeypatch: pytest.MonkeyPatch, earlier: list[demo.Earlier]) -> str:
    monkeypatch.setattr(demo, "_verify_audit", lambda console: "intact")
    screen = io.StringIO()
    demo._report(KitSettings(), [], 60.0, "acme", Console(file=screen, width=200), 0.0, earlier=earlier)
    return " ".join(screen.getvalue().split())


async def test_the_report_names_the_approvals_an_earlier_run_left_pending(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [
        {"approval_id": "ap-1", "task_id": "demo-1a2b3c4d-T-1001", "tool": "issue_refund", "expires_at": EXPIRES},
        {"approval_id": "ap-2", "task_id": "demo-1a2b3c4d-T-1003", "tool": "send_email", "expires_at": EXPIRES},
        {"approval_id": "ap-3", "task_id": "ticket-77", "tool": "issue_refund", "expires_at": EXPIRES},
    ]
    pool = Pool(rows)
    earlier = await demo.pending_before(pool, "acme")
    (query, args) = pool.asked[0]
    assert args == ("acme",)
    assert "status = 'pending'" in query
    assert "expires_at > now()" in query  # one the sweeper will expire is not waiting for anyone

    said = report(monkeypatch, earlier)
    assert "3 approval(s) of tenant acme from before this run are still pending" in said
    assert "demo-1a2b3c4d: 2" in said
    assert "other tasks: 1" in said
    assert "the last expires 2026-12-08 09:30 UTC" in said
    assert "They are not this run's" in said
    assert "granting one of its approvals fails" in said
    assert "tidegate approvals reject <approval id>" in said


async def test_a_first_run_says_nothing_of_earlier_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    assert await demo.pending_before(Pool(None), "acme") == []  # the approval service never ran: no schema yet
    assert "from before this run" not in report(monkeypatch, [])
