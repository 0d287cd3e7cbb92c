"""`db rotate --operator` when the COMMIT of the new password is sent and its answer lost (the connection reset).

The server may have committed it. Putting the passfile back to the former password then locks the operator out (the
role is on the new password, kept nowhere), the very case the rotation's one transaction was made to end. The file
says whichever password the role logs in with after the failure; the former only when the new one is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from servicekit import dbroles

FORMER = "former-password"


class _Tx:
    def __init__(self, committed: list[bool]) -> None:
        self.committed = committed

    async def start(self) -> None:
        return None

    async def rollback(self) -> None:
        return None

    async def commit(self) -> None:
        self.committed.append(True)  # the server took it; its answer never came back
        raise ConnectionResetError("connection reset by peer")


class _Conn:
    def __init__(self) -> None:
        self.committed: list[bool] = []

    def transaction(self) -> _Tx:
        return _Tx(self.committed)

    async def execute(self, sql: str, *args: Any) -> str:
        return "ALTER ROLE"


@pytest.mark.parametrize(("new_logs_in", "kept"), [(True, "new"), (False, "former")])
async def test_a_lost_commit_leaves_the_passfile_on_the_password_the_role_logs_in_with(
    tmp_path: Path, monkeypatch: Any, new_logs_in: bool, kept: str
) -> None:
    passfile = tmp_path / "operator.pgpass"
    former_text = f"127.0.0.1:5432:*:tidegate_migrator:{FORMER}\n"
    passfile.write_text(former_text)
    new_text = "127.0.0.1:5432:*:tidegate_migrator:new-password\n"
    asked: list[tuple[str, str]] = []

    async def logs_in(dsn: str, role: str, password: str) -> bool:
        asked.append((role, password))
        return new_logs_in

    monkeypatch.setattr(dbroles, "_logs_in", logs_in)
    conn = _Conn()
    with pytest.raises(ConnectionResetError):
        await dbroles._set_password_with_file(
            conn, passfile, former_text, new_text, "new-password", dsn="postgresql://127.0.0.1/tidegate", role="tidegate_migrator"
        )  # type: ignore[arg-type]
    assert conn.committed
    assert asked == [("tidegate_migrator", "new-password")]
    assert passfile.read_text() == (new_text if kept == "new" else former_text)
    assert passfile.stat().st_mode & 0o777 == 0o600
