"""The long operator commands (replay, whatif, costs, audit verify) show how far they are: on stderr, on a terminal, never under --json."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from rich.console import Console
from test_whatif_budget_cap import decided, proposal
from typer.testing import CliRunner

import tidegate.commands._progress as shown_progress
import tidegate.ops.recorded
from servicekit import KitSettings
from tidegate.cli import app
from tidegate.commands._progress import progress_display
from tidegate.ops.recorded import Window
from tidegate.ops.whatif import evaluate, load_pack


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """stderr as a terminal, written to a buffer the test reads."""
    screen = io.StringIO()
    monkeypatch.setattr(shown_progress, "err_console", Console(file=screen, force_terminal=True, width=120, emoji=False))
    return screen


def test_a_stage_is_drawn_with_its_label_and_count_on_a_terminal(terminal: io.StringIO) -> None:
    with progress_display({"read": "reading recorded events"}) as report:
        report("read", 0, None)
        report("read", 3, 10)
    assert "reading recorded events" in terminal.getvalue()
    assert "3/10" in terminal.getvalue()


def test_nothing_is_drawn_under_json_nor_when_stderr_is_not_a_terminal(terminal: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    with progress_display({"read": "reading"}, quiet=True) as report:
        report("read", 3, 10)
    assert terminal.getvalue() == ""
    piped = io.StringIO()
    monkeypatch.setattr(shown_progress, "err_console", Console(file=piped, force_terminal=False))
    with progress_display() as report:
        report("read", 3, 10)
    assert piped.getvalue() == ""


def test_whatif_reports_each_batch_of_proposals_decided_and_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tidegate.ops.whatif.PROGRESS_EVERY", 2)
    kit = KitSettings()
    proposals = [proposal(n) for n in range(5)]
    seen: list[int] = []
    report = evaluate(
        load_pack(kit.policy_dir, kit.tools_dir), proposals, [decided(p, "allow", "within_threshold") for p in proposals],
        progress=seen.append,
    )  # fmt: skip
    assert report.evaluated == 5
    assert seen == [2, 4, 5]


def test_reading_the_audit_log_reports_the_rows_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from services.audit import PostgresAuditLog

    class Row:
        topic, partition, duplicate, valid, invalid_reason = "tidegate.deadletter", 0, False, True, None  # not a window topic: skipped
        value = b"{}"

        def __init__(self, offset: int) -> None:
            self.kafka_offset = offset

    class Log:
        async def search(self, *args: Any, **kw: Any) -> list[Any]:
            return [Row(n) for n in range(5)]

        async def close(self) -> None:
            return None

    async def connect(*args: Any, **kw: Any) -> Log:
        return Log()

    monkeypatch.setattr(PostgresAuditLog, "connect", connect)
    monkeypatch.setattr(tidegate.ops.recorded, "_AUDIT_PROGRESS_EVERY", 2)
    seen: list[tuple[int, int]] = []
    asyncio.run(tidegate.ops.recorded.read_audit_window("postgresql://x", "tidegate.", None, None, progress=lambda *a: seen.append(a)))
    assert seen == [(0, 5), (2, 5), (4, 5), (5, 5)]


@pytest.mark.parametrize("as_json", [True, False])
def test_costs_feeds_the_display_and_its_json_is_the_report_alone(
    as_json: bool, terminal: io.StringIO, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """Read from the topics (`--source topics`): the reader's progress reaches the bar; --json draws none and prints JSON only."""
    fed: list[tuple[int, int]] = []

    async def recorded_window(kit: Any, t0: Any, t1: Any, **options: Any) -> Window:
        for done in (1, 2):
            options["progress"](done, 2)
            fed.append((done, 2))
        return Window()

    monkeypatch.setattr(tidegate.ops.recorded, "recorded_window", recorded_window)
    args = ["costs", "--source", "topics", "--no-chart", *(["--json"] if as_json else [])]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert fed == [(1, 2), (2, 2)]
    if as_json:
        assert terminal.getvalue() == ""
        assert json.loads(result.stdout)["source"] == "topics"
    else:
        assert "reading recorded events" in terminal.getvalue()
        assert "2/2" in terminal.getvalue()
        assert "reading recorded events" not in result.stdout
