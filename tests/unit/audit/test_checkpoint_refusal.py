"""A checkpoint the log did not store is a lost race only when another copy of the service (the same key) stored its id."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from servicekit import SigningKey
from services.audit.checkpoints import Checkpoint
from services.audit.handlers import Checkpointer
from services.audit.repository import InMemoryAuditLog

PREFIX = "tidegate."


class Refusing(InMemoryAuditLog):
    """A log whose checkpoint inserts are swallowed while `refusing` (a trigger returning NULL), or replaced by `planted`."""

    refusing: bool = True
    planted: Checkpoint | None = None

    async def add_checkpoint(self, checkpoint: Checkpoint) -> bool:
        if self.planted is not None:
            await super().add_checkpoint(self.planted)
        if self.refusing:
            return False
        return await super().add_checkpoint(checkpoint)


def _checkpointer(log: InMemoryAuditLog, keys: Path, published: list[Any]) -> Checkpointer:
    async def publish(event: Any) -> None:
        published.append(event)

    return Checkpointer(log, SigningKey.load_or_create(keys, "audit"), publish, PREFIX + "audit.checkpoints", 1.0, prefix=PREFIX)


async def _record(log: InMemoryAuditLog, make: Any, offsets: range) -> None:
    await log.append([make("tasks", f'{{"n": {i}}}'.encode(), offset=i) for i in offsets])


async def test_a_swallowed_insert_is_said_once_counted_each_tick_and_tried_again(
    make: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="services.audit.handlers")
    log, published = Refusing(), []
    await _record(log, make, range(3))
    checkpointer = _checkpointer(log, tmp_path, published)
    for _ in range(3):
        assert await checkpointer.tick() is None
    assert (checkpointer.refused, checkpointer.taken, published) == (3, 0, [])
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage().split(" (")[0] for r in errors] == [
        "audit: checkpoint 1 was not stored: something refuses inserts into audit.checkpoints"
    ]
    log.refusing = False
    taken = await checkpointer.tick()
    assert taken is not None
    assert taken.checkpoint_id == 1
    assert len(published) == 1
    assert any("takes inserts again" in r.getMessage() for r in caplog.records)


async def test_another_copy_of_the_service_taking_the_id_is_a_lost_race_not_a_refusal(
    make: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="services.audit.handlers")
    log, published = Refusing(), []
    await _record(log, make, range(3))
    other = _checkpointer(InMemoryAuditLog(), tmp_path, [])
    await _record(other.log, make, range(2))  # the other copy signed other heads (it read them a moment earlier)
    log.planted = await other.tick()  # it stores its checkpoint 1 just before this copy's insert
    checkpointer = _checkpointer(log, tmp_path, published)
    assert await checkpointer.tick() is None
    assert checkpointer.refused == 0
    assert not caplog.records


async def test_a_row_the_audit_key_did_not_sign_in_the_ids_place_is_a_refusal(
    make: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The superuser's trigger stores its own row under the id (or edits the heads): that is no other copy's checkpoint."""
    caplog.set_level(logging.ERROR, logger="services.audit.handlers")
    log, published = Refusing(), []
    await _record(log, make, range(3))
    forger = _checkpointer(InMemoryAuditLog(), tmp_path / "other-key", [])
    await _record(forger.log, make, range(3))
    log.planted = await forger.tick()  # the same heads, signed by a key that is not the audit's
    checkpointer = _checkpointer(log, tmp_path, published)
    assert await checkpointer.tick() is None
    assert checkpointer.refused == 1
    [error] = caplog.records
    assert "checkpoint 1 was not stored" in error.getMessage()
    assert "is not one the audit key signed" in error.getMessage()
