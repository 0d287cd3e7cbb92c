"""`tidegate replay --task X` says its skipped records are the window's, not X's (on-call probe F11).

An unreadable record names no task or tenant, so a replay of one task counts every unreadable record of its window: the
on-call engineer read "skipped 3: invalid_event 1, invalid_json 1, too_deep 1" as three broken records of task X.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from servicekit.unreadable import Skipped
from tidegate.cli import app


def _report(skipped: Skipped) -> SimpleNamespace:
    counts = {"answered": 0, "unanswerable": 0, "refused": 0}
    return SimpleNamespace(sandbox_prefix="replay-x.", inputs=1, tasks=[], seconds=0.1, skipped=skipped, **counts)


@pytest.mark.parametrize("three", [True, False])
def test_a_task_replay_says_whose_its_skipped_records_are(monkeypatch: pytest.MonkeyPatch, three: bool) -> None:
    skipped = Skipped()
    for reason in ("invalid_event", "invalid_json", "too_deep") if three else ():
        skipped.add(reason)

    async def fake_replay(*_: Any, **__: Any) -> SimpleNamespace:
        return _report(skipped)

    monkeypatch.setattr("tidegate.ops.replay.run_replay", fake_replay)
    result = CliRunner().invoke(app, ["replay", "--from", "1h", "--task", "t-1"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    if three:
        assert "skipped 3: invalid_event 1, invalid_json 1, too_deep 1 (records of the window that could not be read, whichever task" in (
            result.output
        )
    else:
        assert "skipped 0" in result.output
        assert "whichever" not in result.output
