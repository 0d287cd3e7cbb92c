"""Each service's PostgreSQL login sits in a folder of its own, where the migrator writes it and the service reads it."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from servicekit import KitSettings
from servicekit.dbroles import _password, credentials_file, login_passfile, scram_verifier, service_database_url


def test_the_migrator_writes_each_login_into_the_folder_the_service_reads(tmp_path: Path) -> None:
    password = _password(tmp_path, "executor", "tidegate_executor")
    assert credentials_file(tmp_path, "executor") == tmp_path / "executor" / "executor.json"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "executor",
        "executor/executor.json",
        "executor/executor.pgpass",
    ]
    assert credentials_file(tmp_path, "executor").stat().st_mode & 0o077 == 0
    assert login_passfile(tmp_path, "executor").stat().st_mode & 0o077 == 0  # asyncpg ignores a passfile others may read
    assert login_passfile(tmp_path, "executor").read_text() == f"*:*:*:tidegate_executor:{password}\n"
    operators = "postgresql://tidegate@postgres:5432/tidegate?sslmode=disable&passfile=/x/tidegate.pgpass"
    kit = KitSettings(database_url=operators, db_credentials_dir=tmp_path)
    # No password in the DSN: asyncpg reads the passfile at each new connection, so a rotated one needs no restart.
    dsn = urlsplit(service_database_url(kit, "executor"))
    assert (dsn.username, dsn.password, dsn.hostname, dsn.port, dsn.path) == ("tidegate_executor", None, "postgres", 5432, "/tidegate")
    assert parse_qs(dsn.query) == {"sslmode": ["disable"], "passfile": [str(login_passfile(tmp_path, "executor"))]}
    assert _password(tmp_path, "executor", "tidegate_executor") == password  # kept on the next migration


def test_a_password_put_in_the_json_file_by_hand_reaches_the_passfile_on_the_next_migration(tmp_path: Path) -> None:
    _password(tmp_path, "planner", "tidegate_planner")
    credentials_file(tmp_path, "planner").write_text(json.dumps({"user": "tidegate_planner", "password": "from-the-vault"}))
    assert _password(tmp_path, "planner", "tidegate_planner") == "from-the-vault"
    assert login_passfile(tmp_path, "planner").read_text() == "*:*:*:tidegate_planner:from-the-vault\n"


def test_a_password_the_passfile_cannot_hold_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "planner").mkdir()
    credentials_file(tmp_path, "planner").write_text(json.dumps({"user": "tidegate_planner", "password": "a:b"}))
    with pytest.raises(ValueError, match=r"planner\.json holds ':'"):
        _password(tmp_path, "planner", "tidegate_planner")


def test_the_scram_verifier_is_the_one_libpq_computes() -> None:
    # psql 15's \password (PQencryptPasswordConn) set 'pw-Test1' with this salt; pg_authid held this verifier.
    salt = base64.b64decode("f/xxJYZDm9z97+c2bFn0BA==")
    assert scram_verifier("pw-Test1", salt=salt) == (
        "SCRAM-SHA-256$4096:f/xxJYZDm9z97+c2bFn0BA==$npob03cSol6c1XHqT7ttWMs793dftBw+neG8UV4ib4I="
        ":aULKysdsRrWeXB6DcDAceposn27XjWte3YXBX2Y/vSA="
    )
    assert scram_verifier("pw-Test1") != scram_verifier("pw-Test1")  # a new 16-byte salt each time
    assert len(base64.b64decode(scram_verifier("x").split("$")[1].split(":")[1])) == 16


def test_a_password_scram_would_first_normalise_is_refused() -> None:
    with pytest.raises(ValueError, match="must be ASCII"):
        scram_verifier("pässword")


def test_a_login_of_the_flat_layout_moves_into_its_folder_and_keeps_its_password(tmp_path: Path) -> None:
    (tmp_path / "planner.json").write_text(json.dumps({"user": "tidegate_planner", "password": "before"}))
    assert _password(tmp_path, "planner", "tidegate_planner") == "before"
    assert not (tmp_path / "planner.json").exists()
    assert json.loads(credentials_file(tmp_path, "planner").read_text())["password"] == "before"
