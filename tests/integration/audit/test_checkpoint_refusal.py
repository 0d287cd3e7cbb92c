"""A superuser who makes `audit.checkpoints` swallow inserts (auditor1 F2) is said, counted and outlasted, never taken as signed.

The DBA's trigger (`BEFORE INSERT ... RETURN NULL`) made `ON CONFLICT DO NOTHING` look like another copy of the service
having taken the id: checkpointing stopped for good, silently, and fresh history could be rewritten unseen. So did one
that rewrites the row into another scope and id and lets it in (auditor2 N2): the insert reported a row stored, and the
gauges, computed from the checkpoint signed in memory, read "fresh".
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
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
AGE = "tidegate_audit_checkpoint_age_seconds"
UNSIGNED = "tidegate_audit_unsigned_rows"


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


class Rewriting:
    """As the superuser: auditor2 N2's trigger, which moves each checkpoint of this test's scope into another scope, under a
    fresh id, and lets it in (`INSERT 0 1`). `on()` installs it, `off()` drops it.
    """

    def __init__(self, conn: asyncpg.Connection, scope: str) -> None:
        self.conn, self.scope = conn, scope
        self.name = f"rewrite_{uuid.uuid4().hex[:12]}"
        self.sink = f"probe-sink-{self.name}"

    async def on(self) -> None:
        scope = self.scope.replace("'", "''")
        await self.conn.execute(
            f"CREATE SEQUENCE public.{self.name}_ids START 1000000; "
            f"CREATE FUNCTION public.{self.name}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $f$ BEGIN "
            f"NEW.scope := '{self.sink}'; NEW.checkpoint_id := nextval('public.{self.name}_ids'); RETURN NEW; END $f$; "
            f"CREATE TRIGGER {self.name} BEFORE INSERT ON audit.checkpoints FOR EACH ROW WHEN (NEW.scope = '{scope}') "
            f"EXECUTE FUNCTION public.{self.name}()"
        )

    async def off(self) -> None:
        await self.conn.execute(
            f"DROP TRIGGER IF EXISTS {self.name} ON audit.checkpoints; DROP FUNCTION IF EXISTS public.{self.name}(); "
            f"DROP SEQUENCE IF EXISTS public.{self.name}_ids"
        )

    async def sunk(self) -> int:
        """How many checkpoints the trigger moved into its scope."""
        return int(await self.conn.fetchval("SELECT count(*) FROM audit.checkpoints WHERE scope = $1", self.sink))


@pytest.fixture
async def rewriting(infra: Any, kit: KitSettings) -> AsyncIterator[Rewriting]:
    """auditor2 N2's trigger for this test's scope (not installed yet); dropped at the end whatever happens."""
    conn = await asyncpg.connect(infra.admin_database_url)
    trigger = Rewriting(conn, kit.topic_prefix)
    try:
        yield trigger
    finally:
        await trigger.off()
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


async def test_a_trigger_that_rewrites_checkpoints_on_their_way_in_is_a_refusal_and_the_gauges_age(
    kit: KitSettings, fast_settings: AuditSettings, producer: Any, probe: Any, wait_for: Any, rewriting: Rewriting,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """The insert reports a row stored; the row with its id in the scope is not there: ERROR, counted, the stored checkpoint's
    age and the rows past it grow; once the trigger is gone the ids continue and `verify` passes.
    """
    caplog.set_level(logging.ERROR, logger="services.audit.handlers")
    svc = build(kit, fast_settings)
    await svc.start()
    log = await PostgresAuditLog.connect(kit.database_url)
    try:
        await _produce(producer, kit.topic_prefix + "tasks", range(5))
        await wait_for(probe.matches, timeout=30, what="the first records in the log")
        await wait_for(lambda: svc.checkpointer.taken >= 1, timeout=30, what="a checkpoint stored before the trigger")
        await rewriting.on()
        stored = await log.latest_checkpoint(kit.topic_prefix)  # nothing after it is stored in the scope from here on
        assert stored is not None
        refused, taken = _metric(REFUSED), svc.checkpointer.taken

        await _produce(producer, kit.topic_prefix + "tasks", range(5, 15))
        await wait_for(probe.matches, timeout=30, what="the records past the trigger in the log")
        await wait_for(lambda: svc.checkpointer.refused >= 3, timeout=30, what="three ticks refused by the trigger")
        assert await rewriting.sunk() >= 3  # the inserts did go in, elsewhere
        assert svc.checkpointer.taken == taken  # never taken as stored, never published
        assert await log.latest_checkpoint(kit.topic_prefix) == stored
        said = [r.getMessage() for r in caplog.records if "was not stored" in r.getMessage()]
        assert len(said) == 1, said  # once per incident
        assert f"checkpoint {stored.checkpoint_id + 1} was not stored" in said[0]
        assert "the insert reported a row stored, but no row has its id: it was rewritten on its way in" in said[0]
        assert _metric(REFUSED) - refused >= 3  # the alert's counter counts
        since, seen = datetime.now(UTC), svc.checkpointer.refused
        await wait_for(lambda: svc.checkpointer.refused >= seen + 2, timeout=30, what="a tick begun after every record was in the log")
        assert _metric(UNSIGNED) >= 10  # the rows past the stored checkpoint, not past the one signed in memory
        assert _metric(AGE) >= (since - stored.taken_at).total_seconds()  # the stored checkpoint's age, growing

        await rewriting.off()  # the DBA takes the trigger away: the next tick stores the heads under the next id
        await wait_for(lambda: svc.checkpointer.taken > taken, timeout=30, what="a checkpoint stored once the trigger is gone")
        await wait_for(lambda: _metric(UNSIGNED) == 0, timeout=30, what="no row unsigned")
    finally:
        await svc.stop()
    try:
        after = [cp for cp in await log.checkpoints(kit.topic_prefix) if cp.checkpoint_id > stored.checkpoint_id]
        assert after[0].checkpoint_id == stored.checkpoint_id + 1
        assert sum(int(h["seq"]) for name, h in after[0].heads.items() if name.startswith(kit.topic_prefix + "tasks")) == 15
        assert (report := await verify_log(log, Keyring.load(kit.keys_dir, "audit"), prefix=kit.topic_prefix)).ok, report.breaks
    finally:
        await log.close()
