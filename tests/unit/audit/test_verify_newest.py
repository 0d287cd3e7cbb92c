"""`verify` says how old the newest checkpoint is and how many rows lie past it, unsigned (auditor1 F2, F6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from servicekit import Keyring, SigningKey
from services.audit.handlers import Checkpointer
from services.audit.repository import InMemoryAuditLog
from services.audit.verify import verify_log

PREFIX = "tidegate."


async def _nothing(_: Any) -> None:
    return None


async def test_the_newest_checkpoint_and_the_rows_past_it_are_reported(make: Any, tmp_path: Path) -> None:
    log = InMemoryAuditLog()
    key = SigningKey.load_or_create(tmp_path, "audit")
    checkpointer = Checkpointer(log, key, _nothing, PREFIX + "audit.checkpoints", 1.0, prefix=PREFIX)
    keyring = Keyring.load(tmp_path, "audit")
    await log.append([make("tasks", f'{{"n": {i}}}'.encode(), offset=i) for i in range(4)])
    report = await verify_log(log, keyring, prefix=PREFIX)
    assert (report.newest, report.rows_unsigned) == (None, 4)  # nothing signed yet: every row waits

    taken = await checkpointer.tick()
    assert taken is not None
    await log.append([make("tasks", f'{{"n": {i}}}'.encode(), offset=i) for i in range(4, 7)])
    report = await verify_log(log, keyring, prefix=PREFIX)
    assert report.newest is not None
    assert (report.newest.checkpoint_id, report.newest.taken_at, report.rows_unsigned) == (1, taken.taken_at, 3)
    assert report.newest.age_s >= 0
    assert report.restores == []


async def test_an_idle_log_has_no_unsigned_row_for_the_checkpoints_own_record(make: Any, tmp_path: Path) -> None:
    """auditor2: an idle deployment always said "1 row(s) lie past it": the checkpoint's own record, signed by none."""
    log = InMemoryAuditLog()
    key = SigningKey.load_or_create(tmp_path, "audit")
    checkpointer = Checkpointer(log, key, _nothing, PREFIX + "audit.checkpoints", 1.0, prefix=PREFIX)
    await log.append([make("tasks", b'{"n": 0}', offset=0)])
    assert await checkpointer.tick() is not None
    await log.append([make("audit.checkpoints", b'{"checkpoint": 1}', offset=0)])  # the service records its own checkpoint
    report = await verify_log(log, Keyring.load(tmp_path, "audit"), prefix=PREFIX)
    assert report.rows_unsigned == 0
