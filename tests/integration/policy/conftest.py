"""Fixtures of the policy service's integration tests: the running service, a topic collector, proposal and grant builders."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from bus_helpers import Collector, Producer

from schemas import (
    ActionDecided,
    ActionProposed,
    ActionProposedData,
    ApprovalData,
    ApprovalGranted,
    ProposalCost,
)
from servicekit import (
    REPO_ROOT,
    ControlState,
    KitSettings,
    ServiceProcess,
    SigningKey,
    ToolCatalog,
    approval_message,
)
from servicekit.db import apply_migrations, create_pool
from services.policy._pg_repository import PgPolicyRepository
from services.policy.app import build
from services.policy.pack import PackSource, compile_pack
from services.policy.service import PolicyService
from tests.conftest import delete_prefix_topics

CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")

log = logging.getLogger(__name__)


def proposal(
    tool: str,
    args: dict[str, Any],
    *,
    tenant: str = "acme",
    task_id: str | None = None,
    action_id: str | None = None,
    mode: str = "autonomous",
    budget_usd: float | None = None,
    tainted_args: list[str] | None = None,
) -> ActionProposed:
    """An `action.proposed` with unique ids."""
    task_id = task_id or f"t-{uuid.uuid4().hex[:8]}"
    data = ActionProposedData(
        action_id=action_id or f"a-{uuid.uuid4().hex[:10]}",
        task_id=task_id,
        tenant_id=tenant,
        step=1,
        tool=tool,
        args=args,
        rationale="integration test",
        proposer="tests/policy",
        tainted_args=tainted_args or [],
        cost=ProposalCost(usd=0.0),
        mode=mode,  # type: ignore[arg-type]
        requested_by="alice@acme.example",
        budget_usd=budget_usd,
    )
    return ActionProposed.build(data, source="tests/policy")


def grant(
    decided: ActionDecided,
    key: SigningKey | None,
    *,
    edited_args: dict[str, Any] | None = None,
    args: dict[str, Any] | None = None,
    approvers: tuple[str, ...] = ("bob@acme.example",),
    groups: tuple[str, ...] = ("finance",),
) -> ApprovalGranted:
    """An `approval.granted` for an escalated decision, signed with `key` as the approval service would (unsigned when None).

    Each approver is shown in `groups` (the default pack counts finance approvers toward a refund's quorum).
    """
    d = decided.data
    now = datetime.now(UTC)
    data = ApprovalData(
        approval_id=f"ap-{uuid.uuid4().hex[:8]}",
        action_id=d.action_id,
        task_id=d.task_id,
        tenant_id=d.tenant_id,
        tool=d.tool,
        args=args if args is not None else d.args,
        action_digest=d.action_digest,
        reasons=d.reasons,
        policy_version=d.policy_version,
        approver=approvers[-1],
        approvers=list(approvers),
        approver_groups={a: list(groups) for a in approvers},
        edited_args=edited_args,
        expires_at=now + timedelta(hours=1),
        decided_at=now,
        requested_by=d.requested_by,
        key_id=key.key_id if key else None,
    )
    if key is not None:
        data = data.model_copy(update={"signature": key.sign(approval_message("tidegate.approval.granted", data))})
    return ApprovalGranted.build(data, source="tidegate/approval")


def _policy_on(pool: asyncpg.Pool, tenant: str, settings: dict[str, Any], keys: Path) -> PolicyService:
    """The policy's use cases on `pool` (no bus: publishing goes nowhere), with the default pack and `tenant`'s `settings`."""
    source = PackSource.from_dir(REPO_ROOT / "policies" / "default")
    pack_settings = source.settings | {"tenants": source.settings["tenants"] | {tenant: settings}}

    async def publish_many(events: list[Any]) -> None:
        pass

    return PolicyService(
        catalog=CATALOG,
        pack=compile_pack(PackSource(files=source.files, settings=pack_settings), CATALOG),
        repo=PgPolicyRepository(pool),
        signer=SigningKey.load_or_create(keys, "policy"),
        keys_dir=keys,
        control=ControlState(),
        publish_many=publish_many,
    )


@pytest.fixture
async def pools(infra: Any) -> AsyncIterator[list[asyncpg.Pool]]:
    """Two pools on the policy's migrated database, one per copy of the service (as two replicas hold theirs)."""
    made = [await create_pool(infra.database_url, max_size=2) for _ in range(2)]
    await apply_migrations(made[0], "policy", REPO_ROOT / "services" / "policy" / "migrations")
    try:
        yield made
    finally:
        for pool in made:
            await pool.close()


@pytest.fixture
def policy_on() -> Callable[[asyncpg.Pool, str, dict[str, Any], Path], PolicyService]:
    """Builds the policy's use cases on a pool of the real database, for a tenant's settings."""
    return _policy_on


@pytest.fixture
async def policy(kit: KitSettings) -> AsyncIterator[ServiceProcess]:
    """The policy service, started on the test's topics and database."""
    process = build(kit=kit)
    await process.start()
    try:
        yield process
    finally:
        await process.stop()


@pytest.fixture
async def collector(kit: KitSettings) -> AsyncIterator[Collector]:
    c = Collector(kit, ["actions.decided", "actions.authorized", "deadletter"])
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


@pytest.fixture
async def producer(kit: KitSettings) -> AsyncIterator[Producer]:
    p = Producer(kit)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


@pytest.fixture
def one() -> Callable[[list[Any]], Any]:
    """The single element of a list (for `wait_for` probes)."""

    def pick(items: list[Any]) -> Any:
        return items[0] if len(items) == 1 else None

    return pick


@pytest.fixture
def make_proposal() -> Callable[..., ActionProposed]:
    """The `proposal` builder."""
    return proposal


@pytest.fixture
def make_grant() -> Callable[..., ApprovalGranted]:
    """The `grant` builder."""
    return grant


@pytest.fixture(autouse=True)
def _delete_test_topics(infra: Any, prefix: str) -> Iterator[None]:
    """Drop this test's topics and rights afterwards: thousands of leftover partitions slow the shared broker down."""
    yield
    asyncio.run(delete_prefix_topics(infra.kafka_bootstrap, prefix))
