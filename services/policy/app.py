"""The one wiring point of the policy service: settings, then dependencies, then subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from pathlib import Path

from servicekit import (
    Bus,
    ControlState,
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
from servicekit.consume import Route, consume_routes
from services.policy.batching import DecisionPublisher
from services.policy.handlers import PolicyHandlers
from services.policy.pack import PackSource, compile_pack
from services.policy.repository import PgPolicyRepository
from services.policy.service import PolicyService
from services.policy.settings import PolicySettings

__all__ = ["NAME", "build", "main"]

NAME = "policy"

log = logging.getLogger(__name__)


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
    bus = Bus(
        make_broker(kit.kafka_bootstrap, NAME, **kafka_options(kit, NAME)),
        NAME,
        kit.kafka_bootstrap,
        kit.topic_prefix,
        bounds=kit.bounds,
        signer=signer,
        authority=deployment_authority(kit, catalog),
    )
    control = ControlState()
    decisions = DecisionPublisher(kit.kafka_bootstrap, kit.topic_prefix, service=NAME, client_options=kafka_options(kit, NAME))

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

    sweeper: list[asyncio.Task[None]] = []

    async def release_expired() -> None:
        while True:
            await asyncio.sleep(settings.reservation_check_s)
            try:
                await service.release_expired(datetime.now(UTC))
            except Exception:  # the next round tries again; a sweep must never stop the service
                log.exception("policy: releasing expired reservations failed")

    async def connect(process: ServiceProcess) -> None:
        await decisions.start()
        assert process.pool is not None
        service.repo = PgPolicyRepository(process.pool)
        await service.repo.record_policy_version(pack.version, pack.source.files, pack.source.settings, f"file:{kit.policy_dir}")
        sweeper.append(asyncio.create_task(release_expired(), name="policy-reservation-expiry"))

    async def stop(process: ServiceProcess) -> None:
        for task in sweeper:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        sweeper.clear()
        await decisions.stop()

    process = ServiceProcess(
        name=NAME,
        stall_after_s=kit.stall_after_s,
        handler_limit_s=kit.handler_limit_s,
        bus=bus,
        database_url=kit.service_database_url(NAME),
        schema=NAME,
        migrations=Path(__file__).parent / "migrations",
        control=control,
        metrics_port=kit.metrics_port,
        pool_max=kit.db_pool_max,
        ready_dir=kit.ready_dir,
        on_start=[connect],
        on_stop=[stop],
    )
    process.policy = service  # type: ignore[attr-defined]
    return process


def main() -> None:
    """Run the policy service until SIGTERM."""
    kit = KitSettings()
    configure_logging(kit.log_level)
    install_tracing(NAME, otlp_endpoint=kit.otlp_endpoint)
    asyncio.run(build(kit).run_until_signalled())
