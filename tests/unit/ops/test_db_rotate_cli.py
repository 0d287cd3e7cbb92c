"""`tidegate db rotate`: what the operator is told, and its exit status, from what the rotation found (the database stubbed).

The rotation itself, against the real server as the holder of the former password: tests/security/test_database_password_rotation.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import servicekit.dbroles
from servicekit.dbroles import CannotEndSessions, RotatedLogin
from tidegate.cli import app


def _stub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, found: RotatedLogin | Exception) -> list[dict[str, Any]]:
    monkeypatch.setenv("TIDEGATE_DB_CREDENTIALS_DIR", str(tmp_path / "db"))
    calls: list[dict[str, Any]] = []

    async def rotate_logins(dsn: str, services: Sequence[str], folder: Path, *, end_sessions: bool = False) -> list[RotatedLogin]:
        calls.append({"services": list(services), "end_sessions": end_sessions})
        if isinstance(found, Exception):
            raise found
        return [found for _ in services]

    monkeypatch.setattr(servicekit.dbroles, "rotate_logins", rotate_logins)
    return calls


def _run(*args: str) -> Any:
    return CliRunner().invoke(app, ["db", "rotate", *args], env={"COLUMNS": "300"})


def test_a_leaked_rotation_says_the_former_password_is_refused_and_no_old_session_is_left(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = _stub(monkeypatch, tmp_path, RotatedLogin("tidegate_executor", 3, old_password_refused=True, sessions_left=0))
    result = _run("executor", "--leaked")
    assert result.exit_code == 0, result.output
    assert calls == [{"services": ["executor"], "end_sessions": True}]
    assert "tidegate_executor: new password set" in result.output
    assert "3 session(s) ended; former password refused" in result.output
    assert "no session opened with a former password remains" in result.output


def test_a_former_password_that_still_logs_in_or_a_session_left_open_fails_the_rotation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _stub(monkeypatch, tmp_path, RotatedLogin("tidegate_audit", 1, old_password_refused=False, sessions_left=1))
    result = _run("audit", "--leaked")
    assert result.exit_code == 1
    assert "FORMER PASSWORD STILL LOGS IN" in result.output
    assert "1 SESSION(S) FROM BEFORE STILL OPEN" in result.output
    assert "done:" not in result.output


def test_an_operator_role_that_may_not_end_sessions_is_told_how_to_fix_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _stub(monkeypatch, tmp_path, CannotEndSessions("the operator role tidegate may not end other roles' sessions: GRANT pg_signal_backend"))
    result = _run("--all", "--leaked")
    assert result.exit_code == 1
    assert "pg_signal_backend" in result.output


def test_no_service_or_an_unknown_one_is_refused_before_anything_changes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = _stub(monkeypatch, tmp_path, RotatedLogin("x", 0, old_password_refused=True, sessions_left=0))
    assert _run().exit_code == 2
    unknown = _run("executr")
    assert unknown.exit_code == 2
    assert "no database login executr" in unknown.output
    assert calls == []


def test_the_operators_rotation_says_who_reads_the_new_password_and_not_that_services_use_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No service logs in as the operator's role: its new password is read from the passfile by the operator's commands."""
    passfile = tmp_path / "tidegate.pgpass"
    passfile.write_text("*:*:*:tidegate:old\n")
    monkeypatch.setenv("TIDEGATE_DATABASE_PASSFILE", str(passfile))
    monkeypatch.delenv("TIDEGATE_DATABASE_URL", raising=False)
    calls = _stub(monkeypatch, tmp_path, RotatedLogin("tidegate_policy", 0, old_password_refused=True, sessions_left=0))

    async def rotate_operator(dsn: str, file: Path, *, end_sessions: bool = False) -> RotatedLogin:
        return RotatedLogin("tidegate", 0, old_password_refused=True, sessions_left=0)

    monkeypatch.setattr(servicekit.dbroles, "rotate_operator", rotate_operator)
    alone = _run("--operator")
    assert alone.exit_code == 0, alone.output
    assert calls == []
    assert f"the operator's commands read theirs from {passfile} (no service logs in as the operator)" in alone.output
    assert "the services use" not in alone.output
    both = _run("policy", "--operator")
    assert both.exit_code == 0, both.output
    assert "the services use theirs at their next connection and the operator's commands read theirs" in both.output
