"""A setting that is not valid is named, with why, before anything starts: never a traceback, never a restart loop."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from typer.testing import CliRunner

from servicekit import EX_CONFIG, REPO_ROOT, KitSettings, settings_problems
from services.policy.settings import PolicySettings
from tidegate.cli import app
from tidegate.commands import services
from tidegate.commands._supervisor import Backoff, supervise


def problems_of(make: object) -> list[str] | None:
    with pytest.raises(ValidationError) as caught:
        make()  # type: ignore[operator]
    return settings_problems(caught.value)


def test_each_problem_names_the_variable_as_it_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_TOPIC_PARTITIONS", "0")
    monkeypatch.setenv("TIDEGATE_KAFKA_REQUEST_TIMEOUT_MS", "soon")
    assert problems_of(KitSettings) == [
        "TIDEGATE_KAFKA_REQUEST_TIMEOUT_MS: Input should be a valid integer, unable to parse string as an integer (got 'soon')",
        "TIDEGATE_TOPIC_PARTITIONS: Input should be greater than or equal to 1 (got '0')",
    ]
    monkeypatch.setenv("TIDEGATE_POLICY_AUTHORIZATION_TTL_S", "-5")  # a service's own prefix
    assert problems_of(PolicySettings) == ["TIDEGATE_POLICY_AUTHORIZATION_TTL_S: Input should be greater than 0 (got '-5')"]


def test_a_log_level_logging_does_not_know_is_refused_before_start_and_any_case_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_LOG_LEVEL", "loud")  # logging.basicConfig would raise at start, after the settings were read
    levels = "'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL'"
    assert problems_of(KitSettings) == [f"TIDEGATE_LOG_LEVEL: Input should be {levels} (got 'LOUD')"]
    monkeypatch.setenv("TIDEGATE_LOG_LEVEL", "warning")
    assert KitSettings().log_level == "WARNING"


class _Hooks(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIDEGATE_HOOKS_")
    signing_secret: int = 0


def test_a_value_that_may_be_a_secret_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_HOOKS_SIGNING_SECRET", "whsec_do-not-print")
    problems = problems_of(_Hooks)
    assert problems is not None
    assert problems[0].startswith("TIDEGATE_HOOKS_SIGNING_SECRET: Input should be a valid integer")
    assert "whsec" not in "".join(problems)


class _NotSettings(BaseModel):
    n: int


def test_a_validation_error_that_is_not_a_settings_one_is_left_alone() -> None:
    assert problems_of(lambda: _NotSettings(n="x")) is None  # type: ignore[arg-type]


def test_a_cli_command_says_which_setting_and_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_TOPIC_PARTITIONS", "0")
    result = CliRunner().invoke(app, ["topics", "list"])
    assert result.exit_code == 2
    assert "TIDEGATE_TOPIC_PARTITIONS: Input should be greater than or equal to 1" in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_a_service_with_a_bad_setting_exits_ex_config_before_it_connects() -> None:
    env = os.environ | {"TIDEGATE_POLICY_AUTHORIZATION_TTL_S": "-5", "TIDEGATE_KAFKA_BOOTSTRAP": "127.0.0.1:9"}  # nowhere
    command = [sys.executable, "-m", "tidegate.cli", "service", "run", "policy"]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == EX_CONFIG
    assert done.stderr.splitlines()[-2:] == [
        "policy: not started: 1 setting(s) not valid",
        "  TIDEGATE_POLICY_AUTHORIZATION_TTL_S: Input should be greater than 0 (got '-5')",
    ]


def test_a_service_whose_database_or_broker_is_not_there_says_so_in_one_line_and_exits_1_for_a_restart(tmp_path: Path) -> None:
    """Not a setting a person must fix (exit 1, restarted with backoff), and not a traceback of hundreds of lines."""
    for over, says in [
        ({"TIDEGATE_DATABASE_URL": "postgresql://127.0.0.1:9/tidegate"}, ("cannot reach PostgreSQL at 127.0.0.1:9",)),
        # the database is asked first: with none running (unit tests need none) it is what is said, else the broker; a
        # PostgreSQL of another checkout on the default port (a CI run beside) refuses this checkout's password
        (
            {"TIDEGATE_KAFKA_BOOTSTRAP": "127.0.0.1:9", "TIDEGATE_KAFKA_CREDENTIALS_DIR": "/nonexistent"},
            ("Unable to bootstrap", "cannot reach PostgreSQL", "password authentication failed"),
        ),
    ]:
        env = os.environ | {"TIDEGATE_POLICY_PROVENANCE_WAIT_S": "1"} | over  # nowhere: port 9 (discard) is closed here
        (tmp_path / "keys").mkdir(exist_ok=True)
        env |= {"TIDEGATE_KEYS_DIR": str(tmp_path / "keys")}  # the key it makes at start is not the checkout's
        command = [sys.executable, "-m", "tidegate.cli", "service", "run", "policy"]
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.stderr[-2000:]
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("policy: not started: "), last
        assert any(said in last for said in says), last
        assert "Traceback" not in done.stderr
        assert "Unclosed" not in done.stderr


async def test_the_supervisor_does_not_restart_a_service_whose_settings_are_not_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    seen: list[tuple[str, int | None, float | None]] = []
    stopping = asyncio.Event()
    says = "import sys; print('policy: not started: 1 setting(s) not valid', '  TIDEGATE_POLICY_X: bad', sep=chr(10), file=sys.stderr)"

    def command(name: str) -> list[str]:
        if name == "policy":
            return [sys.executable, "-c", f"{says}; sys.exit({EX_CONFIG})"]
        return [sys.executable, "-c", "import sys; sys.exit(3)"]  # a crash: restarted, as ever

    def on_restart(name: str, code: int | None, delay: float | None) -> None:
        seen.append((name, code, delay))
        if sum(1 for n, _, _ in seen if n == "audit") >= 3:
            stopping.set()

    await asyncio.wait_for(
        supervise(
            ("policy", "audit"),
            make_backoff=lambda: Backoff(initial_s=0.02, max_s=0.02, healthy_s=60),
            command=command,
            stopping=stopping,
            on_restart=on_restart,
        ),
        timeout=20,
    )
    assert [s for s in seen if s[0] == "policy"] == [("policy", EX_CONFIG, None)]  # once, never restarted
    assert (tmp_path / "ready" / "policy.failed").read_text() == "policy: not started: 1 setting(s) not valid; TIDEGATE_POLICY_X: bad"


def test_up_detached_says_at_once_which_setting_keeps_a_service_from_starting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("TIDEGATE_POLICY_AUTHORIZATION_TTL_S", "-5")
    monkeypatch.setenv("TIDEGATE_KAFKA_BOOTSTRAP", "127.0.0.1:9")  # nothing is reached before the settings are read
    result = CliRunner().invoke(app, ["up", "--detach", "--only", "policy", "--wait", "60"])
    said = " ".join(result.output.split())
    assert result.exit_code == EX_CONFIG, said
    assert "TIDEGATE_POLICY_AUTHORIZATION_TTL_S: Input should be greater than 0 (got '-5')" in said
    assert CliRunner().invoke(app, ["down", "--timeout", "20"]).exit_code == 0  # the supervisor ended with its last child


def test_a_request_timeout_too_short_is_named_alone_not_the_fetch_wait_derived_from_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_KAFKA_REQUEST_TIMEOUT_MS", "4")  # the fetch wait, unset, would be derived as 2: not the person's
    assert problems_of(KitSettings) == ["TIDEGATE_KAFKA_REQUEST_TIMEOUT_MS: Input should be greater than or equal to 1000 (got '4')"]
    monkeypatch.setenv("TIDEGATE_KAFKA_REQUEST_TIMEOUT_MS", "1000")
    assert KitSettings().fetch_max_wait_ms == 500  # a timeout it accepts still lowers the wait to half of it


def test_a_fetch_wait_the_request_timeout_would_cut_short_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_KAFKA_REQUEST_TIMEOUT_MS", "3000")
    monkeypatch.setenv("TIDEGATE_FETCH_MAX_WAIT_MS", "2000")
    with pytest.raises(
        ValidationError, match="TIDEGATE_FETCH_MAX_WAIT_MS \\(2000\\) must be at most half of TIDEGATE_KAFKA_REQUEST_TIMEOUT_MS"
    ):
        KitSettings()
    monkeypatch.setenv("TIDEGATE_FETCH_MAX_WAIT_MS", "1500")
    assert KitSettings().fetch_max_wait_ms == 1500


def test_an_unset_fetch_wait_stays_within_a_short_request_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    assert KitSettings().fetch_max_wait_ms == 2000  # the default: an idle consumer fetches every two seconds
    monkeypatch.setenv("TIDEGATE_KAFKA_REQUEST_TIMEOUT_MS", "3000")
    assert KitSettings().fetch_max_wait_ms == 1500  # a request timeout set short lowers the default, never refuses it
    monkeypatch.setenv("TIDEGATE_KAFKA_REQUEST_TIMEOUT_MS", "soon")
    with pytest.raises(ValidationError, match="kafka_request_timeout_ms"):
        KitSettings()  # a bad timeout is reported as itself, not as a fetch wait


def test_up_detached_waits_for_every_services_verdict_and_names_each_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second service failing a moment after the first is named too: one run of `up --detach` lists every fix."""
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    ready = tmp_path / "ready"

    class Supervisor:  # what `up --detach` starts, its services failing one after the other
        pid, returncode = 4242, None

        def __init__(self, *args: object, **kwargs: object) -> None:
            ready.mkdir(parents=True, exist_ok=True)
            (ready / "policy.failed").write_text("policy: not started: 1 setting(s) not valid; TIDEGATE_POLICY_X: bad")
            audit = "audit: not started: 1 setting(s) not valid; TIDEGATE_AUDIT_Y: bad"
            threading.Timer(1.5, (ready / "audit.failed").write_text, [audit]).start()
            threading.Timer(2.0, (ready / "planner.ready").touch).start()

        def poll(self) -> int | None:
            return None

    monkeypatch.setattr(services.subprocess, "Popen", Supervisor)
    result = CliRunner().invoke(app, ["up", "--detach", "--only", "policy", "--only", "audit", "--only", "planner", "--wait", "60"])
    said = " ".join(result.output.split())
    assert result.exit_code == EX_CONFIG, said
    assert "TIDEGATE_POLICY_X: bad" in said, said
    assert "TIDEGATE_AUDIT_Y: bad" in said, said
    assert "still starting" not in said, said  # the planner got ready within the wait: nothing is left unsaid


def test_up_detached_names_a_service_still_starting_when_another_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(services, "_SETTLE_S", 0.5)
    ready = tmp_path / "ready"

    class Supervisor:
        pid, returncode = 4242, None

        def __init__(self, *args: object, **kwargs: object) -> None:
            ready.mkdir(parents=True, exist_ok=True)
            (ready / "policy.failed").write_text("policy: not started: 1 setting(s) not valid; TIDEGATE_POLICY_X: bad")

        def poll(self) -> int | None:
            return None

    monkeypatch.setattr(services.subprocess, "Popen", Supervisor)
    result = CliRunner().invoke(app, ["up", "--detach", "--only", "policy", "--only", "executor", "--wait", "60"])
    said = " ".join(result.output.split())
    assert result.exit_code == EX_CONFIG, said
    assert "TIDEGATE_POLICY_X: bad; still starting: executor" in said, said
