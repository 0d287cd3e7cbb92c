"""`tidegate costs` read at 80 columns (the operator's terminal, a CI log, an SSH window): every header and figure whole.

Before, its eleven columns were squeezed into 80: `wor…`, `com…`, `han…`, `fai…`, `(US…`: nothing could be read.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console
from test_handoff_outcomes import _approval, _outcome
from typer.testing import CliRunner

import schemas as s
import tidegate.commands.ops as ops
import tidegate.ops.recorded
from tidegate.cli import app
from tidegate.ops.recorded import Recorded, Window

FIGURES = ("completed", "handed off", "p50 USD", "p95 USD", "failed", "blocked", "rejected by a human", "expired unanswered",
           "human review", "outside agents' calls")  # fmt: skip


def costs_at(width: int, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    async def recorded_window(kit: Any, t0: Any, t1: Any, **options: Any) -> Window:
        events = [
            _outcome("t1", "completed", 0.1, succeeded=5),
            _outcome("t2", "completed", 0.3, succeeded=4, rejected=1),
            _approval(s.ApprovalRejected, "x", ["bob@acme.example"]),
        ]
        return Window([Recorded("tasks", 0, i, 0, e) for i, e in enumerate(events)])

    monkeypatch.setattr(tidegate.ops.recorded, "recorded_window", recorded_window)
    screen = io.StringIO()
    monkeypatch.setattr(ops, "console", Console(file=screen, width=width, emoji=False))
    result = CliRunner().invoke(app, ["costs", "--source", "topics", *args])
    assert result.exit_code == 0, result.output
    return screen.getvalue()


@pytest.mark.parametrize("by", ["workflow", "tenant", "tool"])
def test_at_80_columns_every_header_and_figure_is_whole(by: str, monkeypatch: pytest.MonkeyPatch) -> None:
    shown = costs_at(80, monkeypatch, "--by", by)
    assert "…" not in shown, shown
    assert max(len(line) for line in shown.splitlines()) <= 80
    flat = " ".join(shown.split())  # a figure's name may wrap, never be cut
    for figure in FIGURES:
        assert figure in flat, (figure, shown)
    assert {"workflow": "support_triage", "tenant": "acme", "tool": "issue_refund"}[by] in flat


def test_a_wide_terminal_keeps_one_row_a_group(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = costs_at(200, monkeypatch)
    assert "…" not in shown, shown
    (row,) = [line for line in shown.splitlines() if "support_triage" in line]
    assert "0.10000" in row  # p50 of the two tasks' costs, in the group's row
