"""`tidegate db rotate --operator` refuses, in one line and before reaching the database, what it cannot rotate (rotation F2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import servicekit.dbroles
from tidegate.cli import app


def _never(*_: object, **__: object) -> None:
    raise AssertionError("the database was reached")


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"TIDEGATE_DATABASE_URL": "postgresql://tidegate:s3cret@127.0.0.1:1/tidegate"}, "is in TIDEGATE_DATABASE_URL"),
        ({}, "no operator passfile at"),
    ],
)
def test_a_password_it_cannot_write_is_refused_naming_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], said: str
) -> None:
    monkeypatch.setattr(servicekit.dbroles, "rotate_operator", _never)
    monkeypatch.setenv("TIDEGATE_DATABASE_PASSFILE", str(tmp_path / "missing.pgpass"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    answer = CliRunner().invoke(app, ["db", "rotate", "--operator"], env={"COLUMNS": "300"})
    assert answer.exit_code == 2, answer.output
    assert said in answer.output
