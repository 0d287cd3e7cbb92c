"""`tidegate up` restarts a dead service after a delay that doubles on quick deaths and resets after a healthy run; it says
when, in UTC, and records each child for `tidegate status`."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tidegate.cli import app
from tidegate.commands import services
from tidegate.commands._supervised import Child, load, record_path
from tidegate.commands._supervisor import Backoff, supervise


def test_the_delay_doubles_on_quick_deaths_up_to_the_maximum() -> None:
    backoff = Backoff(initial_s=1, max_s=8, healthy_s=60)
    assert [backoff.after_death(ran_s=2) for _ in range(6)] == [1, 2, 4, 8, 8, 8]


def test_a_healthy_run_resets_the_delay() -> None:
    backoff = Backoff(initial_s=1, max_s=30, healthy_s=60)
    assert [backoff.after_death(ran_s=1) for _ in range(4)] == [1, 2, 4, 8]
    assert backoff.after_death(ran_s=60) == 1  # ran an hour's minute: the crash is news, not a loop
    assert backoff.after_death(ran_s=1) == 2
    assert backoff.after_death(ran_s=59.9) == 4


def test_a_run_after_the_service_said_it_was_ready_resets_the_delay_sooner() -> None:
    killed = Backoff(initial_s=1, max_s=30, healthy_s=60, ready_healthy_s=10)
    assert [killed.after_death(ran_s=20, was_ready=True) for _ in range(5)] == [1, 1, 1, 1, 1]  # killed from outside
    looping = Backoff(initial_s=1, max_s=30, healthy_s=60, ready_healthy_s=10)
    assert [looping.after_death(ran_s=20) for _ in range(3)] == [1, 2, 4]  # never ready: dying at start-up
    assert looping.after_death(ran_s=5, was_ready=True) == 8  # dies just after it is ready: still a loop
    assert looping.after_death(ran_s=10, was_ready=True) == 1


DIES_AT_ONCE = "import sys; sys.exit(3)"
# Says it is ready, as a service does once it joined its groups and caught up (servicekit.runner), then dies.
DIES_WHEN_READY = "import os, pathlib, sys; (pathlib.Path(os.environ['TIDEGATE_READY_DIR']) / 'policy.ready').touch(); sys.exit(3)"


async def run_supervisor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: object, restarts: int, child: str = DIES_AT_ONCE
) -> list[float]:
    """Supervise one child that always exits at once (`child`), until it has been restarted `restarts` times; the delays chosen."""
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    delays: list[float] = []
    stopping = asyncio.Event()

    def on_restart(name: str, code: int | None, delay: float | None) -> None:
        assert (name, code) == ("policy", 3)
        delays.append(delay)
        if len(delays) >= restarts:
            stopping.set()

    await asyncio.wait_for(
        supervise(
            ("policy",),
            make_backoff=lambda: Backoff(initial_s=0.02, max_s=0.08, healthy_s=60),
            command=lambda name: [sys.executable, "-c", child],
            clock=clock,  # type: ignore[arg-type]
            stopping=stopping,
            on_restart=on_restart,
        ),
        timeout=20,
    )
    return delays


async def test_the_supervisor_backs_off_a_child_that_keeps_dying(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert await run_supervisor(tmp_path, monkeypatch, time.monotonic, 5) == [0.02, 0.04, 0.08, 0.08, 0.08]


async def test_the_supervisor_resets_the_delay_of_a_child_that_ran_long(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = itertools.count(step=100.0)  # every reading is 100 s after the last: each child "ran" past healthy_s
    assert await run_supervisor(tmp_path, monkeypatch, lambda: next(ticks), 4) == [0.02, 0.02, 0.02, 0.02]


async def test_the_supervisor_restarts_at_once_a_ready_child_killed_every_20_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SRE game day: five `kill -9`s of the executor 20 s apart waited 1, 2, 4, 8 and 16 s; a ready child's do not."""
    ticks = itertools.count(step=20.0)  # every reading is 20 s after the last: each child ran 20 s, short of healthy_s
    assert await run_supervisor(tmp_path, monkeypatch, lambda: next(ticks), 4, child=DIES_WHEN_READY) == [0.02, 0.02, 0.02, 0.02]


STAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S")


async def test_every_line_of_the_supervisor_starts_with_its_time_in_utc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    await run_supervisor(tmp_path, monkeypatch, time.monotonic, 2)
    lines = capsys.readouterr().out.splitlines()
    assert any("policy exited with 3; restarting in 0s" in line for line in lines), lines
    assert lines
    assert all(STAMPED.match(line) for line in lines), lines
    stamps = [datetime.fromisoformat(line.split(" ", 1)[0]) for line in lines]
    assert stamps == sorted(stamps)
    assert before <= stamps[0] <= datetime.now(UTC)  # UTC, not local time: read beside other logs


async def test_the_supervisor_records_each_child_and_its_restarts_for_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("TIDEGATE_METRICS_PORT", "9300")
    monkeypatch.setenv("TIDEGATE_METRICS_HOST", "0.0.0.0")  # bound by nobody here: a wildcard is probed on the loopback
    seen: list[Child] = []
    stopping = asyncio.Event()

    def on_restart(name: str, code: int | None, delay: float | None) -> None:
        record = load(record_path(tmp_path))
        assert record is not None
        assert record.supervisor_pid == os.getpid()
        seen.append(record.services[name])
        if len(seen) >= 3:
            stopping.set()

    await asyncio.wait_for(
        supervise(
            ("audit",),
            make_backoff=lambda: Backoff(initial_s=0.02, max_s=0.02, healthy_s=60),
            command=lambda name: [sys.executable, "-c", "import sys; sys.exit(3)"],
            stopping=stopping,
            on_restart=on_restart,
        ),
        timeout=20,
    )
    assert [(c.state, c.restarts, c.last_exit) for c in seen] == [("restarting", 0, 3), ("restarting", 1, 3), ("restarting", 2, 3)]
    assert {c.health_url for c in seen} == {"http://127.0.0.1:9304/health"}  # audit is the fifth: base + 4
    assert all(c.restart_at is not None and c.restart_at >= c.started_at for c in seen)
    assert not record_path(tmp_path).exists()  # stopped: nothing for `status` to mistake for a running service


def test_up_refuses_a_metrics_base_whose_last_port_is_past_65535(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "400")
    supervised: list[tuple[str, ...]] = []

    async def record_names(names: tuple[str, ...]) -> None:
        supervised.append(names)

    monkeypatch.setattr(services, "supervise", record_names)
    monkeypatch.setenv("TIDEGATE_METRICS_PORT", "65533")
    refused = CliRunner().invoke(app, ["up"])
    assert refused.exit_code == 2, refused.output
    assert refused.output.count("\n") == 1, refused.output  # one line
    assert "TIDEGATE_METRICS_PORT=65533" in refused.output
    assert "planner's 65536, audit's 65537 are outside 1-65535; set a base from 1 to 65531" in refused.output
    assert supervised == []  # nothing started
    assert CliRunner().invoke(app, ["up", "--only", "approval"]).exit_code == 0  # 65534: fits
    monkeypatch.setenv("TIDEGATE_METRICS_PORT", "65531")
    assert CliRunner().invoke(app, ["up"]).exit_code == 0
    assert supervised == [("approval",), services.SERVICES]


async def test_a_record_that_cannot_be_written_is_said_and_the_supervision_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "up.json.part").mkdir()  # where each record is written first: the write fails (root ignores file modes)
    assert await run_supervisor(tmp_path, monkeypatch, time.monotonic, 3) == [0.02, 0.04, 0.08]
    said = capsys.readouterr().out
    assert f"cannot write {tmp_path / 'up.json'} (`tidegate status` reads it): [Errno 21] Is a directory" in said


def test_a_child_killed_by_a_signal_is_said_so() -> None:
    """An SRE probe read `executor exited with -9` at 3 a.m.: a kill (the OOM killer's, an operator's) is not a crash."""
    from tidegate.commands._supervisor import ended_as

    assert ended_as(-9) == "was killed by signal 9 (SIGKILL)"
    assert ended_as(1) == "exited with 1"
