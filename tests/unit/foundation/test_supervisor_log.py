"""`supervisor.log`, the detached supervisor's own log, is rotated like a service's log and kept private (it grew for ever: a
line per start, death and restart); what a service prints reaches its log as it prints it, so `kill -9` of the supervisor
loses none of it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from servicekit import EX_CONFIG, REPO_ROOT
from tidegate.commands._supervisor import Backoff, saying_into, supervise

STAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def poll(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def env_for(run_dir: Path) -> dict[str, str]:
    env = os.environ | {"TIDEGATE_RUN_DIR": str(run_dir), "PYTHONPATH": str(REPO_ROOT)}
    env.pop("TIDEGATE_METRICS_PORT", None)
    env.pop("PYTHONUNBUFFERED", None)  # as a user's shell has it: not set
    return env


async def test_the_supervisor_log_is_rotated_at_line_ends_and_kept_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    monkeypatch.delenv("TIDEGATE_METRICS_PORT", raising=False)
    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "supervisor.log"
    path.write_text("2026-01-01T00:00:00.000Z written by an older version\n")
    path.chmod(0o644)
    deaths = 0
    stopping = asyncio.Event()

    def on_restart(name: str, code: int | None, delay: float | None) -> None:
        nonlocal deaths
        deaths += 1
        if deaths == 12:
            stopping.set()

    with saying_into(path, max_bytes=600, keep=2):
        await asyncio.wait_for(
            supervise(
                ("policy",),
                make_backoff=lambda: Backoff(initial_s=0.01, max_s=0.01),
                command=lambda name: [sys.executable, "-c", "raise SystemExit(3)"],
                stopping=stopping,
                on_restart=on_restart,
            ),
            timeout=60,
        )
    kept = [logs / "supervisor.log.2", logs / "supervisor.log.1", path]
    assert sorted(p.name for p in logs.iterdir() if p.name.startswith("supervisor")) == sorted(p.name for p in kept)  # keep=2
    assert {mode(p) for p in kept} == {0o600}  # the older version's 0644 file too, rotated and all
    assert all(0 < p.stat().st_size <= 600 for p in kept)
    assert all(p.read_bytes().endswith(b"\n") for p in kept)  # rotated at a line's end
    lines = [line for p in kept for line in p.read_text().splitlines()]
    assert all(STAMPED.match(line) for line in lines), lines  # whole lines: none cut in two
    assert [line.split(" ", 1)[0] for line in lines] == sorted(line.split(" ", 1)[0] for line in lines)  # in order
    assert "older version" not in "".join(lines)  # about 24 lines of ~70 bytes: the oldest went
    assert lines[-1].endswith(" stopped")


# What `tidegate up --detach` runs (`--own-log`) with its stdout and stderr the supervisor.log the detaching command opened:
# its lines go through its rotated log, and what it prints outside it (a traceback) follows the current file.
FOLLOWED = """
import sys
from pathlib import Path
from tidegate.commands._supervisor import say, saying_into
with saying_into(Path(sys.argv[1]), max_bytes=200, keep=1, follow=(1, 2)):
    for i in range(7):  # ~33 bytes each: the 7th starts a new file
        say(f"line {i:02d}")
    print("Traceback: printed outside `say`", file=sys.stderr, flush=True)
"""


def test_what_the_detached_supervisor_prints_outside_its_log_lands_in_the_current_file(tmp_path: Path) -> None:
    path = tmp_path / "supervisor.log"
    with path.open("ab") as out:
        done = subprocess.run([sys.executable, "-c", FOLLOWED, str(path)], stdout=out, stderr=out, env=env_for(tmp_path), timeout=60)
    assert done.returncode == 0, path.read_text()
    current = path.read_text().splitlines()
    assert len(current) == 2
    assert current[0].endswith(" line 06")
    assert current[1] == "Traceback: printed outside `say`"  # not in the file its stderr was opened on, rotated since
    assert "Traceback" not in (tmp_path / "supervisor.log.1").read_text()


def test_up_detached_supervisor_says_into_supervisor_log_not_stdout(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "supervisor.log").write_text("")
    (logs / "supervisor.log").chmod(0o644)  # left by an older version
    env = env_for(tmp_path) | {"TIDEGATE_POLICY_AUTHORIZATION_TTL_S": "-5"}  # policy does not start: the supervisor ends
    argv = [sys.executable, "-m", "tidegate.cli", "up", "--own-log", "--only", "policy"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == EX_CONFIG, done.stderr
    assert (done.stdout, done.stderr) == ("", "")  # stdout and stderr follow the log
    said = (logs / "supervisor.log").read_text()
    assert "supervising policy" in said
    assert "policy did not start, and is not restarted: policy: not started: 1 setting(s) not valid; TIDEGATE_POLICY_AUTH" in said
    assert "error: not started, settings not valid: policy" in said
    assert mode(logs / "supervisor.log") == 0o600


SUPERVISOR = """
import asyncio, sys
from tidegate.commands._supervisor import supervise
asyncio.run(supervise(("policy",), command=lambda name: [sys.executable, "-c", sys.argv[1]]))
"""
# A service that prints without flushing (a print to a pipe waits in a buffer by default), then runs on.
SERVICE = "import time\nprint('last words before the kill')\ntime.sleep(120)"


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_what_a_service_prints_is_in_its_log_before_a_kill_9_of_the_supervisor(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "policy.log"
    supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISOR, SERVICE], env=env_for(tmp_path), stdout=subprocess.DEVNULL)
    try:
        # Nothing waits in a buffer, the service's or the supervisor's: the line is in the file while both run.
        assert poll(lambda: log.exists() and "last words" in log.read_text(), 30), "the line waits in a buffer"
    finally:
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait()
    assert log.read_text().splitlines()[-1] == "last words before the kill"
