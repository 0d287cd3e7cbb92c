"""A checkpoint the log did not store is a lost race only when another copy of the service (the same key) stored its id."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

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


class Rewriting(InMemoryAuditLog):
    """A log whose checkpoint inserts report one row stored while `rewriting` moves it elsewhere (auditor2 N2's trigger).

    `elsewhere` rewrites the row on its way in: by default into another scope under a fresh id, as the DBA's
    `BEFORE INSERT … RETURN NEW` trigger did.
    """

    rewriting: bool = False
    sunk: int = 1_000_000

    def elsewhere(self, checkpoint: Checkpoint) -> Checkpoint:
        self.sunk += 1
        return checkpoint.model_copy(update={"scope": "probe-sink", "checkpoint_id": self.sunk})

    async def add_checkpoint(self, checkpoint: Checkpoint) -> bool:
        return await super().add_checkpoint(self.elsewhere(checkpoint) if self.rewriting else checkpoint)


def _gauge(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    assert value is not None, name
    return value


async def test_a_row_rewritten_on_its_way_in_is_a_refusal_and_the_gauges_read_the_stored_checkpoint(
    make: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The insert reports one row stored, but the row is not in the scope: said once, counted, the age and unsigned rows grow."""
    caplog.set_level(logging.WARNING, logger="services.audit.handlers")
    log, published = Rewriting(), []
    await _record(log, make, range(3))
    checkpointer = _checkpointer(log, tmp_path, published)
    first = await checkpointer.tick()
    assert first is not None
    assert _gauge("tidegate_audit_unsigned_rows") == 0
    log.rewriting = True
    await _record(log, make, range(3, 8))
    refused_before = _gauge("tidegate_audit_checkpoints_refused_total")
    for _ in range(3):
        before = datetime.now(UTC)
        assert await checkpointer.tick() is None
        # the age is the stored checkpoint 1's, not that of the one signed during the tick (taken after `before`)
        assert _gauge("tidegate_audit_checkpoint_age_seconds") >= (before - first.taken_at).total_seconds()
        assert _gauge("tidegate_audit_unsigned_rows") == 5
    assert (checkpointer.refused, checkpointer.taken, len(published)) == (3, 1, 1)  # nothing past checkpoint 1 published
    assert _gauge("tidegate_audit_checkpoints_refused_total") - refused_before == 3
    assert [cp.checkpoint_id for cp in await log.checkpoints(PREFIX)] == [1]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors
    assert "checkpoint 2 was not stored" in errors[0]
    assert "the insert reported a row stored, but no row has its id: it was rewritten on its way in" in errors[0]

    log.rewriting = False  # the DBA drops the trigger: checkpoint 2 is stored, read back, and the gauges come back
    taken = await checkpointer.tick()
    assert taken is not None
    assert taken.checkpoint_id == 2
    assert await log.latest_checkpoint(PREFIX) == taken
    assert _gauge("tidegate_audit_unsigned_rows") == 0
    assert any("takes inserts again" in r.getMessage() for r in caplog.records)


async def test_a_row_whose_heads_are_rewritten_in_place_is_a_refusal(make: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Same scope and id, other heads: the row stored is not the checkpoint signed (its signature no longer holds)."""
    caplog.set_level(logging.ERROR, logger="services.audit.handlers")
    log, published = Rewriting(), []
    log.elsewhere = lambda cp: cp.model_copy(update={"heads": {}})  # type: ignore[method-assign]
    log.rewriting = True
    await _record(log, make, range(3))
    checkpointer = _checkpointer(log, tmp_path, published)
    assert await checkpointer.tick() is None
    assert (checkpointer.refused, checkpointer.taken, published) == (1, 0, [])
    [error] = caplog.records
    assert "the insert reported a row stored, but the row with its id is not one the audit key signed" in error.getMessage()
    assert _gauge("tidegate_audit_unsigned_rows") == 3  # the rewritten row signs nothing
