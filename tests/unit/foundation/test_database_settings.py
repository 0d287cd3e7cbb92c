"""Where the operator's database login comes from: a DSN without a password, and the passfile `infra up` writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servicekit import REPO_ROOT, KitSettings
from servicekit.dbroles import service_database_url


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("TIDEGATE_DATABASE_URL", "TIDEGATE_DATABASE_PASSFILE", "TIDEGATE_PG_PORT", "TIDEGATE_INFRA_DIR"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_default_dsn_carries_no_password_and_reads_the_generated_passfile(clean_env: pytest.MonkeyPatch) -> None:
    kit = KitSettings()
    assert kit.database_url == "postgresql://tidegate@127.0.0.1:55432/tidegate"
    assert kit.database_passfile == REPO_ROOT / ".infra" / "pg" / "credentials" / "tidegate.pgpass"
    assert kit.operator_database_url == f"{kit.database_url}?passfile={kit.database_passfile}"


def test_another_port_and_infra_dir_move_the_dsn_and_the_passfile(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CI's second stack sets only `TIDEGATE_PG_PORT` and `TIDEGATE_INFRA_DIR`, as it does for infra.sh."""
    clean_env.setenv("TIDEGATE_PG_PORT", "56432")
    clean_env.setenv("TIDEGATE_INFRA_DIR", str(tmp_path))
    kit = KitSettings()
    assert kit.database_url == "postgresql://tidegate@127.0.0.1:56432/tidegate"
    assert kit.database_passfile == tmp_path / "pg" / "credentials" / "tidegate.pgpass"


def test_a_dsn_without_password_keeps_its_query_and_gets_the_passfile(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TIDEGATE_DATABASE_URL", "postgresql://tidegate@127.0.0.1:56432/tidegate?sslmode=disable")
    clean_env.setenv("TIDEGATE_DATABASE_PASSFILE", "/secrets/pg pass")
    assert (
        KitSettings().operator_database_url == "postgresql://tidegate@127.0.0.1:56432/tidegate?sslmode=disable&passfile=/secrets/pg%20pass"
    )


@pytest.mark.parametrize(
    "dsn", ["postgresql://tidegate:s3cret@db:5432/tidegate", "postgresql://tidegate@db:5432/tidegate?passfile=/run/secrets/pgpass"]
)
def test_a_dsn_with_its_own_password_or_passfile_is_used_as_given(clean_env: pytest.MonkeyPatch, dsn: str) -> None:
    clean_env.setenv("TIDEGATE_DATABASE_URL", dsn)
    assert KitSettings().operator_database_url == dsn


def test_a_services_login_never_points_at_the_operators_passfile(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "planner").mkdir()
    (tmp_path / "planner" / "planner.json").write_text(json.dumps({"user": "tidegate_planner", "password": "p@ss"}))
    kit = KitSettings(
        database_url="postgresql://tidegate@127.0.0.1:55432/tidegate?passfile=/x/tidegate.pgpass", db_credentials_dir=tmp_path
    )
    assert service_database_url(kit, "planner") == "postgresql://tidegate_planner:p%40ss@127.0.0.1:55432/tidegate"
