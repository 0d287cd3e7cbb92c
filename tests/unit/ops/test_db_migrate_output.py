"""`tidegate db migrate` names each migration it applied: an upgrade's checklist names the migrations its steps follow from."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

import tidegate.database
from tidegate.cli import app


def test_each_migration_applied_is_named_and_none_when_nothing_was_due(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [
        {"approval": ["013_owed_messages.sql"], "audit": ["009_conflict_acks.sql"], "planner": []},
        {"approval": [], "audit": []},
    ]

    async def migrate(cfg: Any) -> dict[str, list[str]]:
        return answers.pop(0)

    monkeypatch.setattr(tidegate.database, "migrate", migrate)
    first = CliRunner().invoke(app, ["db", "migrate"], env={"COLUMNS": "200"})
    assert first.exit_code == 0, first.output
    assert "(2 migrations applied now)" in first.output
    assert "  applied approval/013_owed_messages.sql\n" in first.output
    assert "  applied audit/009_conflict_acks.sql\n" in first.output
    again = CliRunner().invoke(app, ["db", "migrate"], env={"COLUMNS": "200"})
    assert "(0 migrations applied now)" in again.output
    assert "applied " not in again.output.replace("applied now", "")
