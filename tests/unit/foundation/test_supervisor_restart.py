"""Restarting one service under `tidegate up` (a platform probe: SIGTERM to its pid was the only way, and the supervisor took the
clean exit 0 for a crash and waited out a 30 s backoff): `tidegate restart SERVICE`, and an exit 0 nobody asked for restarts at once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from servicekit import REPO_ROOT
from tidegate.cli import app
from tidegate.commands import restart
from tidegate.commands._supervised import Child, Supervised, load, record_path, restart_request, save
from tidegate.commands._supervisor import Backoff, supervise

SLOW = "Backoff(initial_s=30, max_s=30)"  # a restart taken for a crash would wait 30 s: longer than any wait below

# A service as the supervisor sees one: ready once started (its ready file), exit 0 on SIGTERM after saying so. Started the
# first time with a marker file named in argv[1] missing, it dies at once with 1 (a crash) instead.
CHILD = """
import os, pathlib, signal, sys, time
marker = pathlib.Path(sys.argv[1])
if not marker.exists():
    marker.write_text("")
    sys.exit(1)
signal.signal(signal.SIGTERM, lambda *_: (print(f"{os.getpid()} stopping cleanly", flush=True), sys.exit(0)))
pathlib.Path(os.environ["TIDEGATE_READY_DIR"], "policy.ready").write_text("")
while True:
    time.sleep(1)
"""

SUPERVISOR = f"""
import asyncio, sys
from tidegate.commands._supervisor import Backoff, supervise
command = lambda name: [sys.executable, "-c", sys.argv[1], sys.argv[2]]
asyncio.run(supervise(("policy",), make_backoff=lambda: {SLOW}, command=command))
"""


def poll(condition: Callable[[], object], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def policy(run_dir: Path) -> Child | None:
    record = load(record_path(run_dir)) if record_path(run_dir).exists() else None
    return None if record is None else record.services.get("policy")


def up(tmp_path: Path, *, crash_first: bool) -> subprocess.Popen[bytes]:
    """A supervisor of one fake policy (its pid in `up.pid`, as `tidegate up` writes it); stdout in `<tmp>/supervisor.out`."""
    marker = tmp_path / "crashed-once"
    if not crash_first:
        marker.write_text("")
    env = os.environ | {"TIDEGATE_RUN_DIR": str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    env.pop("TIDEGATE_METRICS_PORT", None)
    with open(tmp_path / "supervisor.out", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR, CHILD, str(marker)], env=env, stdout=out, stderr=subprocess.STDOUT)
    (tmp_path / "up.pid").write_text(str(proc.pid))
    return proc


@pytest.fixture
def operator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    monkeypatch.delenv("TIDEGATE_METRICS_PORT", raising=False)
    monkeypatch.setenv("COLUMNS", "400")
    return CliRunner()


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(30)


def test_restart_stops_the_service_cleanly_and_starts_it_again_at_once(tmp_path: Path, operator: CliRunner) -> None:
    supervisor = up(tmp_path, crash_first=False)
    try:
        assert poll(lambda: (tmp_path / "ready" / "policy.ready").exists(), 30), "the fake policy never got ready"
        first = policy(tmp_path)
        assert first is not None
        began = time.monotonic()
        done = operator.invoke(app, ["restart", "policy", "--wait", "20"])
        took = time.monotonic() - began
        again = policy(tmp_path)
        assert again is not None
        assert done.exit_code == 0, done.output
        assert done.output.strip() == f"policy restarted (pid {again.pid}) and healthy"
        assert took < 10  # not the 30 s backoff of a crash
        assert (again.state, again.restarts, again.last_exit) == ("running", 1, 0)
        assert again.pid != first.pid
        assert f"{first.pid} stopping cleanly" in (tmp_path / "logs" / "policy.log").read_text()  # SIGTERM, not a kill
        assert not restart_request(tmp_path, "policy").exists()

        os.kill(again.pid or 0, signal.SIGTERM)  # what an operator did before `tidegate restart`: not a crash either
        assert poll(lambda: (p := policy(tmp_path)) is not None and p.restarts == 2 and p.state == "running", 10)
    finally:
        stop(supervisor)
    said = (tmp_path / "supervisor.out").read_text()
    assert "policy: restart asked (`tidegate restart`); stopping it" in said
    assert "policy exited with 0 (stopped for `tidegate restart`); starting it again now" in said
    assert "policy exited with 0 (a clean stop the supervisor did not ask for); starting it again now" in said


def test_restart_starts_a_service_waiting_out_its_backoff_now(tmp_path: Path, operator: CliRunner) -> None:
    supervisor = up(tmp_path, crash_first=True)
    try:
        assert poll(lambda: (p := policy(tmp_path)) is not None and p.state == "restarting", 30), "the first start did not crash"
        done = operator.invoke(app, ["restart", "policy", "--wait", "20"])  # its backoff has 30 s left
        assert done.exit_code == 0, done.output
        again = policy(tmp_path)
        assert again is not None
        assert (again.state, again.restarts, again.last_exit) == ("running", 1, 1)
    finally:
        stop(supervisor)
    assert "starting it now, not after its delay" in (tmp_path / "supervisor.out").read_text()


async def test_a_clean_exit_the_supervisor_did_not_ask_for_is_restarted_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    seen: list[tuple[int | None, float | None]] = []
    stopping = asyncio.Event()

    def on_restart(name: str, code: int | None, delay: float | None) -> None:
        seen.append((code, delay))
        if len(seen) >= 2:
            stopping.set()

    await asyncio.wait_for(
        supervise(
            ("policy",),
            make_backoff=lambda: Backoff(initial_s=30, max_s=30),
            command=lambda name: [sys.executable, "-c", "pass"],
            stopping=stopping,
            on_restart=on_restart,
        ),
        timeout=20,
    )
    assert seen == [(0, 0.0), (0, 0.0)]


def test_restart_without_a_supervisor_says_so_and_exits_3(tmp_path: Path, operator: CliRunner) -> None:
    done = operator.invoke(app, ["restart", "policy"])
    assert done.exit_code == 3
    assert done.output.startswith("error: services are not running: no `tidegate up`"), done.output


def test_restart_of_an_unknown_service_is_refused_in_one_line(operator: CliRunner) -> None:
    done = operator.invoke(app, ["restart", "polcy"])
    assert done.exit_code == 2
    assert done.output == "error: unknown service 'polcy'; choose one of policy, approval, executor, planner, audit\n"


def test_restart_that_the_supervisor_does_not_take_fails_and_leaves_no_request(
    tmp_path: Path, operator: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `tidegate up` older than `tidegate restart` never takes the request: said, not waited on for ever, nor left for later."""
    monkeypatch.setattr(restart, "TAKEN_S", 0.3)
    (tmp_path / "up.pid").write_text(str(os.getpid()))  # this process plays an older supervisor
    child = Child(state="running", pid=os.getpid(), started_at=datetime.now(UTC))
    save(record_path(tmp_path), Supervised(supervisor_pid=os.getpid(), started_at=child.started_at, services={"policy": child}))
    done = operator.invoke(app, ["restart", "policy"])
    assert done.exit_code == 1
    assert "`tidegate up` did not take the request" in done.output
    assert not restart_request(tmp_path, "policy").exists()
