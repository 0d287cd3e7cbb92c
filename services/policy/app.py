"""The one wiring point of the policy service: settings, then dependencies, then subscribers."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from schemas import Envelope
from servicekit import (
    ControlState,
    KitSettings,
    Recorded,
    ServiceProcess,
    SigningKey,
    ToolCatalog,
    deployment_authority,
    kafka_options,
    service_bus,
    service_key,
)
from servicekit.catalog_checks import undo_tenancy_warnings, ungranted_outside_tools, unread_amount_warnings
from servicekit.clock import issuing_clock
from servicekit.consume import Route, consume_routes
from servicekit.runner import every
from servicekit.settings import SettingNotUsable
from services.policy._memory_repository import InMemoryPolicyRepository
from services.policy._pg_repository import PgPolicyRepository
from services.policy.handlers import PolicyHandlers
from services.policy.pack import CompiledPack, PackError, PackSource, compile_pack
from services.policy.payees import PayeeSeal
from services.policy.repository import PolicyRepository, forget_tasks
from services.policy.restored import RESULTS_GROUP, check_not_behind
from services.policy.service import PolicyService, PublishMany
from services.policy.settings import PolicySettings
from services.policy.unread import GroupUnread

__all__ = ["NAME", "PolicyDeps", "PolicyProcess", "build", "in_process"]

NAME = "policy"
TASKS_GROUP = "policy.tasks"  # the consumer group of `tasks` (the same)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PolicyDeps:
    """What the policy service stores through; tests, benchmarks and replays pass the in-memory twin."""

    repo: PolicyRepository


@dataclass
class PolicyProcess(ServiceProcess):
    """The running policy service; `policy` is its use cases, for tests and the benchmark."""

    policy: PolicyService = field(kw_only=True)


def _pack(kit: KitSettings, catalog: ToolCatalog) -> CompiledPack:
    """The pack of `kit.policy_dir`, compiled; a folder that is not there, or a pack that does not compile, is a setting to fix.

    Raised as `SettingNotUsable` (exit `EX_CONFIG`, one line naming TIDEGATE_POLICY_DIR, not restarted): a mistyped folder gave
    a traceback and exit 1, which `tidegate up` restarts for ever (the platform probe).
    """
    try:
        return compile_pack(PackSource.from_dir(kit.policy_dir), catalog)
    except PackError as exc:
        raise SettingNotUsable(f"TIDEGATE_POLICY_DIR: {exc} (got {str(kit.policy_dir)!r})") from exc


def build(kit: KitSettings | None = None, settings: PolicySettings | None = None, *, deps: PolicyDeps | None = None) -> PolicyProcess:
    """Assemble the policy service: every dependency once, the PostgreSQL repository unless `deps` gives another.

    The pack in `kit.policy_dir` is used until a `control.policy` record (read from the beginning
    of `control` at start-up) replaces it. Without `deps` the service stores in its schema through a
    pool that `start` connects before any consumer runs.
    """
    kit = kit or KitSettings()
    settings = settings or PolicySettings()
    catalog = ToolCatalog.load(*kit.tool_dirs)
    # decided safely (`engine.decide`), but most likely a mistake, or an upgrade's step skipped: said before the first call fails
    for warning in [*ungranted_outside_tools(catalog.tools), *undo_tenancy_warnings(catalog.tools), *unread_amount_warnings(catalog.tools)]:
        log.warning("policy: %s", warning)
    pack = _pack(kit, catalog)
    signer = service_key(kit, settings.signing_key_name)
    pool = None
    if deps is None:
        pool = ServiceProcess.pool_of(kit, NAME)
        deps = PolicyDeps(repo=PgPolicyRepository(pool, PayeeSeal(signer, kit.keys_dir)))  # known payees carry the key's proof
    authority = deployment_authority(kit, catalog)
    bus = service_bus(kit, NAME, signer=signer, authority=authority)
    control = ControlState()

    def planned(event: Envelope) -> bool:
        """A proposal signed by the planner's key (checked by the bus before any handler saw it)."""
        return bool(event.keyid) and any(p.kind == "service" and p.name == "planner" for p in authority.principals(event.keyid or ""))

    async def control_caught_up() -> None:  # once, before the first decision: slow through junk, never cut off while reading
        await bus.wait_caught_up("control", while_progressing=True)
        await bus.wait_caught_up("directory", while_progressing=True)

    def consumer_of(topic: str) -> Callable[[], AIOKafkaConsumer | None]:
        return lambda: next((p.consumer for p in bus.pollers if bus.topic(topic) in p.topics), None)

    # The groups whose records a decision waits for: a task's request (`policy.tasks`), an earlier read's result
    # (`policy.results`); after a broker restart either consumer may still be rejoining while the proposals' reads on.
    tasks_unread, results_unread = (
        GroupUnread(consumer_of(topic), bus.topic(topic), held_fetch_s=bus.fetch_max_wait_ms / 1000)
        for topic in ("tasks", "actions.results")
    )

    async def held() -> bool:
        """A consumer retrying a handler, or a group a decision waits for not read to its end: what it waits for may still come."""
        return bus.handlers_retrying > 0 or any([await tasks_unread(), await results_unread()])

    async def results_held() -> bool:
        """What holds a decision that waits for results only: a consumer retrying, or the results group behind (not the tasks group)."""
        return bus.handlers_retrying > 0 or await results_unread()

    service = PolicyService(
        catalog=catalog,
        pack=pack,
        repo=deps.repo,
        signer=signer,
        keys_dir=kit.keys_dir,
        control=control,
        publish_many=bus.publish_many,  # the kit's one publish path: the recorded bytes, batched per partition
        settings=settings,
        ready=control_caught_up,
        issuing_clock=issuing_clock(bus.producer),
        planned=planned,
        inputs_held=held,
        results_held=results_held,
    )
    handlers = PolicyHandlers(service)
    decisions = {
        "actions.proposed": Route(handlers.proposed, handle_batch=handlers.proposed_batch),
        "approvals": Route(handlers.approval),
    }
    # Also not in the table: results release a failed call's budget reservation and say what a read
    # returned. On a consumer of their own: a proposal may wait for the result of its task's earlier read
    # (`provenance_wait_s`), and on the proposals' consumer that result would queue behind the waiting
    # proposal, so the wait could only time out (and fail closed).
    results = {"actions.results": Route(handlers.result, handle_batch=handlers.result_batch)}
    # Not in the table either: a task's request vouches for values, its untrusted fields taint them (provenance).
    # On a consumer of its own, for the same reason: a proposal the planner signed waits until its task is learned,
    # and in a backlog (a poll cut at `max_records`) or on a cluster (the task's partition led by a slower broker)
    # the task's record could come after the proposal's on a shared consumer, behind the waiting proposal.
    tasks = {"tasks": Route(handlers.task, handle_batch=handlers.task_batch)}
    consume_routes(bus, decisions, group_id=f"{kit.topic_prefix}policy")
    consume_routes(bus, results, group_id=f"{kit.topic_prefix}{RESULTS_GROUP}")
    consume_routes(bus, tasks, group_id=f"{kit.topic_prefix}{TASKS_GROUP}")
    bus.consume("control", handlers.control, group_id=None)
    bus.consume("directory", handlers.control, group_id=None)  # tenants' directories, as their admins keep them

    async def release_expired() -> None:
        await every(settings.reservation_check_s, "policy: releasing expired reservations", service.release_expired)

    async def forget_old_tasks() -> None:
        async def step() -> None:
            cutoff = datetime.now(UTC) - timedelta(seconds=settings.task_state_kept_s)
            if (done := await forget_tasks(deps.repo, cutoff)).rows:
                log.info("policy: forgot %d rows of working state older than %s (%d tasks more now forgotten)",
                         done.rows, cutoff.isoformat(), done.tasks)  # fmt: skip

        await every(settings.task_state_check_s, "policy: forgetting old tasks' working state", step)

    async def begin(_: ServiceProcess) -> None:
        if pool is not None:  # a restored database forgot decisions and spend: nothing is decided until `tidegate db catch-up`
            await check_not_behind(pool, kit.kafka_bootstrap, kit.topic_prefix, authority, client_options=kafka_options(kit, NAME))
        await service.repo.record_policy_version(pack.version, pack.source.files, pack.source.settings, f"file:{kit.policy_dir}")

    return PolicyProcess.of(
        kit,
        NAME,
        bus,
        pool=pool,
        migrations=Path(__file__).parent / "migrations",
        control=control,
        on_start=[begin],
        loops=[release_expired, forget_old_tasks],
        policy=service,
    )


def in_process(
    pack: CompiledPack, catalog: ToolCatalog, *, keys_dir: Path | None = None, publish_many: PublishMany | None = None
) -> PolicyService:
    """The policy's use cases without a bus or a database: what what-if, the evals and the benchmarks decide with.

    The same `PolicyService` the process runs, over the in-memory repository, publishing nowhere
    (or through `publish_many`), signing with a throwaway key in `keys_dir` (a new temporary folder
    by default): nothing it signs can authorize a real call, since that key is not the deployment's.
    """
    keys_dir = keys_dir or Path(tempfile.mkdtemp(prefix="tidegate-policy-in-process-"))

    async def nowhere(records: Sequence[Recorded]) -> None:
        return None

    return PolicyService(
        catalog=catalog,
        pack=pack,
        repo=InMemoryPolicyRepository(),
        signer=SigningKey.load_or_create(keys_dir, "policy"),
        keys_dir=keys_dir,
        control=ControlState(),
        publish_many=publish_many or nowhere,
    )
