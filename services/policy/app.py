"""The one wiring point of the policy service: settings, then dependencies, then subscribers."""

from __future__ import annotations

import asyncio
from pathlib import Path

from servicekit import (
    Bus,
    ControlState,
    KitSettings,
    ServiceProcess,
    SigningKey,
    ToolCatalog,
    configure_logging,
    install_tracing,
    make_broker,
)
from services.policy.batching import DecisionPublisher, Route, consume_routes
from services.policy.handlers import PolicyHandlers
from services.policy.pack import PackSource, compile_pack
from services.policy.repository import PgPolicyRepository
from services.policy.service import PolicyService
from services.policy.settings import PolicySettings

__all__ = ["NAME", "build", "main"]

NAME = "policy"


def build(kit: KitSettings | None = None, settings: PolicySettings | None = None) -> ServiceProcess:
    """Assemble the policy service from its settings.

    The pack in `kit.policy_dir` is used until a `control.policy` record (read from the beginning
    of `control` at start-up) replaces it. The service's `PolicyService` is reachable as
    `process.policy` for tests and the benchmark.
    """
    kit = kit or KitSettings()
    settings = settings or PolicySettings()
    catalog = ToolCatalog.load(kit.tools_dir)
    pack = compile_pack(PackSource.from_dir(kit.policy_dir), catalog)
    signer = SigningKey.load_or_create(kit.keys_dir, settings.signing_key_name)
    bus = Bus(make_broker(kit.kafka_bootstrap, NAME), NAME, kit.kafka_bootstrap, kit.topic_prefix)
    control = ControlState()
    decisions = DecisionPublisher(kit.kafka_bootstrap, kit.topic_prefix, service=NAME)

    async def control_caught_up() -> None:
        await bus.wait_caught_up("control")

    service = PolicyService(
        catalog=catalog,
        pack=pack,
        repo=None,
        signer=signer,
        keys_dir=kit.keys_dir,
        control=control,
        publish=bus.publish,
        settings=settings,
        ready=control_caught_up,
        publish_many=decisions.publish_many,
    )
    handlers = PolicyHandlers(service)
    routes = {
        "actions.proposed": Route(handlers.proposed, handle_batch=handlers.proposed_batch),
        "approvals": Route(handlers.approval),
        # Not in the design's table: results are needed to release a failed call's budget reservation.
        "actions.results": Route(handlers.result),
        # Also not in the table: a task's request vouches for values, its untrusted fields taint them (provenance).
        "tasks": Route(handlers.task),
    }
    consume_routes(bus, routes, group_id=f"{kit.topic_prefix}policy")
    bus.consume("control", handlers.control, group_id=None)

    async def connect(process: ServiceProcess) -> None:
        await decisions.start()
        assert process.pool is not None
        service.repo = PgPolicyRepository(process.pool)
        await service.repo.record_policy_version(pack.version, pack.source.files, pack.source.settings, f"file:{kit.policy_dir}")

    process = ServiceProcess(
        name=NAME,
        bus=bus,
        database_url=kit.database_url,
        schema=NAME,
        migrations=Path(__file__).parent / "migrations",
        control=control,
        metrics_port=kit.metrics_port,
        pool_max=kit.db_pool_max,
        ready_dir=kit.ready_dir,
        on_start=[connect],
        on_stop=[lambda _: decisions.stop()],
    )
    process.policy = service  # type: ignore[attr-defined]
    return process


def main() -> None:
    """Run the policy service until SIGTERM."""
    kit = KitSettings()
    configure_logging(kit.log_level)
    install_tracing(NAME, otlp_endpoint=kit.otlp_endpoint)
    asyncio.run(build(kit).run_until_signalled())
