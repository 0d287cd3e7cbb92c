"""`tidegate db backup` as the platform engineer taking the backup docs/operations.md asks for (platform probe F6).

The docs said "as any PostgreSQL" and gave no command; the obvious `pg_dump -f` wrote the approval schema's secrets
(token hashes, sealed webhook secrets) 0644 into a shared folder, and nothing said which `--since` the restore's
`tidegate db catch-up` wants.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tidegate.cli import app

FAKE_PG_DUMP = """#!/bin/sh
# stands in for PostgreSQL's pg_dump: what it was given, then a dump or a failure
printf '%s\\n' "$@" > "{seen}"
printf '%s' "${{PGPASSWORD:-}}" > "{secret}"
if [ -n "$FAIL" ]; then echo 'pg_dump: error: connection to server failed' >&2; printf 'PGDMP half'; exit 1; fi
printf 'PGDMP whole dump'
"""


@pytest.fixture
def pg_dump(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "pg_dump"
    script.write_text(FAKE_PG_DUMP.format(seen=tmp_path / "argv", secret=tmp_path / "env"))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.delenv("FAIL", raising=False)
    return tmp_path


def backup(out: Path) -> str:
    result = CliRunner().invoke(app, ["db", "backup", str(out)], env={"COLUMNS": "400"})
    return f"{result.exit_code}|{' '.join(result.output.split())}"


def test_a_backup_is_written_for_its_owner_alone_and_says_how_to_restore_it(pg_dump: Path) -> None:
    out = pg_dump / "shared" / "tidegate.dump"
    out.parent.mkdir()
    before = os.umask(0o022)  # a usual umask: the file `pg_dump -f` made was 0644
    try:
        said = backup(out)
    finally:
        os.umask(before)
    assert said.startswith("0|"), said
    assert out.read_bytes() == b"PGDMP whole dump"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "--format=custom" in (pg_dump / "argv").read_text()
    assert "taken at" in said
    assert "`tidegate db catch-up --since " in said
    assert "pg_restore --clean --if-exists" in said
    assert backup(out).startswith("1|")  # never written over an earlier backup
    assert out.read_bytes() == b"PGDMP whole dump"


def test_a_password_in_the_dsn_goes_to_pg_dump_in_its_environment_never_on_its_command_line(
    pg_dump: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDEGATE_DATABASE_URL", "postgresql://tidegate:s3cr%40t@127.0.0.1:5432/tidegate")
    said = backup(pg_dump / "b.dump")
    assert said.startswith("0|"), said
    assert "s3cr" not in (pg_dump / "argv").read_text()  # `ps` shows a command line to every user
    assert (pg_dump / "env").read_text() == "s3cr@t"
    assert "s3cr" not in said


def test_a_failed_dump_leaves_no_file_that_could_pass_for_a_backup(pg_dump: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAIL", "1")
    out = pg_dump / "b.dump"
    said = backup(out)
    assert said.startswith("1|"), said
    assert "pg_dump failed (1): pg_dump: error: connection to server failed; nothing was written" in said
    assert not out.exists()
    assert list(pg_dump.glob("*.partial")) == []
    assert list(pg_dump.glob(".*.partial")) == []
