"""Each service's PostgreSQL login sits in a folder of its own, where the migrator writes it and the service reads it."""

from __future__ import annotations

import json
from pathlib import Path

from servicekit import KitSettings
from servicekit.dbroles import _password, credentials_file, service_database_url


def test_the_migrator_writes_each_login_into_the_folder_the_service_reads(tmp_path: Path) -> None:
    password = _password(tmp_path, "executor", "tidegate_executor")
    assert credentials_file(tmp_path, "executor") == tmp_path / "executor" / "executor.json"
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")] == ["executor", "executor/executor.json"]
    assert credentials_file(tmp_path, "executor").stat().st_mode & 0o077 == 0
    kit = KitSettings(database_url="postgresql://postgres:5432/tidegate", db_credentials_dir=tmp_path)
    assert service_database_url(kit, "executor") == f"postgresql://tidegate_executor:{password}@postgres:5432/tidegate"
    assert _password(tmp_path, "executor", "tidegate_executor") == password  # kept on the next migration


def test_a_login_of_the_flat_layout_moves_into_its_folder_and_keeps_its_password(tmp_path: Path) -> None:
    (tmp_path / "planner.json").write_text(json.dumps({"user": "tidegate_planner", "password": "before"}))
    assert _password(tmp_path, "planner", "tidegate_planner") == "before"
    assert not (tmp_path / "planner.json").exists()
    assert json.loads(credentials_file(tmp_path, "planner").read_text())["password"] == "before"
