"""The one wiring point of the executor service: settings, then dependencies, then subscribers."""

from __future__ import annotations

import asyncio
from pathlib import Path

from servicekit import Bus, ControlState, KitSettings, ServiceProcess, configure_logging, install_tracing, make_broker
from services.executor import handlers
from services.executor.settings import ExecutorSettings

__all__ = ["NAME", "build", "main"]

NAME = "executor"


def build(kit: KitSettings | None = None, settings: ExecutorSettings | None = None) -> ServiceProcess:
    """Assemble the executor service from its settings."""
    kit = kit or KitSettings()
    settings = settings or ExecutorSettings()
    bus = Bus(make_broker(kit.kafka_bootstrap, NAME), NAME, kit.kafka_bootstrap, kit.topic_prefix)
    bus.consume("actions.authorized", handlers.log_event, group_id=f"{kit.topic_prefix}executor")
    control = ControlState()
    bus.consume("control", control.apply, group_id=None)
    return ServiceProcess(
        name=NAME,
        bus=bus,
        database_url=kit.database_url,
        schema=NAME,
        migrations=Path(__file__).parent / "migrations",
        control=control,
        metrics_port=kit.metrics_port,
        pool_max=kit.db_pool_max,
        ready_dir=kit.ready_dir,
    )


def main() -> None:
    """Run the executor service until SIGTERM."""
    kit = KitSettings()
    configure_logging(kit.log_level)
    install_tracing(NAME, otlp_endpoint=kit.otlp_endpoint)
    asyncio.run(build(kit).run_until_signalled())
