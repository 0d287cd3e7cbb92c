"""Fixtures of the policy service's integration tests: the running service, a topic collector, proposal and grant builders."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas import (
    ActionDecided,
    ActionProposed,
    ActionProposedData,
    ApprovalData,
    ApprovalGranted,
    Envelope,
    ProposalCost,
    decode,
    encode,
    headers_for,
)
from servicekit import KitSettings, ServiceProcess, SigningKey, approval_message
from services.policy.app import build

log = logging.getLogger(__name__)


class Collector:
    """Reads topics from the beginning in the background and keeps every decoded event."""

    def __init__(self, kit: KitSettings, names: list[str]) -> None:
        self.kit = kit
        self.names = names
        self.events: dict[str, list[Any]] = {n: [] for n in names}
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            *[self.kit.topic_prefix + n for n in self.names],
            bootstrap_servers=self.kit.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=f"collector-{uuid.uuid4().hex[:8]}",
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        async for record in self._consumer:
            name = record.topic.removeprefix(self.kit.topic_prefix)
            self.events[name].append(decode(name, record.value))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    def decided(self, action_id: str, via: str = "policy") -> list[ActionDecided]:
        return [e for e in self.events["actions.decided"] if e.data.action_id == action_id and e.data.via == via]

    def authorized(self, action_id: str) -> list[Any]:
        return [e for e in self.events["actions.authorized"] if e.data.action_id == action_id]

    def rejected(self, needle: str) -> list[Any]:
        return [e for e in self.events["deadletter"] if needle in e.data.raw_value]


class Producer:
    """Publishes events (and raw bytes) on the test's topics, as an outside agent would."""

    def __init__(self, kit: KitSettings) -> None:
        self.kit = kit
        self._producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, acks="all")

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, topic: str, event: Envelope) -> None:
        headers = [(k, v.encode()) for k, v in headers_for(event).items()]
        await self._producer.send_and_wait(self.kit.topic_prefix + topic, encode(event), key=event.key, headers=headers)

    async def send_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        await self._producer.send_and_wait(self.kit.topic_prefix + topic, value, key=key)


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
    decided: ActionDecided, key: SigningKey | None, *, edited_args: dict[str, Any] | None = None, args: dict[str, Any] | None = None
) -> ApprovalGranted:
    """An `approval.granted` for an escalated decision, signed with `key` as the approval service would (unsigned when None)."""
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
        approver="bob@acme.example",
        approvers=["bob@acme.example"],
        edited_args=edited_args,
        expires_at=now + timedelta(hours=1),
        decided_at=now,
        requested_by=d.requested_by,
        key_id=key.key_id if key else None,
    )
    if key is not None:
        data = data.model_copy(update={"signature": key.sign(approval_message("tidegate.approval.granted", data))})
    return ApprovalGranted.build(data, source="tidegate/approval")


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
    """Delete this test's topics afterwards: thousands of leftover partitions slow the shared broker down."""
    yield
    asyncio.run(_delete_topics(infra.kafka_bootstrap, prefix))


async def _delete_topics(bootstrap: str, prefix: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        ours = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if ours:
            await admin.delete_topics(ours)
    except Exception:  # cleanup must never fail a test
        log.warning("could not delete the topics of %s", prefix)
    finally:
        await admin.close()
