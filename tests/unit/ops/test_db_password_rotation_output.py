"""`tidegate db migrate` says whose password it set anew (platform probe F5).

Rotating a service's database password is: delete its login file, run `tidegate db migrate` (docs/security/database.md).
The command printed only `0 migrations applied now`, the same as when nothing happened: the platform engineer could not
tell from it that the rotation took place, nor for whom.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import tidegate.database
from servicekit import KitSettings
from servicekit.dbroles import credentials_file
from tidegate.cli import app

USERS = ("planner", "policy", "approval", "executor", "audit", "systems")


def test_a_deleted_login_is_named_as_given_a_new_password_and_the_others_are_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_DB_CREDENTIALS_DIR", str(tmp_path / "db"))
    folder = KitSettings().db_credentials_dir

    async def migrate(cfg: Any) -> dict[str, list[str]]:  # what provisioning does with the logins: a missing one is made
        for user in USERS:
            path = credentials_file(folder, user)
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_text(json.dumps({"user": f"tidegate_{user}", "password": "new"}))
        return {"executor": []}

    monkeypatch.setattr(tidegate.database, "migrate", migrate)
    first = CliRunner().invoke(app, ["db", "migrate"], env={"COLUMNS": "300"})
    assert first.exit_code == 0, first.output
    assert first.output.count("new password for ") == len(USERS)  # a first run makes every login
    credentials_file(folder, "executor").unlink()  # the documented rotation
    rotated = CliRunner().invoke(app, ["db", "migrate"], env={"COLUMNS": "300"})
    assert rotated.exit_code == 0, rotated.output
    assert f"new password for tidegate_executor ({credentials_file(folder, 'executor')} was missing)" in rotated.output
    assert rotated.output.count("new password for ") == 1
    again = CliRunner().invoke(app, ["db", "migrate"], env={"COLUMNS": "300"})
    assert "new password" not in again.output
