"""A supervisor that was killed leaves its pid file and record behind; its pid is then given to another process.

`tidegate down` must not stop that process, `status` must not call it running, `up` must not refuse to start because
of it (a security review: `down` sent SIGTERM to an unrelated process, exit 143). The files name processes to stop,
so only their owner reads them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tidegate.cli import app
from tidegate.commands._supervised import Child, Supervised, process_start, record_path, save
from tidegate.commands.services import _write_pidfile, supervisor_pid


@pytest.fixture(autouse=True)
def _run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "400")


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A process that has nothing to do with Tidegate; it stands for the one the kernel gave a dead supervisor's pid."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def left_by_a_killed_supervisor(run_dir: Path, pid: int) -> None:
    """The pid file and record a supervisor that had `pid` (started earlier than the process that has it now) left."""
    start = process_start(pid)
    assert start is not None, "these tests read /proc"
    (run_dir / "up.pid").write_text(f"{pid} {start - 1}")
    child = Child(state="running", pid=pid, pid_start=start - 1, started_at=datetime.now(UTC))
    save(
        record_path(run_dir),
        Supervised(supervisor_pid=pid, supervisor_start=start - 1, started_at=datetime.now(UTC), services={"policy": child}),
    )


def test_down_leaves_a_process_that_took_a_dead_supervisors_pid_alone(tmp_path: Path, bystander: subprocess.Popen[bytes]) -> None:
    left_by_a_killed_supervisor(tmp_path, bystander.pid)
    assert supervisor_pid() is None
    out = CliRunner().invoke(app, ["down", "--timeout", "2"])
    assert "not running" in out.output, out.output
    time.sleep(0.3)
    assert bystander.poll() is None  # it was SIGTERMed (exit 143)


def test_status_calls_a_service_whose_pid_was_taken_by_another_process_not_running(
    tmp_path: Path, bystander: subprocess.Popen[bytes]
) -> None:
    _write_pidfile()  # this test process plays a live supervisor, whose child died and whose pid the bystander has
    start = process_start(bystander.pid)
    assert start is not None
    child = Child(state="running", pid=bystander.pid, pid_start=start - 1, started_at=datetime.now(UTC))
    save(
        record_path(tmp_path),
        Supervised(
            supervisor_pid=os.getpid(),
            supervisor_start=process_start(os.getpid()),
            started_at=datetime.now(UTC),
            services={"policy": child},
        ),
    )
    out = CliRunner().invoke(app, ["status"])
    assert out.exit_code == 1, out.output
    assert "not running" in out.output
    assert "all healthy" not in out.output


def test_the_live_supervisor_is_still_found(tmp_path: Path) -> None:
    _write_pidfile()
    assert supervisor_pid() == os.getpid()
    (tmp_path / "up.pid").write_text(str(os.getpid()))  # a pid file of the pid alone, as written before: taken on the pid
    assert supervisor_pid() == os.getpid()


def test_the_pid_file_and_the_record_are_readable_by_their_owner_alone(tmp_path: Path) -> None:
    _write_pidfile()
    save(record_path(tmp_path), Supervised(supervisor_pid=os.getpid(), started_at=datetime.now(UTC)))
    assert (tmp_path / "up.pid").stat().st_mode & 0o777 == 0o600
    assert record_path(tmp_path).stat().st_mode & 0o777 == 0o600
