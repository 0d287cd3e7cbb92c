"""Fixtures for the approval service against the real Kafka and PostgreSQL: start it, feed it, read what it publishes."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from signers import SigningBus

from schemas import ActionDecided, ActionDecidedData, Envelope, Reason, decode
from servicekit import (
    ADMIN,
    Bus,
    KitSettings,
    ServiceProcess,
    action_digest,
    deployment_authority,
    kafka_options,
    operator_key,
    service_key,
)
from services.approval import Seals, approval_seals, auth
from services.approval._endpoint_rows import webhook_vault
from services.approval.app import build
from services.approval.repository import PgApprovalRepository
from services.approval.settings import ApprovalSettings

REFUND_ARGS = {"payee_id": "cus_1", "amount_usd": 900.0, "order_id": "O-1"}


async def read_topic(bootstrap: str, topic: str, catalog_name: str) -> list[Any]:
    """Every event on `topic` up to its current end (no consumer group)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, **kafka_options(KitSettings(), ADMIN), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        events: list[Any] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                events.extend(decode(catalog_name, r.value) for r in records)
        return events
    finally:
        await consumer.stop()


def bearer(token: str) -> dict[str, str]:
    """The header an approver's (or admin's) token is sent in."""
    return {"Authorization": f"Bearer {token}"}


def service_seals(kit: KitSettings) -> Seals:
    """The seals the approval service itself uses (its signing key, its endpoints' secrets key pair), for a repository of a test's own."""
    key = service_key(kit, "approval")
    vault = webhook_vault(kit.keys_dir)
    vault.ensure()
    return approval_seals(deployment_authority(kit), service_key=key, vault=vault)


@dataclass
class ApprovalHarness:
    """A running approval service, a producer, and helpers to act as policy and as approvers."""

    proc: ServiceProcess
    kit: KitSettings
    bus: Bus
    tenant: str = field(default_factory=lambda: f"acme-{uuid.uuid4().hex[:8]}")

    @property
    def url(self) -> str:
        return self.proc.http_url

    @property
    def repo(self) -> PgApprovalRepository:
        assert self.proc.pool is not None  # as the operator's CLI uses it: the tokens it makes are signed with the operator's key
        seals = approval_seals(deployment_authority(self.kit), operator_key=operator_key(self.kit), vault=webhook_vault(self.kit.keys_dir))
        return PgApprovalRepository(self.proc.pool, seals=seals)

    async def token(
        self, approver: str, groups: list[str], tenant: str | None = None, *, expires_at: datetime | None = None, operator: bool = False
    ) -> str:
        token = auth.new_token()
        tenant_id = "*" if operator else tenant or self.tenant
        await self.repo.add_token(auth.hash_token(token), approver, tenant_id, groups, expires_at=expires_at, operator=operator)
        return token

    def decided(
        self, *, tool: str = "issue_refund", args: dict[str, Any] | None = None, risk: str = "financial", **over: Any
    ) -> ActionDecidedData:
        args = REFUND_ARGS if args is None else args
        fields: dict[str, Any] = {
            "action_id": f"a-{uuid.uuid4().hex[:10]}",
            "task_id": f"t-{uuid.uuid4().hex[:10]}",
            "tenant_id": self.tenant,
            "tool": tool,
            "args": args,
            "action_digest": action_digest(self.tenant, tool, args),
            "outcome": "escalate",
            "reasons": [Reason(code="needs_human_approval", policy_id="refund-threshold", message="900.00 USD is over the threshold")],
            "policy_version": "sha256:test",
            "risk": risk,
            "latency_ms": 0.3,
            "facts": {"payee_is_new": False, "amount_usd": 900.0},
            "requested_by": "alice@acme.example",
            "estimated_cost_usd": 0.01,
        }
        return ActionDecidedData(**(fields | over))

    async def publish(self, topic: str, event: Envelope) -> None:
        await self.bus.publish(topic, event)

    async def escalate(self, data: ActionDecidedData) -> None:
        await self.publish("actions.decided", ActionDecided.build(data, source="tidegate/policy"))

    async def approvals(self) -> list[Any]:
        return await read_topic(self.kit.kafka_bootstrap, self.bus.topic("approvals"), "approvals")

    async def request_for(self, action_id: str, wait_for: Callable[..., Awaitable[Any]]) -> Any:
        return await wait_for(lambda: self.repo.get_by_action(action_id, tenant_id=self.tenant), what=f"approval request for {action_id}")

    async def all_published(self) -> bool:
        assert self.proc.pool is not None
        left = await self.proc.pool.fetchval("SELECT count(*) FROM approval.outbox")  # an item on the bus is deleted, not kept
        return left == 0


@dataclass
class Receiver:
    """A chat tool's webhook endpoint on loopback: answers 503 to the first `failures` messages, then 200."""

    failures: int
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    server: asyncio.Server | None = None

    @classmethod
    @asynccontextmanager
    async def listening(cls, failures: int) -> AsyncIterator[Receiver]:
        """A receiver listening on a free loopback port until the block ends."""
        receiver = cls(failures)
        receiver.server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
        try:
            yield receiver
        finally:
            receiver.server.close()
            await receiver.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}/hook"

    def messages(self) -> list[dict[str, Any]]:
        """The bodies received, parsed."""
        return [json.loads(body) for _, body in self.got]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.got.append((headers, body))
        status = b"503 Service Unavailable" if len(self.got) <= self.failures else b"200 OK"
        writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()


StartApproval = Callable[..., Awaitable[ApprovalHarness]]


@pytest.fixture
async def start_approval(kit: KitSettings) -> AsyncIterator[StartApproval]:
    """Start the approval service (HTTP on a free port) with setting overrides; stopped after the test."""
    started: list[tuple[ServiceProcess, Bus]] = []

    async def start(**overrides: Any) -> ApprovalHarness:
        defaults = {"http_port": 0, "sweep_interval_s": 0.2, "webhook_allowed_hosts": ["127.0.0.1"]}  # the tests' receivers are local
        settings = ApprovalSettings(**(defaults | overrides))
        proc = build(kit, settings)
        await proc.start()
        bus = SigningBus(kit, "approval-test")  # publishes as the policy service, executor... would: signed
        await bus.producer.start()
        started.append((proc, bus))
        return ApprovalHarness(proc=proc, kit=kit, bus=bus)

    yield start
    for proc, bus in reversed(started):
        await bus.producer.stop()
        await proc.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the service's API."""
    async with httpx.AsyncClient(timeout=10) as client:
        yield client
