"""The one wiring point of the approval service: settings, then dependencies, then subscribers."""

from __future__ import annotations

import asyncio
from pathlib import Path

from servicekit import Bus, ControlState, KitSettings, ServiceProcess, configure_logging, install_tracing, make_broker
from services.approval import handlers
from services.approval.settings import ApprovalSettings

__all__ = ["NAME", "build", "main"]

NAME = "approval"


def build(kit: KitSettings | None = None, settings: ApprovalSettings | None = None) -> ServiceProcess:
    """Assemble the approval service from its settings."""
    kit = kit or KitSettings()
    settings = settings or ApprovalSettings()
    bus = Bus(make_broker(kit.kafka_bootstrap, NAME), NAME, kit.kafka_bootstrap, kit.topic_prefix)
    bus.consume("actions.decided", handlers.log_event, group_id=f"{kit.topic_prefix}approval")
    bus.consume("actions.results", handlers.log_event, group_id=f"{kit.topic_prefix}approval")
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
    """Run the approval service until SIGTERM."""
    kit = KitSettings()
    configure_logging(kit.log_level)
    install_tracing(NAME, otlp_endpoint=kit.otlp_endpoint)
    asyncio.run(build(kit).run_until_signalled())
