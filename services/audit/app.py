"""The one wiring point of the audit service: settings, then dependencies, then subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from pathlib import Path
from typing import Any

from servicekit import (
    Bus,
    KitSettings,
    ServiceProcess,
    SigningKey,
    ToolCatalog,
    configure_logging,
    deployment_authority,
    install_tracing,
    kafka_options,
    make_broker,
)
from servicekit.consume import consume_raw
from services.audit.checkpoints import CHECKPOINT_TOPIC
from services.audit.handlers import Checkpointer, Recorder
from services.audit.repository import PostgresAuditLog
from services.audit.settings import AuditSettings

__all__ = ["MIGRATIONS", "NAME", "AuditService", "build", "main", "topic_pattern"]

NAME = "audit"
MIGRATIONS = Path(__file__).parent / "migrations"


def topic_pattern(prefix: str) -> str:
    """Every topic of the deployment: a topic added later is recorded with no change here."""
    return f"^{re.escape(prefix)}.*"


@dataclasses.dataclass
class AuditService:
    """The running audit service: its process, the recorder and the checkpointer."""

    process: ServiceProcess
    recorder: Recorder
    settings: AuditSettings
    key: SigningKey
    checkpointer: Checkpointer | None = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect, migrate, start consuming every topic and checkpointing."""
        await self.process.start()

    async def stop(self) -> None:
        """Stop consuming (the batch in flight finishes first), then checkpointing."""
        await self.process.stop()

    async def run_until_signalled(self) -> None:
        """Run until SIGTERM or SIGINT."""
        await self.process.run_until_signalled()


def build(kit: KitSettings | None = None, settings: AuditSettings | None = None) -> AuditService:
    """Assemble the audit service from its settings."""
    kit = kit or KitSettings()
    settings = settings or AuditSettings()
    key = SigningKey.load_or_create(kit.keys_dir, settings.key_name)
    broker = make_broker(kit.kafka_bootstrap, NAME, metadata_max_age_ms=settings.topic_discovery_ms, **kafka_options(kit, NAME))
    bus = Bus(broker, NAME, kit.kafka_bootstrap, kit.topic_prefix, bounds=kit.bounds, signer=key)
    tools = ToolCatalog.load(kit.tools_dir) if kit.tools_dir.is_dir() else None
    recorder = Recorder(prefix=kit.topic_prefix, bounds=kit.bounds, authority=deployment_authority(kit, tools))

    consume_raw(
        bus,
        recorder.record_batch,
        pattern=topic_pattern(kit.topic_prefix),
        group_id=f"{kit.topic_prefix}audit",
        max_records=settings.batch_max_records,
        batch_timeout_ms=settings.batch_timeout_ms,
        max_partition_fetch_bytes=settings.max_partition_fetch_bytes,
        title="audit:*",
    )

    process = ServiceProcess(
        name=NAME,
        stall_after_s=kit.stall_after_s,
        handler_limit_s=kit.handler_limit_s,
        bus=bus,
        database_url=kit.service_database_url(NAME),
        schema=NAME,
        migrations=MIGRATIONS,
        metrics_port=kit.metrics_port,
        pool_max=kit.db_pool_max,
        ready_dir=kit.ready_dir,
    )
    service = AuditService(process=process, recorder=recorder, settings=settings, key=key)

    async def connect(proc: ServiceProcess) -> None:
        assert proc.pool is not None
        recorder.log = PostgresAuditLog(proc.pool)
        recorder.on_retry = bus.on_transient

        async def publish(event: Any) -> None:
            await bus.publish(CHECKPOINT_TOPIC, event)

        service.checkpointer = Checkpointer(
            log=recorder.log,
            key=key,
            publish=publish,
            checkpoint_topic=bus.topic(CHECKPOINT_TOPIC),
            interval_s=settings.checkpoint_interval_s,
            prefix=kit.topic_prefix,
        )

    async def start_checkpoints(proc: ServiceProcess) -> None:
        assert service.checkpointer is not None
        service._task = asyncio.create_task(service.checkpointer.run())

    async def stop_checkpoints(proc: ServiceProcess) -> None:
        if service._task is not None:
            service._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await service._task

    process.on_start += [connect, start_checkpoints]
    process.on_stop.append(stop_checkpoints)
    return service


def main() -> None:
    """Run the audit service until SIGTERM."""
    kit = KitSettings()
    configure_logging(kit.log_level)
    install_tracing(NAME, otlp_endpoint=kit.otlp_endpoint)
    asyncio.run(build(kit).run_until_signalled())
