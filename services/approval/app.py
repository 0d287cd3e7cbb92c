"""The one wiring point of the approval service: settings, then dependencies, then subscribers and HTTP."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from servicekit import (
    ControlState,
    KitSettings,
    ServiceProcess,
    ToolCatalog,
    deployment_authority,
    kafka_options,
    service_bus,
    service_key,
    sign_event,
)
from servicekit.clock import issuing_clock, judging_clock
from servicekit.consume import Route, consume_routes
from servicekit.runner import every
from servicekit.settings import review_price
from services.approval import handlers, webhooks
from services.approval._endpoint_rows import EndpointRows, webhook_vault
from services.approval._outage import DatabaseOutage
from services.approval._pins import RowPins
from services.approval._row_proofs import approval_seals
from services.approval._task_event_store import forget_task_events
from services.approval._undo_store import InMemoryUndoResults, PgUndoResults, UndoResults
from services.approval.api import create_api
from services.approval.domain import GroupsConfig
from services.approval.ratelimit import ApiRateLimits
from services.approval.repository import ApprovalRepository, Endpoint, PgApprovalRepository
from services.approval.restored import check_not_behind
from services.approval.service import ApprovalService
from services.approval.settings import ApprovalSettings

__all__ = ["NAME", "ApprovalDeps", "ApprovalProcess", "build", "load_endpoints"]

NAME = "approval"
log = logging.getLogger(__name__)
UNADOPTED_NAMED = 10  # the pending requests without a signed event named at start (the oldest); the rest counted


def load_endpoints(path: Path | None) -> list[Endpoint]:
    """Webhook endpoints from the settings file (`endpoints: [{endpoint_id, url, secret, tenant_id?, approvers?, …}]`).

    `former_secret` and `former_secret_until` (both or neither): a rotation's overlap, the secret before and until when it
    also signs and verifies, for the approvers listed (docs/approval.md, "Rotating an endpoint's secret").
    """
    if path is None:
        return []
    doc = yaml.safe_load(path.read_text()) or {}
    found = []
    for item in doc.get("endpoints", []):
        secret = str(item["secret"])
        webhooks.check_secret(secret)  # a malformed secret fails at start-up, not at the first delivery
        former, until = item.get("former_secret"), item.get("former_secret_until")
        if (former is None) != (until is None):
            raise ValueError(f"endpoint {item['endpoint_id']}: former_secret and former_secret_until go together (a rotation's overlap)")
        if former is not None:
            webhooks.check_secret(str(former))
            until = until if isinstance(until, datetime) else datetime.fromisoformat(str(until))
            if until.tzinfo is None:
                raise ValueError(f"endpoint {item['endpoint_id']}: former_secret_until needs a time zone (e.g. 2027-01-05T12:00:00Z)")
        approvers = tuple(item.get("approvers", ()))
        found.append(
            Endpoint(
                endpoint_id=str(item["endpoint_id"]),
                url=str(item["url"]),
                secret=secret,
                tenant_id=str(item.get("tenant_id", "*")),
                approvers=approvers,
                enabled=bool(item.get("enabled", True)),
                source="file",
                former_secret=None if former is None else str(former),
                former_until=until,
                former_approvers=approvers if former is not None else (),
            )
        )
    return found


@dataclass(frozen=True)
class ApprovalDeps:
    """Where approvals, tokens and webhooks are stored, and how webhooks are sent; tests pass twins."""

    repo: ApprovalRepository
    sender: webhooks.WebhookSender | None = None  # None: HTTP, with the settings' timeout and allowed hosts
    undo_results: UndoResults = field(default_factory=InMemoryUndoResults)  # the undo plans approvers may run


@dataclass
class ApprovalProcess(ServiceProcess):
    """The running approval service; `approval` is its use cases, for tests."""

    approval: ApprovalService = field(kw_only=True)


def build(
    kit: KitSettings | None = None,
    settings: ApprovalSettings | None = None,
    *,
    sender: webhooks.WebhookSender | None = None,
    deps: ApprovalDeps | None = None,
) -> ApprovalProcess:
    """Assemble the approval service: bus, signing key, groups, catalog, repository, HTTP API, background sweeps.

    Without `deps` it stores in its schema through a pool `start` connects before anything runs;
    `sender` replaces the HTTP webhook sender only (tests), `deps.sender` does the same with other stores.
    """
    kit = kit or KitSettings()
    settings = settings or ApprovalSettings()
    price = review_price(kit, settings)
    key = service_key(kit, NAME)
    groups = GroupsConfig.load(settings.groups_file)
    catalog = ToolCatalog.load(*kit.tool_dirs) if kit.tools_dir.is_dir() else None
    file_endpoints = load_endpoints(settings.webhooks_file)
    authority = deployment_authority(kit, catalog)
    # What the schema's rows grant is signed by keys it does not hold: the service's for what it writes, an operator's for tokens.
    # Endpoints' secrets are sealed to a key pair of its own beside that key (not derived from it: `keys rotate` keeps them).
    vault = webhook_vault(kit.keys_dir)
    vault.ensure()
    control = ControlState()
    # Which endpoint row is current and which tokens are revoked: said on `directory` before each row is written, signed.
    pins = RowPins(
        control,
        sign=lambda record, sequence: sign_event(record, key, sequence=sequence),
        publish=lambda record: bus.publish("directory", record),
        required=settings.require_pinned_endpoints,
        caught_up=lambda: bus.wait_caught_up("directory"),
    )
    seals = approval_seals(authority, service_key=key, vault=vault, pins=pins)
    pool = None
    if deps is None:
        pool = ServiceProcess.pool_of(kit, NAME)
        repo = PgApprovalRepository(pool, NAME, seals=seals)
        deps = ApprovalDeps(repo=repo, sender=sender, undo_results=PgUndoResults(pool, NAME))
    own_sender = deps.sender is None
    bus = service_bus(kit, NAME, signer=key, authority=authority)
    outage = DatabaseOutage(bus)  # the API's and the sweeps' database errors on `/health`, beside the consumers'

    def base_url() -> str:  # links in webhooks point at the address the HTTP server listens on
        if settings.public_url:
            return settings.public_url
        return proc.http_url if proc.serving else f"http://{settings.http_host}:{settings.http_port}"

    service = ApprovalService(
        repo=deps.repo,
        publisher=bus,
        key=key,
        groups=groups,
        settings=settings,
        catalog=catalog,
        control=control,
        sender=deps.sender or webhooks.HttpxSender(settings.webhook_timeout_s, settings.webhook_allowed_hosts),
        undo_results=deps.undo_results,
        base_url=base_url,
        seals=seals,
        review_price=price,
        authority=authority,
        # A request's deadline, a link's key grace and a token's life judged at the broker's time when it is later than
        # this host's: a host behind kept requests approvable past their deadline (docs/reliability.md).
        clock=judging_clock(bus.producer),
        # and the lifetimes it issues (a request's deadline, a link's, a rotated token's) set from the broker's time: a
        # host ahead lengthened each of them by as much (docs/reliability.md).
        issuing_clock=issuing_clock(bus.producer),
    )
    routes = {
        "actions.decided": Route(handlers.on_decided(service), handle_batch=handlers.on_decided_batch(service)),
        "actions.results": Route(handlers.on_result(service), handle_batch=handlers.on_result_batch(service)),
    }
    consume_routes(
        bus,
        routes,
        group_id=f"{kit.topic_prefix}approval",
        fetch_min_bytes=settings.fetch_min_bytes,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )
    bus.consume("control", control.apply, group_id=None)
    # the directories tenant admins keep through the API, the current endpoint rows, the tokens revoked
    bus.consume("directory", control.apply, group_id=None)

    async def not_behind_the_bus(_: ServiceProcess) -> None:  # a table restored from a backup offers decided requests again
        if pool is not None:
            await check_not_behind(
                pool, service.repo, kit.kafka_bootstrap, kit.topic_prefix, authority, client_options=kafka_options(kit, NAME)
            )

    async def pin_rows(_: ServiceProcess) -> None:  # an upgrade: rows from before this release named current, or revoked, once
        if not settings.require_pinned_endpoints:
            for endpoint in await service.repo.pin_unpinned():
                log.warning(
                    "approval: webhook endpoint %s of tenant %s (%s) pinned as found: its row is now the one trusted; check it",
                    endpoint.endpoint_id,
                    endpoint.tenant_id,
                    endpoint.url,
                )
        if revoked := await service.repo.pin_revocations():
            log.info("approval: %d token(s) revoked before revocations were published named revoked on directory", revoked)

    async def install_file_endpoints(_: ServiceProcess) -> None:  # after `directory` is read: each is pinned as it is written
        for endpoint in file_endpoints:
            # Written (and pinned on `directory`, kept forever and read whole at every start) only when its trusted row is not
            # what the file says: a restart with the same file adds nothing to the topic.
            if await service.repo.endpoint(endpoint.tenant_id, endpoint.endpoint_id) != endpoint:
                await service.repo.upsert_endpoint(endpoint)
        in_file = {(e.tenant_id, e.endpoint_id) for e in file_endpoints}
        for endpoint in await service.repo.endpoints():
            if endpoint.unproven is not None:  # e.g. registered before migration 011: said once at start, and at each use
                EndpointRows(seals.endpoints, vault, pins).refused(endpoint)
            elif endpoint.source == "file" and endpoint.enabled and (endpoint.tenant_id, endpoint.endpoint_id) not in in_file:
                # removed from the file since the last start: stop sending to it (kept for the delivery log)
                await service.repo.upsert_endpoint(replace(endpoint, enabled=False))

    async def tell_unadopted(_: ServiceProcess) -> None:
        """One line at start naming the pending requests an older release opened, which no approver can decide until adopted."""
        count, oldest = await service.repo.unadopted(UNADOPTED_NAMED)
        if count:
            log.warning(
                "approval: %d pending request(s) keep no signed event (opened before release 23, a follow-up before 25): %s%s; "
                "they cannot be approved or resolved, and their messages queued by a release before 24 wait, until the operator "
                "runs `tidegate approvals adopt` (docs/approval.md)",
                count,
                ", ".join(oldest),
                f" and {count - len(oldest)} more" if count > len(oldest) else "",
            )

    async def sweep() -> None:
        await every(settings.sweep_interval_s, "approval: sweep", outage.guarded("approval: sweep", service.sweep), at_start=True)

    async def forget_old_task_events() -> None:
        async def step() -> None:
            cutoff = datetime.now(UTC) - timedelta(seconds=settings.task_events_kept_s)
            if forgotten := await forget_task_events(service.repo, cutoff):
                log.info("approval: forgot %d task events older than %s", forgotten, cutoff.isoformat())

        what = "approval: forgetting old task events"
        await every(settings.task_events_check_s, what, outage.guarded(what, step), at_start=True)

    async def deliver_webhooks() -> None:
        what = "approval: webhook delivery"
        interval_s = min(1.0, settings.sweep_interval_s)
        # A round waits for its turns as long as the interval: a hanging receiver delays no other endpoint's next message more.
        deliver = functools.partial(service.deliver_webhooks, wait_s=interval_s)
        await every(interval_s, what, outage.guarded(what, deliver), at_start=True)

    async def close(_: ServiceProcess) -> None:
        await service.stop_webhook_turns()
        if own_sender and isinstance(service.sender, webhooks.HttpxSender):
            await service.sender.close()

    proc = ApprovalProcess.of(
        kit,
        NAME,
        bus,
        pool=pool,
        migrations=Path(__file__).parent / "migrations",
        control=control,
        http_app=create_api(
            service,
            ApiRateLimits(settings.rate_limit_per_token, settings.rate_limit_per_ip),
            on_database_error=outage.failed,
            max_body_bytes=kit.bounds.max_bytes,  # the largest event the deployment's consumers read: edited args always fit
        ),
        http_host=settings.http_host,
        http_port=settings.http_port,
        on_start=[not_behind_the_bus],
        caught_up_on=("directory",),
        on_caught_up=[pin_rows, install_file_endpoints, tell_unadopted],
        on_stop=[close],
        loops=[sweep, deliver_webhooks, forget_old_task_events],
        approval=service,
    )
    return proc
