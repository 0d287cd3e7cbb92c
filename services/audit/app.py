"""The one wiring point of the audit service: settings, then dependencies, then subscribers."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from servicekit import (
    Keyring,
    KitSettings,
    ServiceProcess,
    ToolCatalog,
    deployment_authority,
    service_bus,
    service_key,
)
from servicekit.consume import consume_raw
from services.audit.checkpoints import CHECKPOINT_TOPIC
from services.audit.handlers import Checkpointer, Recorder
from services.audit.published import latest_published_checkpoint
from services.audit.repository import AuditLog, PostgresAuditLog
from services.audit.settings import AuditSettings

__all__ = ["MIGRATIONS", "NAME", "AuditDeps", "AuditProcess", "build", "topic_pattern"]

NAME = "audit"
MIGRATIONS = Path(__file__).parent / "migrations"


def topic_pattern(prefix: str) -> str:
    """Every topic of the deployment: a topic added later is recorded with no change here."""
    return f"^{re.escape(prefix)}.*"


@dataclasses.dataclass(frozen=True)
class AuditDeps:
    """Where the audit log is kept; tests and benchmarks may pass the in-memory twin."""

    log: AuditLog


@dataclasses.dataclass
class AuditProcess(ServiceProcess):
    """The running audit service: its recorder (every topic into the log) and its checkpointer (signed chain heads)."""

    recorder: Recorder = dataclasses.field(kw_only=True)
    checkpointer: Checkpointer = dataclasses.field(kw_only=True)


def build(kit: KitSettings | None = None, settings: AuditSettings | None = None, *, deps: AuditDeps | None = None) -> AuditProcess:
    """Assemble the audit service: the log in its schema (through a pool `start` connects first) unless `deps` gives another."""
    kit = kit or KitSettings()
    settings = settings or AuditSettings()
    key = service_key(kit, settings.key_name)
    pool = None
    if deps is None:
        pool = ServiceProcess.pool_of(kit, NAME)
        deps = AuditDeps(log=PostgresAuditLog(pool))
    bus = service_bus(kit, NAME, signer=key)
    tools = ToolCatalog.load(*kit.tool_dirs) if kit.tools_dir.is_dir() else None

    async def discard_broken(exc: BaseException) -> None:  # the process's own handling of a broken connection
        if bus.on_transient is not None:
            await bus.on_transient(exc)

    recorder = Recorder(
        prefix=kit.topic_prefix,
        log=deps.log,
        bounds=kit.bounds,
        authority=deployment_authority(kit, tools, history=True),
        on_retry=discard_broken,
        liveness=bus.liveness,
    )

    async def publish(event: Any) -> None:
        await bus.publish(CHECKPOINT_TOPIC, event)

    checkpointer = Checkpointer(
        log=deps.log,
        key=key,
        publish=publish,
        checkpoint_topic=bus.topic(CHECKPOINT_TOPIC),
        interval_s=settings.checkpoint_interval_s,
        prefix=kit.topic_prefix,
        trusted=lambda: Keyring.load(kit.keys_dir, settings.key_name),
    )

    consume_raw(
        bus,
        recorder.record_batch,
        pattern=topic_pattern(kit.topic_prefix),
        group_id=f"{kit.topic_prefix}audit",
        max_records=settings.batch_max_records,
        batch_timeout_ms=settings.batch_timeout_ms,
        max_partition_fetch_bytes=settings.max_partition_fetch_bytes,
        fetch_min_bytes=settings.fetch_min_bytes,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        metadata_max_age_ms=settings.topic_discovery_ms,  # how soon a topic created later is found and read
        title="audit:*",
        on_assigned=recorder.seek_to_log,  # where the log ends, not the group's offsets: a restored database is caught up again
    )

    async def continue_after_published(_: Any) -> None:  # before the consumer starts: a restore's heads are signed as restored
        options = bus.client_options()
        await checkpointer.continue_after(
            await latest_published_checkpoint(kit.kafka_bootstrap, kit.topic_prefix, checkpointer.trusted_keys(), client_options=options)
        )

    return AuditProcess.of(
        kit,
        NAME,
        bus,
        pool=pool,
        migrations=MIGRATIONS,
        loops=[checkpointer.run],
        on_start=[continue_after_published],
        recorder=recorder,
        checkpointer=checkpointer,
    )
