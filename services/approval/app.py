"""The one wiring point of the approval service: settings, then dependencies, then subscribers and HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import yaml

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
from services.approval import handlers, webhooks
from services.approval._undo_store import PgUndoResults
from services.approval.api import ServiceHolder, create_api
from services.approval.domain import GroupsConfig
from services.approval.ratelimit import ApiRateLimits
from services.approval.repository import Endpoint, PgApprovalRepository
from services.approval.service import ApprovalService
from services.approval.settings import ApprovalSettings

__all__ = ["NAME", "build", "load_endpoints", "main"]

NAME = "approval"
log = logging.getLogger(__name__)


def load_endpoints(path: Path | None) -> list[Endpoint]:
    """Webhook endpoints from the settings file (`endpoints: [{endpoint_id, url, secret, tenant_id?, approvers?}]`)."""
    if path is None:
        return []
    doc = yaml.safe_load(path.read_text()) or {}
    found = []
    for item in doc.get("endpoints", []):
        secret = str(item["secret"])
        webhooks.check_secret(secret)  # a malformed secret fails at start-up, not at the first delivery
        found.append(
            Endpoint(
                endpoint_id=str(item["endpoint_id"]),
                url=str(item["url"]),
                secret=secret,
                tenant_id=str(item.get("tenant_id", "*")),
                approvers=tuple(item.get("approvers", ())),
                enabled=bool(item.get("enabled", True)),
                source="file",
            )
        )
    return found


async def _every(interval_s: float, what: str, step: Callable[[], Awaitable[object]]) -> None:
    """Run `step` forever; an error is logged and retried next round (this loop owns those retries)."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("approval: %s failed; retrying in %.1fs", what, interval_s)
        await asyncio.sleep(interval_s)


def build(
    kit: KitSettings | None = None, settings: ApprovalSettings | None = None, *, sender: webhooks.WebhookSender | None = None
) -> ServiceProcess:
    """Assemble the approval service: bus, signing key, groups, catalog, HTTP API, background sweeps."""
    kit = kit or KitSettings()
    settings = settings or ApprovalSettings()
    key = SigningKey.load_or_create(kit.keys_dir, NAME)
    groups = GroupsConfig.load(settings.groups_file)
    catalog = ToolCatalog.load(kit.tools_dir) if kit.tools_dir.is_dir() else None
    file_endpoints = load_endpoints(settings.webhooks_file)
    holder = ServiceHolder()

    def service() -> ApprovalService:
        assert holder.service is not None, "the approval service consumes only after start-up"
        return holder.service

    bus = Bus(
        make_broker(kit.kafka_bootstrap, NAME, **kafka_options(kit, NAME)),
        NAME,
        kit.kafka_bootstrap,
        kit.topic_prefix,
        bounds=kit.bounds,
        signer=key,
        authority=deployment_authority(kit, catalog),
    )
    bus.consume("actions.decided", handlers.on_decided(service), group_id=f"{kit.topic_prefix}approval")
    bus.consume("actions.results", handlers.on_result(service), group_id=f"{kit.topic_prefix}approval")
    control = ControlState()
    bus.consume("control", control.apply, group_id=None)

    proc = ServiceProcess(
        name=NAME,
        stall_after_s=kit.stall_after_s,
        handler_limit_s=kit.handler_limit_s,
        bus=bus,
        database_url=kit.service_database_url(NAME),
        schema=NAME,
        migrations=Path(__file__).parent / "migrations",
        control=control,
        http_app=create_api(holder, ApiRateLimits(settings.rate_limit_per_token, settings.rate_limit_per_ip)),
        http_host=settings.http_host,
        http_port=settings.http_port,
        metrics_port=kit.metrics_port,
        pool_max=kit.db_pool_max,
        ready_dir=kit.ready_dir,
    )
    tasks: list[asyncio.Task[None]] = []
    own_sender = sender is None

    def base_url() -> str:
        if settings.public_url:
            return settings.public_url
        return proc.http_url if proc._http is not None else f"http://{settings.http_host}:{settings.http_port}"

    async def on_start(p: ServiceProcess) -> None:
        assert p.pool is not None
        repo = PgApprovalRepository(p.pool, NAME)
        for endpoint in file_endpoints:
            await repo.upsert_endpoint(endpoint)
        in_file = {e.endpoint_id for e in file_endpoints}
        for endpoint in await repo.endpoints():
            if endpoint.source == "file" and endpoint.enabled and endpoint.endpoint_id not in in_file:
                # removed from the file since the last start: stop sending to it (kept for the delivery log)
                await repo.upsert_endpoint(replace(endpoint, enabled=False))
        holder.service = ApprovalService(
            repo=repo,
            publisher=bus,
            key=key,
            groups=groups,
            settings=settings,
            catalog=catalog,
            control=control,
            sender=sender or webhooks.HttpxSender(settings.webhook_timeout_s, settings.webhook_allowed_hosts),
            undo_results=PgUndoResults(p.pool, NAME),
            base_url=base_url,
        )
        tasks.append(asyncio.create_task(_every(settings.sweep_interval_s, "sweep", holder.service.sweep)))
        tasks.append(asyncio.create_task(_every(min(1.0, settings.sweep_interval_s), "webhook delivery", holder.service.deliver_webhooks)))

    async def on_stop(p: ServiceProcess) -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        tasks.clear()
        if own_sender and holder.service is not None and isinstance(holder.service.sender, webhooks.HttpxSender):
            await holder.service.sender.close()
        holder.service = None

    proc.on_start.append(on_start)
    proc.on_stop.append(on_stop)
    return proc


def main() -> None:
    """Run the approval service until SIGTERM."""
    kit = KitSettings()
    configure_logging(kit.log_level)
    install_tracing(NAME, otlp_endpoint=kit.otlp_endpoint)
    asyncio.run(build(kit).run_until_signalled())
