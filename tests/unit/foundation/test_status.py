"""`tidegate status`: each service of the running `tidegate up`, its pid, uptime and restarts, and what its `/health` answers.

The record is the one the supervisor writes (tests/unit/foundation/test_supervisor.py checks it writes it); each `/health`
here is a real server of the kit's own (`serve_metrics_and_health`) on the loopback.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from servicekit.health import serve_metrics_and_health
from servicekit.health_file import STALE_AFTER_S, write_health
from tidegate.cli import app
from tidegate.commands._supervised import Child, Supervised, record_path, save
from tidegate.commands.status import EXIT_NOT_RUNNING, health_answer


@pytest.fixture(autouse=True)
def _run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("TIDEGATE_KAFKA_CREDENTIALS_DIR", str(tmp_path / "kafka"))  # no Kafka login files but a test's own
    monkeypatch.setenv("COLUMNS", "400")


@pytest.fixture
def health() -> Iterator[Callable[[dict[str, Any]], str]]:
    """Serve a `/health` answering `body` (200 when `body["ok"]`, else 503); returns its URL."""
    servers: list[Any] = []

    def serve(body: dict[str, Any]) -> str:
        servers.append(serve_metrics_and_health(0, lambda: body))
        return f"http://127.0.0.1:{servers[-1].server_port}/health"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def body(reason: str | None = None, retrying: str | None = None) -> dict[str, Any]:
    return {"ok": reason is None, "service": "x", "reason": reason, "retrying": retrying}


def a_dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)


def a_closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def running(url: str | None, *, restarts: int = 0, ago_s: float = 60) -> Child:
    started = datetime.now(UTC) - timedelta(seconds=ago_s)
    return Child(state="running", pid=os.getpid(), started_at=started, restarts=restarts, health_url=url)


def supervising(run_dir: Path, services: dict[str, Child], supervisor: int | None = None) -> None:
    """What a running `tidegate up` leaves: its pid file and its record (this test process plays the supervisor)."""
    pid = os.getpid() if supervisor is None else supervisor
    (run_dir / "up.pid").write_text(str(os.getpid()))
    save(record_path(run_dir), Supervised(supervisor_pid=pid, started_at=datetime.now(UTC), services=services))


def status(*args: str) -> Result:
    return CliRunner().invoke(app, ["status", *args])


def test_each_service_its_pid_uptime_restarts_and_what_health_answers(tmp_path: Path, health: Callable[[dict[str, Any]], str]) -> None:
    now = datetime.now(UTC)
    supervising(
        tmp_path,
        {
            "policy": running(health(body()), ago_s=2 * 3600 + 180),
            "approval": running(health(body(retrying="ConnectionRefusedError(111)")), restarts=2),
            "executor": running(health(body(reason="starting")), ago_s=3),
            "planner": Child(
                state="restarting", pid=a_dead_pid(), started_at=now, restarts=3, last_exit=1, restart_at=now + timedelta(hours=1)
            ),
            "audit": running(f"http://127.0.0.1:{a_closed_port()}/health"),
        },
    )
    said = status("--json")
    assert said.exit_code == 1, said.output  # not all healthy
    report = json.loads(said.output)
    assert report["supervisor_pid"] == os.getpid()
    assert report["healthy"] is False
    by = {s["service"]: s for s in report["services"]}
    assert [(s["service"], s["state"], s["health"], s["restarts"]) for s in report["services"]] == [
        ("policy", "running", "ok", 0),
        ("approval", "running", "retrying", 2),
        ("executor", "running", "starting", 0),
        ("planner", "restarting", "not running", 3),
        ("audit", "running", "unreachable", 0),
    ]
    assert by["policy"]["pid"] == os.getpid()
    assert by["policy"]["healthy"] is True
    assert 2 * 3600 + 180 <= by["policy"]["up_s"] < 2 * 3600 + 240
    assert by["approval"]["detail"] == "ConnectionRefusedError(111)"
    assert (by["planner"]["pid"], by["planner"]["last_exit"], by["planner"]["detail"]) == (None, 1, "exited with 1")
    assert "ConnectError" in by["audit"]["detail"]

    table = status()
    assert table.exit_code == 1
    lines = table.output.splitlines()
    assert lines[0].startswith(f"supervisor pid {os.getpid()} (`tidegate up`) since ")
    assert any("policy" in line and "2h 03m" in line and " ok " in line for line in lines), table.output
    assert any("planner" in line and re.search(r"restarting in (3600|35\d\d)s", line) for line in lines), table.output
    assert lines[-1] == "not healthy: approval, executor, planner, audit"


def test_all_healthy_exits_0_and_a_stalled_service_is_named_with_why(tmp_path: Path, health: Callable[[dict[str, Any]], str]) -> None:
    answer = body()
    supervising(tmp_path, {"policy": running(health(answer))})
    said = status()
    assert said.exit_code == 0, said.output
    assert said.output.splitlines()[-1] == "all healthy"
    answer |= body(reason="a record has been in handling for 301s")  # what the watchdog says before the process exits 75
    said = status("--json")
    assert said.exit_code == 1
    stalled = {"health": "unhealthy", "detail": "a record has been in handling for 301s"}
    assert json.loads(said.output)["services"][0].items() >= stalled.items()


def test_without_a_metrics_port_the_ready_file_says_whether_a_service_serves(tmp_path: Path) -> None:
    supervising(tmp_path, {"policy": running(None), "audit": running(None)})
    (tmp_path / "ready").mkdir()
    (tmp_path / "ready" / "policy.ready").write_text("ok")
    said = status("--json")
    assert said.exit_code == 1
    assert [(s["health"], s["probe"]) for s in json.loads(said.output)["services"]] == [("ready", "ready file"), ("starting", "ready file")]
    assert "no /health to ask (TIDEGATE_METRICS_PORT was not set for `tidegate up`)" in status().output


def test_without_a_metrics_port_a_broker_lost_is_said_as_the_watchdog_wrote_it_and_a_silent_watchdog_too(tmp_path: Path) -> None:
    """oncall3 (left alone): with no port, `status` said `all healthy` through a broker outage, from ready files written at start."""
    supervising(tmp_path, {"policy": running(None), "executor": running(None), "audit": running(None)})
    (tmp_path / "ready").mkdir()
    for name in ("policy", "executor", "audit"):
        (tmp_path / "ready" / f"{name}.ready").write_text("ok")
    silent = "the broker has not answered for 131s (since 2026-12-07 02:00:01 UTC; KafkaConnectionError)"
    write_health(tmp_path / "ready", "policy", body(reason=silent, retrying=silent))  # what its `/health` says, past the stall limit
    write_health(tmp_path / "ready", "executor", body(retrying="the broker has not answered for 15s"))  # within it: retrying
    write_health(tmp_path / "ready", "audit", body(), now=time.time() - STALE_AFTER_S - 5)  # its loop stopped writing
    said = status("--json")
    assert said.exit_code == 1, said.output
    by = {s["service"]: s for s in json.loads(said.output)["services"]}
    assert (by["policy"]["health"], by["policy"]["detail"]) == ("unhealthy", silent)
    assert (by["executor"]["health"], by["executor"]["detail"]) == ("retrying", "the broker has not answered for 15s")
    assert by["audit"]["health"] == "unhealthy"
    assert re.match(r"its watchdog last wrote its health (6[5-9]|[7-9]\d)s ago .*: hung, or stopped$", by["audit"]["detail"])
    assert status().output.splitlines()[-1] == "not healthy: policy, executor, audit"


def test_a_child_gone_before_the_supervisor_saw_it_is_not_running(tmp_path: Path, health: Callable[[dict[str, Any]], str]) -> None:
    url = health(body())  # something else answers on its port: not its process
    supervising(tmp_path, {"policy": Child(state="running", pid=a_dead_pid(), started_at=datetime.now(UTC), health_url=url)})
    said = status("--json")
    assert said.exit_code == 1
    assert json.loads(said.output)["services"][0].items() >= {"state": "exited", "health": "not running", "healthy": False}.items()


def test_no_supervisor_is_one_line_and_exit_3(tmp_path: Path) -> None:
    said = status()
    assert said.exit_code == EXIT_NOT_RUNNING
    assert said.output == f"services are not running: no `tidegate up` for {tmp_path} (`tidegate up --detach` starts them)\n"
    (tmp_path / "up.pid").write_text(str(a_dead_pid()))  # a supervisor killed with its pid file left behind
    said = status("--json")
    assert said.exit_code == EXIT_NOT_RUNNING
    assert json.loads(said.output.splitlines()[0]) == {"supervisor_pid": None, "healthy": False, "services": []}


def test_a_record_left_by_another_supervisor_is_not_read_as_this_ones(tmp_path: Path) -> None:
    supervising(tmp_path, {"policy": running(None)}, supervisor=a_dead_pid())
    said = status()
    assert said.exit_code == 1
    assert f"`tidegate up` (pid {os.getpid()}) has recorded no service yet" in said.output


@pytest.mark.parametrize(
    ("code", "answer", "means"),
    [
        (200, body(), ("ok", None)),
        (200, body(retrying="TimeoutError()"), ("retrying", "TimeoutError()")),
        (503, body(reason="starting"), ("starting", None)),
        (503, body(reason="producer dead: KafkaError()"), ("unhealthy", "producer dead: KafkaError()")),
        (200, "# HELP python_info", ("unhealthy", "HTTP 200, not the JSON of a Tidegate /health")),
    ],
)
def test_what_an_answer_of_health_means(code: int, answer: Any, means: tuple[str, str | None]) -> None:
    assert health_answer(code, answer) == means


def test_a_service_in_backoff_shows_the_line_it_printed_as_it_ended(tmp_path: Path) -> None:
    """`exited with 1` alone sent on-call to the log for the reason the service had said in one line."""
    now = datetime.now(UTC)
    said = "planner: not started: SchemaNotReady: schema planner is not at this code's version: run `tidegate db migrate`"
    (tmp_path / "logs").mkdir()
    stopped = "2026-12-04T02:43:50.714Z INFO servicekit.runner: planner stopped"
    (tmp_path / "logs" / "planner.log").write_text(f"{'x' * 5000}\n{stopped}\n{said}\n")  # more than the tail it reads
    (tmp_path / "logs" / "policy.log").write_text(f"{said}\nTraceback (most recent call last):\nKeyError: 'a later crash'\n")
    restarting = Child(state="restarting", pid=a_dead_pid(), started_at=now, last_exit=1, restart_at=now + timedelta(hours=1))
    supervising(tmp_path, {"planner": restarting, "policy": restarting, "audit": restarting})
    report = json.loads(status("--json").output)
    by = {s["service"]: s["detail"] for s in report["services"]}
    assert by == {
        "planner": f"exited with 1: {said}",
        "policy": "exited with 1",  # the line it ended with is another: the old one would mislead
        "audit": "exited with 1",  # no log
    }
    assert f"not running: exited with 1: {said}" in " ".join(status().output.split())


def test_a_service_running_on_a_retired_kafka_password_is_named_with_the_restart_that_fixes_it(
    tmp_path: Path, health: Callable[[dict[str, Any]], str]
) -> None:
    """As the operator after `tidegate infra rotate-login policy --leaked` (rotation.md F7): `status` said ok for the policy
    still running on the password the broker no longer has; it would fail at its next login, within the session bound."""
    logins = tmp_path / "kafka"
    logins.mkdir()
    for principal in ("policy", "executor", "audit"):
        (logins / f"{principal}.properties").write_text("rotated after the services started")
    (logins / "executor.properties.former").write_text("a rotation under way: the former password still logs in")
    old = os.utime(logins / "audit.properties", (0, 0))  # audit's login is older than its process
    assert old is None
    url = health(body())
    supervising(tmp_path, {"policy": running(url), "policy.2": running(url), "executor": running(url), "audit": running(url)})

    result = status("--json")

    assert result.exit_code == 1, result.output
    by = {s["service"]: s for s in json.loads(result.output.splitlines()[0])["services"]}
    for copy in ("policy", "policy.2"):
        assert by[copy]["health"] == "retired Kafka login"
        assert by[copy]["healthy"] is False
        assert f"tidegate restart {copy}" in by[copy]["detail"]
    assert by["executor"]["healthy"] is True  # mid-rotation: it still logs in until --finish; said, not failed
    assert "tidegate restart executor` before `--finish`" in by["executor"]["detail"]
    assert (by["audit"]["health"], by["audit"]["detail"]) == ("ok", None)
    assert status().output.splitlines()[-1] == "not healthy: policy, policy.2"
