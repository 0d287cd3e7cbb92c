"""Verify over the in-memory log: every kind of tampering is named; checkpoints catch a cut tail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from servicekit import Keyring, SigningKey
from services.audit.handlers import Checkpointer
from services.audit.repository import InMemoryAuditLog
from services.audit.verify import verify_log

TOPIC = "tidegate.tasks"


@pytest.fixture
async def log(make: Any, tmp_path: Path) -> InMemoryAuditLog:
    """Ten records on partition 0 and five on partition 1, checkpointed."""
    log = InMemoryAuditLog()
    await log.append([make("tasks", f'{{"n": {i}}}'.encode(), offset=i) for i in range(10)])
    await log.append([make("tasks", b"{}", partition=1, offset=i) for i in range(5)])
    published: list[Any] = []

    async def publish(event: Any) -> None:
        published.append(event)

    checkpointer = Checkpointer(
        log, SigningKey.load_or_create(tmp_path, "audit"), publish, "tidegate.audit.checkpoints", 1.0, prefix="tidegate."
    )
    assert await checkpointer.tick() is not None
    assert len(published) == 1
    return log


def _keyring(tmp_path: Path) -> Keyring:
    return Keyring.load(tmp_path, "audit")


def _replace(log: InMemoryAuditLog, at: int, **changes: Any) -> None:
    i = next(i for i, r in enumerate(log.rows) if r.partition == 0 and r.seq == at)
    log.rows[i] = log.rows[i]._replace(**changes)


async def test_an_intact_log_verifies(log: InMemoryAuditLog, tmp_path: Path) -> None:
    report = await verify_log(log, _keyring(tmp_path), prefix="tidegate.")
    assert report.ok
    assert (report.rows, report.chains, report.checkpoints) == (15, 2, 1)


async def test_an_edited_value_is_the_first_broken_link(log: InMemoryAuditLog, tmp_path: Path) -> None:
    _replace(log, 4, value=b'{"n": 400}')
    brk = (await verify_log(log, _keyring(tmp_path), prefix="tidegate.")).breaks[0]
    assert (brk.topic, brk.partition, brk.seq, brk.offset) == (TOPIC, 0, 4, 3)
    assert "edited" in brk.problem


async def test_an_edited_derived_column_breaks_the_chain_too(log: InMemoryAuditLog, tmp_path: Path) -> None:
    _replace(log, 2, outcome="allow")
    assert (await verify_log(log, _keyring(tmp_path), prefix="tidegate.")).breaks[0].seq == 2


async def test_a_deleted_row_shows_as_a_gap(log: InMemoryAuditLog, tmp_path: Path) -> None:
    log.rows = [r for r in log.rows if not (r.partition == 0 and r.seq == 6)]
    brk = (await verify_log(log, _keyring(tmp_path), prefix="tidegate.")).breaks[0]
    assert brk.seq == 7
    assert "seq 6 missing" in brk.problem


async def test_swapped_rows_break_at_the_first_of_them(log: InMemoryAuditLog, tmp_path: Path) -> None:
    _replace(log, 3, seq=-3)
    _replace(log, 4, seq=3)
    _replace(log, -3, seq=4)
    assert (await verify_log(log, _keyring(tmp_path), prefix="tidegate.")).breaks[0].seq == 3


async def test_a_cut_tail_is_only_visible_to_the_checkpoint(log: InMemoryAuditLog, tmp_path: Path) -> None:
    log.rows = [r for r in log.rows if not (r.partition == 0 and r.seq > 8)]
    report = await verify_log(log, _keyring(tmp_path), prefix="tidegate.")
    [brk] = report.breaks
    assert (brk.topic, brk.partition, brk.seq, brk.checkpoint_id) == (TOPIC, 0, 10, 1)
    assert "2 row(s) gone" in brk.problem


async def test_a_checkpoint_signed_by_another_key_is_rejected(log: InMemoryAuditLog, tmp_path: Path) -> None:
    other = tmp_path / "other"
    cp = (await log.checkpoints("tidegate."))[0]
    forged = cp.model_copy(update={"signature": SigningKey.load_or_create(other, "audit").sign(b"x")})
    log.stored_checkpoints[("tidegate.", 1)] = forged
    assert any("signature" in b.problem for b in (await verify_log(log, _keyring(tmp_path), prefix="tidegate.")).breaks)


async def test_a_checkpoint_missing_from_the_database_but_on_the_bus_is_named(log: InMemoryAuditLog, tmp_path: Path) -> None:
    published = await log.checkpoints("tidegate.")
    log.stored_checkpoints.clear()
    log.rows = [r for r in log.rows if not (r.partition == 1 and r.seq > 3)]
    report = await verify_log(log, _keyring(tmp_path), prefix="tidegate.", extra_checkpoints=published)
    problems = [b.problem for b in report.breaks]
    assert any("missing from the database" in p for p in problems)
    assert any("truncated" in p for p in problems)
