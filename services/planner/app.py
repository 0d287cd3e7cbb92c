"""The one wiring point of the planner service: settings, then dependencies, then subscribers."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from schemas import RiskClass
from servicekit import (
    Handler,
    KitSettings,
    Outlet,
    ServiceProcess,
    ToolCatalog,
    deployment_authority,
    service_bus,
    service_key,
)
from servicekit.runner import every
from servicekit.settings import review_price
from services.planner.action_ids import ActionIds
from services.planner.handlers import PlannerHandlers
from services.planner.repository import PostgresTaskRepository, TaskRepository, forget_applied
from services.planner.settings import PlannerSettings
from services.planner.state_seal import StateSeal
from services.planner.strategies import LlmStrategy, PlaybookStrategy, Strategy
from services.planner.task_state import CostRates, StepTimeouts

__all__ = ["NAME", "READS", "PlannerDeps", "PlannerProcess", "build", "consumer_group", "routes"]

NAME = "planner"
READS = ("tasks", "actions.decided", "approvals", "actions.results")  # the topics the planner consumes, on one group


def consumer_group(prefix: str) -> str:
    """The planner's consumer group in deployment `prefix` (one for every topic it reads)."""
    return f"{prefix}planner"


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannerDeps:
    """What the planner stores through, plans with and publishes on; a replay passes the in-memory twin and its strategy.

    The catch-up after a restore passes its own pool and an outlet that publishes nothing (`restored.py`).
    """

    repo: TaskRepository | None = None  # None: the task state in PostgreSQL, on `pool`
    strategy: Strategy | None = None  # None: the one the settings choose
    pool: asyncpg.Pool | None = None  # None: the service's own, connected at its start
    out: Outlet | None = None  # None: the service's bus


@dataclass
class PlannerProcess(ServiceProcess):
    """The running planner; `planner` is its handlers (the use cases), for tests and replays."""

    planner: PlannerHandlers = field(kw_only=True)


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


def routes(handlers: PlannerHandlers) -> dict[str, Handler]:
    """The handler of each topic the planner reads (`READS`): its consumers', and the catch-up's replay after a restore."""
    return {
        "tasks": handlers.on_task,
        "actions.decided": handlers.on_decided,
        "approvals": handlers.on_approval,
        "actions.results": handlers.on_result,
    }


def build(kit: KitSettings | None = None, settings: PlannerSettings | None = None, *, deps: PlannerDeps | None = None) -> PlannerProcess:
    """Assemble the planner: every dependency once, the PostgreSQL task state unless `deps` gives another."""
    kit = kit or KitSettings()
    settings = settings or PlannerSettings()
    rates = CostRates(orchestration_usd_per_event=settings.orchestration_usd_per_event, review=review_price(kit, settings))
    catalog = ToolCatalog.load(*kit.tool_dirs)
    deps = deps or PlannerDeps()
    pool = None  # the process's own, when it has one
    key = service_key(kit, NAME)
    repo = deps.repo
    if repo is None:
        on = deps.pool if deps.pool is not None else ServiceProcess.pool_of(kit, NAME)
        pool = None if deps.pool is not None else on  # a pool given is its owner's to connect and close
        seal = StateSeal(key, kit.keys_dir)  # each task state signed as it is written, checked when read back from elsewhere
        repo = PostgresTaskRepository(on, rates, seal=seal, prefix=kit.topic_prefix, cached_tasks=settings.cached_tasks)
    bus = service_bus(kit, NAME, signer=key, authority=deployment_authority(kit, catalog))
    handlers = PlannerHandlers(
        repo=repo,
        strategy=deps.strategy or build_strategy(settings, catalog),
        out=deps.out or bus,
        rates=rates,
        read_only=frozenset(name for name, spec in catalog.items() if spec.risk is RiskClass.READ),
        ids=ActionIds.of_key(key),
        proposals_again=settings.proposals_again_after_expiry,
        timeouts=StepTimeouts(
            default_s=settings.step_timeout_default_s,
            by_tool={
                name: settings.step_timeouts_s.get(spec.risk.value, settings.step_timeout_default_s) for name, spec in catalog.items()
            },
        ),
    )

    async def sweep_step_timeouts() -> None:
        await every(settings.step_timeout_check_s, "planner: step-timeout sweep", handlers.on_tick)

    async def forget_applied_events() -> None:
        async def step() -> None:
            cutoff = datetime.now(UTC) - timedelta(seconds=settings.applied_events_kept_s)
            if forgotten := await forget_applied(repo, cutoff):
                log.info("planner: forgot %d applied event ids older than %s", forgotten, cutoff.isoformat())

        await every(settings.applied_events_check_s, "planner: forgetting applied event ids", step)

    handler_of = routes(handlers)
    # Each event waits on a few database round trips and a publish: handle different tasks at once, each task in order.
    for topic in READS:  # the topics `tidegate db catch-up` hands the planner again after a restore (`restored.replay`)
        bus.consume(
            topic,
            handler_of[topic],
            group_id=consumer_group(kit.topic_prefix),
            max_records=settings.max_records,
            concurrency=settings.concurrency,
        )
    return PlannerProcess.of(
        kit,
        NAME,
        bus,
        pool=pool,
        migrations=Path(__file__).parent / "migrations",
        loops=[sweep_step_timeouts, forget_applied_events],
        planner=handlers,
    )
