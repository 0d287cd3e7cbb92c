"""The one wiring point of the planner service: settings, then dependencies, then subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from schemas import RiskClass
from servicekit import (
    Bus,
    Handler,
    KitSettings,
    ServiceProcess,
    ToolCatalog,
    configure_logging,
    deployment_authority,
    install_tracing,
    kafka_options,
    make_broker,
    service_key,
)
from services.planner.domain import CostRates, StepTimeouts
from services.planner.handlers import PlannerHandlers
from services.planner.repository import NotStartedRepository, PostgresTaskRepository
from services.planner.settings import PlannerSettings
from services.planner.strategies import LlmStrategy, PlaybookStrategy, Strategy

__all__ = ["NAME", "build", "main"]

NAME = "planner"

log = logging.getLogger(__name__)


def build_strategy(settings: PlannerSettings, catalog: ToolCatalog) -> Strategy:
    """The configured strategy; litellm is imported only when the LLM strategy is chosen."""
    if settings.strategy == "llm":
        from services.planner.llm import LiteLLMClient

        client = LiteLLMClient(
            api_base=settings.llm_api_base,
            api_key=settings.llm_api_key.get_secret_value() if settings.llm_api_key else None,
            timeout_s=settings.llm_timeout_s,
        )
        return LlmStrategy(catalog, client, cheap_model=settings.cheap_model, strong_model=settings.strong_model)
    return PlaybookStrategy(catalog)


def build(kit: KitSettings | None = None, settings: PlannerSettings | None = None) -> ServiceProcess:
    """Assemble the planner service from its settings."""
    kit = kit or KitSettings()
    settings = settings or PlannerSettings()
    catalog = ToolCatalog.load(kit.tools_dir)
    rates = CostRates(
        orchestration_usd_per_event=settings.orchestration_usd_per_event,
        human_review_minutes=settings.human_review_minutes,
        human_hourly_rate_usd=settings.human_hourly_rate_usd,
    )
    bus = Bus(
        make_broker(kit.kafka_bootstrap, NAME, **kafka_options(kit, NAME)),
        NAME,
        kit.kafka_bootstrap,
        kit.topic_prefix,
        bounds=kit.bounds,
        signer=service_key(kit, NAME),
        authority=deployment_authority(kit, catalog),
    )
    service = ServiceProcess(
        name=NAME,
        stall_after_s=kit.stall_after_s,
        handler_limit_s=kit.handler_limit_s,
        bus=bus,
        database_url=kit.service_database_url(NAME),
        schema=NAME,
        migrations=Path(__file__).parent / "migrations",
        metrics_port=kit.metrics_port,
        pool_max=kit.db_pool_max,
        ready_dir=kit.ready_dir,
    )
    handlers = PlannerHandlers(
        repo=NotStartedRepository(),
        strategy=build_strategy(settings, catalog),
        publish=bus.publish,
        rates=rates,
        read_only=frozenset(name for name, spec in catalog.items() if spec.risk is RiskClass.READ),
        timeouts=StepTimeouts(
            default_s=settings.step_timeout_default_s,
            by_tool={
                name: settings.step_timeouts_s.get(spec.risk.value, settings.step_timeout_default_s) for name, spec in catalog.items()
            },
        ),
    )
    sweeper: list[asyncio.Task[None]] = []

    async def sweep() -> None:
        while True:
            await asyncio.sleep(settings.step_timeout_check_s)
            try:
                await handlers.on_tick()
            except Exception:  # the next tick tries again; a sweep must never stop the service
                log.exception("step-timeout sweep failed")

    async def connect(svc: ServiceProcess) -> None:
        assert svc.pool is not None
        handlers.repo = PostgresTaskRepository(svc.pool, rates, prefix=kit.topic_prefix)
        sweeper.append(asyncio.create_task(sweep(), name="planner-step-timeouts"))

    async def stop_sweeping(svc: ServiceProcess) -> None:
        for task in sweeper:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        sweeper.clear()

    service.on_start.append(connect)
    service.on_stop.append(stop_sweeping)
    routes: dict[str, Handler] = {
        "tasks": handlers.on_task,
        "actions.decided": handlers.on_decided,
        "approvals": handlers.on_approval,
        "actions.results": handlers.on_result,
    }
    # Each event waits on a few database round trips and a publish: handle different tasks at once, each task in order.
    for topic, handler in routes.items():
        bus.consume(
            topic, handler, group_id=f"{kit.topic_prefix}planner", max_records=settings.max_records, concurrency=settings.concurrency
        )
    return service


def main() -> None:
    """Run the planner service until SIGTERM."""
    kit = KitSettings()
    configure_logging(kit.log_level)
    install_tracing(NAME, otlp_endpoint=kit.otlp_endpoint)
    asyncio.run(build(kit).run_until_signalled())
