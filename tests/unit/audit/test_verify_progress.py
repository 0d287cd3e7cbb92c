"""`tidegate audit verify` tells how many chain rows it has checked of those the chains hold, as it reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import tidegate.commands._audit_verify as audit_cli
from servicekit import Keyring
from services.audit.repository import InMemoryAuditLog
from services.audit.verify import verify_log


async def test_verify_reports_the_rows_read_of_the_rows_the_heads_hold(make: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = InMemoryAuditLog()
    await log.append([make("tasks", b"{}", offset=i) for i in range(7)])
    await log.append([make("tasks", b"{}", partition=1, offset=i) for i in range(3)])
    monkeypatch.setattr(audit_cli, "_VERIFY_EVERY", 4)
    seen: list[tuple[int, int]] = []
    counted = await audit_cli._reporting(log, "tidegate.", lambda done, total: seen.append((done, total)))  # type: ignore[arg-type]
    report = await verify_log(counted, Keyring.load(tmp_path, "audit"), prefix="tidegate.")
    assert report.ok
    assert report.rows == 10
    assert seen[0] == (0, 10)
    assert seen[-1] == (10, 10)
    assert (4, 10) in seen
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
