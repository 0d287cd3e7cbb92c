"""Services a killed supervisor left running are found by the pid and start `up.json` names (an on-call probe: `status`
said `not running`, `down` stopped nothing, and `up` started a second set that crash-looped on their ports)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tidegate.cli import app
from tidegate.commands import services
from tidegate.commands._supervised import Child, Supervised, left_running, process_start, record_path, save


@pytest.fixture(autouse=True)
def _run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "400")


@pytest.fixture
def orphan() -> Iterator[subprocess.Popen[bytes]]:
    """A service whose supervisor was killed: it runs on."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def left_by_a_killed_supervisor(run_dir: Path, children: dict[str, Child]) -> None:
    """The pid file and record of a supervisor that is gone (its pid is now this process's, which started later)."""
    start = process_start(os.getpid())
    assert start is not None, "these tests read /proc"
    (run_dir / "up.pid").write_text(f"{os.getpid()} {start - 1}")
    gone = Supervised(supervisor_pid=os.getpid(), supervisor_start=start - 1, started_at=datetime.now(UTC), services=children)
    save(record_path(run_dir), gone)


def running(proc: subprocess.Popen[bytes], start: int | None = None) -> Child:
    return Child(state="running", pid=proc.pid, pid_start=process_start(proc.pid) if start is None else start, started_at=datetime.now(UTC))


def test_status_names_the_services_a_gone_supervisor_left_running(tmp_path: Path, orphan: subprocess.Popen[bytes]) -> None:
    left_by_a_killed_supervisor(tmp_path, {"policy": running(orphan)})
    out = CliRunner().invoke(app, ["status"])
    assert out.exit_code == 1, out.output  # not 3 (`not running`): they run, and nothing restarts them
    assert f"supervisor gone, 1 service still running (pids {orphan.pid} policy), unsupervised: `tidegate down` stops them" in out.output
    answer = json.loads(CliRunner().invoke(app, ["status", "--json"]).stdout.splitlines()[0])
    assert answer["left_running"] == [{"service": "policy", "pid": orphan.pid}]


def test_down_stops_them_by_pid_and_start(tmp_path: Path, orphan: subprocess.Popen[bytes]) -> None:
    left_by_a_killed_supervisor(tmp_path, {"policy": running(orphan)})
    out = CliRunner().invoke(app, ["down", "--timeout", "10"])
    assert out.exit_code == 0, out.output
    assert f"supervisor gone, 1 service still running (pids {orphan.pid} policy): stopping them" in out.output
    assert "services stopped" in out.output
    assert orphan.wait(timeout=5) == -15  # SIGTERM: a service stops cleanly on it
    assert not record_path(tmp_path).exists()
    assert "services are not running" in CliRunner().invoke(app, ["down"]).output


def test_up_refuses_to_start_a_second_set_beside_them(
    tmp_path: Path, orphan: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    supervised: list[tuple[str, ...]] = []

    async def record_names(names: tuple[str, ...]) -> None:
        supervised.append(names)

    monkeypatch.setattr(services, "supervise", record_names)
    left_by_a_killed_supervisor(tmp_path, {"policy": running(orphan)})
    out = CliRunner().invoke(app, ["up"])
    assert out.exit_code == 1, out.output
    assert "supervisor gone, 1 service still running" in out.output
    assert "`tidegate down` stops them" in out.output
    assert supervised == []


def test_a_process_that_is_not_the_recorded_one_is_not_taken(tmp_path: Path, orphan: subprocess.Popen[bytes]) -> None:
    start = process_start(orphan.pid)
    assert start is not None
    other_start = {"policy": running(orphan, start - 1)}  # the pid was given to another process since
    no_start = {"audit": running(orphan).model_copy(update={"pid_start": None})}  # recorded where /proc could not tell
    assert left_running(other_start | no_start) == {}
    left_by_a_killed_supervisor(tmp_path, other_start | no_start)
    assert CliRunner().invoke(app, ["status"]).exit_code == 3
    assert "services are not running" in CliRunner().invoke(app, ["down", "--timeout", "2"]).output
    assert orphan.poll() is None
