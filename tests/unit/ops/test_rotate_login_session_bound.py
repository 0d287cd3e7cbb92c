"""`tidegate infra rotate-login <principal> --leaked`: the operator is told when the thief's open sessions end.

As the security reviewer of a leaked Kafka password: before, the command said sessions opened with the former password
"stay open" and left the operator to restart the broker by hand. The broker now ends every login after
`connections.max.reauth.ms`, which the command reads from it and turns into a time; a broker that never ends one (started
before the setting, or set to 0) is named with what to do. The broker is stubbed here; the cut itself, on a real broker
with sessions of 8 s: tests/chaos/test_session_expiry.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import servicekit.bus_rotation
from servicekit.bus_rotation import Rotated
from tidegate.cli import app


def _stub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bound: float | None) -> None:
    monkeypatch.setenv("TIDEGATE_KAFKA_CREDENTIALS_DIR", str(tmp_path))

    async def rotate_now(bootstrap: str, folder: Path, principal: str) -> Rotated:
        return Rotated(principal, "SCRAM-SHA-256", True, "SCRAM-SHA-512", True)

    async def session_max_s(bootstrap: str, folder: Path) -> float | None:
        return bound

    monkeypatch.setattr(servicekit.bus_rotation, "rotate_now", rotate_now)
    monkeypatch.setattr(servicekit.bus_rotation, "session_max_s", session_max_s)


def _run(*args: str) -> Any:
    return CliRunner().invoke(app, ["infra", "rotate-login", *args], env={"COLUMNS": "400"})


def test_a_leaked_rotation_says_by_when_the_former_passwords_sessions_are_cut(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _stub(monkeypatch, tmp_path, 300.0)
    result = _run("agent", "--leaked")
    assert result.exit_code == 0, result.output
    assert "done: agent logs in with the new password only" in result.output
    assert "closed at its first request after" in result.output
    assert "UTC at the latest" in result.output
    assert "300 s" in result.output
    assert "stay open" not in result.output


def test_a_broker_that_never_ends_sessions_is_named_with_the_restart_that_fixes_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _stub(monkeypatch, tmp_path, None)
    result = _run("agent", "--leaked")
    assert result.exit_code == 0, result.output
    assert "never ends a session" in result.output
    assert "tidegate infra down && tidegate infra up" in result.output
    assert "done: agent logs in with the new password only" in result.output


def test_a_bound_the_broker_does_not_answer_leaves_a_rotation_that_took_reported_done(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The rotation took (new login checked, former refused); reading the bound then timed out: not a traceback and exit 1,
    which read as a failed rotation, but done, with the bound said unknown."""
    from aiokafka.errors import KafkaTimeoutError

    _stub(monkeypatch, tmp_path, 300.0)

    async def unanswered(bootstrap: str, folder: Path) -> float | None:
        raise KafkaTimeoutError("DescribeConfigs timed out")

    monkeypatch.setattr(servicekit.bus_rotation, "session_max_s", unanswered)
    result = _run("agent", "--leaked")
    assert result.exit_code == 0, result.output
    assert "done: agent logs in with the new password only" in result.output
    assert "session bound could not be read (KafkaTimeoutError" in result.output
    assert result.exception is None
