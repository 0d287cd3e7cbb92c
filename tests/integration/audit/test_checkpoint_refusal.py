"""A superuser who makes `audit.checkpoints` swallow inserts (auditor1 F2) is said, counted and outlasted, never taken as signed.

The DBA's trigger (`BEFORE INSERT ... RETURN NULL`) made `ON CONFLICT DO NOTHING` look like another copy of the service
having taken the id: checkpointing stopped for good, silently, and fresh history could be rewritten unseen.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from servicekit import Keyring, KitSettings
from services.audit.app import build
from services.audit.repository import PostgresAuditLog
from services.audit.settings import AuditSettings
from services.audit.verify import verify_log

REFUSED = "tidegate_audit_checkpoints_refused_total"


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


@pytest.fixture
async def swallowing(infra: Any, kit: KitSettings) -> AsyncIterator[Any]:
    """As the superuser: a trigger that swallows every insert into `audit.checkpoints` of this test's scope; a callable drops it."""
    name = f"swallow_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(infra.admin_database_url)
    scope = kit.topic_prefix.replace("'", "''")

    async def drop() -> None:
        await conn.execute(f"DROP TRIGGER IF EXISTS {name} ON audit.checkpoints; DROP FUNCTION IF EXISTS public.{name}()")

    try:
        await conn.execute(
            f"CREATE FUNCTION public.{name}() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN RETURN NULL; END $f$; "
            f"CREATE TRIGGER {name} BEFORE INSERT ON audit.checkpoints FOR EACH ROW WHEN (NEW.scope = '{scope}') "
            f"EXECUTE FUNCTION public.{name}()"
        )
        yield drop
    finally:
        await drop()
        await conn.close()


async def _produce(producer: Any, topic: str, numbers: range) -> None:
    for i in numbers:
        await producer.send(topic, f'{{"n": {i}}}'.encode(), partition=0)
    await producer.flush()


async def test_a_trigger_that_swallows_checkpoints_is_said_once_counted_and_outlasted(
    kit: KitSettings, fast_settings: AuditSettings, producer: Any, probe: Any, wait_for: Any, swallowing: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.ERROR, logger="services.audit.handlers")
    refused_before = _metric(REFUSED)
    svc = build(kit, fast_settings)
    await svc.start()
    try:
        await _produce(producer, kit.topic_prefix + "tasks", range(10))
        await wait_for(probe.matches, timeout=30, what="the records in the log")
        await wait_for(lambda: svc.checkpointer.refused >= 3, timeout=30, what="three ticks refused by the trigger")
        assert svc.checkpointer.taken == 0  # never taken as stored: nothing published either
        said = [r.getMessage() for r in caplog.records if "was not stored" in r.getMessage()]
        assert len(said) == 1, said  # once per incident, not once a tick
        assert "checkpoint 1 was not stored: something refuses inserts into audit.checkpoints (no row has its id)" in said[0]
        assert _metric(REFUSED) - refused_before >= 3  # counted at every tick
        assert (REGISTRY.get_sample_value("tidegate_audit_unsigned_rows") or 0) >= 10
        assert REGISTRY.get_sample_value("tidegate_audit_checkpoint_interval_seconds") == fast_settings.checkpoint_interval_s

        await swallowing()  # the DBA takes the trigger away: the next tick stores the heads, as checkpoint 1 still
        await wait_for(lambda: svc.checkpointer.taken >= 1, timeout=30, what="a checkpoint stored once the trigger is gone")
    finally:
        await svc.stop()
    log = await PostgresAuditLog.connect(kit.database_url)
    try:
        [first, *_] = await log.checkpoints(kit.topic_prefix)
        assert first.checkpoint_id == 1
        assert sum(int(h["seq"]) for name, h in first.heads.items() if name.startswith(kit.topic_prefix + "tasks")) == 10
        assert (report := await verify_log(log, Keyring.load(kit.keys_dir, "audit"), prefix=kit.topic_prefix)).ok, report.breaks
    finally:
        await log.close()
