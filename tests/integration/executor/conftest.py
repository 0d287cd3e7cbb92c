"""Fixtures of the executor's integration tests: signed authorizations, seeded systems, a results listener."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

import schemas as s
from servicekit import Bus, KitSettings, ServiceProcess, SigningKey, action_digest, authorization_message, create_pool, make_broker
from systems.seed import seed_demo

Authorize = Callable[..., s.ActionAuthorized]


def sign_authorization(key: SigningKey, data: s.ActionAuthorizedData) -> s.ActionAuthorizedData:
    """Sign `data` exactly as the policy service does: over `authorization_message`, signature excluded."""
    signature = key.sign(authorization_message(data))
    return data.model_copy(update={"authorization": data.authorization.model_copy(update={"signature": signature})})


@pytest.fixture
def policy_key(kit: KitSettings) -> SigningKey:
    return SigningKey.load_or_create(kit.keys_dir, "policy")


@pytest.fixture
def authorize(policy_key: SigningKey) -> Authorize:
    """Build a signed `action.authorized` event, as the policy service would."""

    def make(
        tenant: str,
        tool: str,
        args: dict[str, Any],
        *,
        action_id: str | None = None,
        task_id: str | None = None,
        ttl_s: float = 600,
        key: SigningKey | None = None,
        issued_at: datetime | None = None,
    ) -> s.ActionAuthorized:
        issued = issued_at or datetime.now(UTC)
        data = s.ActionAuthorizedData(
            action_id=action_id or f"a-{uuid.uuid4().hex[:12]}",
            task_id=task_id or f"t-{uuid.uuid4().hex[:12]}",
            tenant_id=tenant,
            step=1,
            tool=tool,
            args=args,
            authorization=s.Authorization(
                via="policy",
                policy_version="sha256:test",
                action_digest=action_digest(tenant, tool, args),
                issued_at=issued,
                expires_at=issued + timedelta(seconds=ttl_s),
                key_id=(key or policy_key).key_id,
                signature="",
            ),
        )
        return s.ActionAuthorized.build(sign_authorization(key or policy_key, data), source="tidegate/policy")

    return make


@pytest.fixture
async def pool(infra: Any) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(infra.database_url, max_size=4)
    yield p
    await p.close()


@pytest.fixture
async def tenant(pool: asyncpg.Pool) -> str:
    """A tenant of this test alone, with the demo data seeded."""
    name = f"ten-{uuid.uuid4().hex[:8]}"
    await seed_demo(pool, [name])
    return name


@dataclass
class Listener:
    """Every result and dead letter published under this test's prefix."""

    results: list[Any] = field(default_factory=list)
    dead: list[s.EventRejected] = field(default_factory=list)

    def for_action(self, action_id: str) -> list[Any]:
        return [e for e in self.results if e.data.action_id == action_id]

    def dead_codes(self, action_id: str) -> list[str]:
        return [d.data.code for d in self.dead if action_id in d.data.raw_value]


@pytest.fixture
async def listener(kit: KitSettings) -> AsyncIterator[Listener]:
    found = Listener()
    bus = Bus(make_broker(kit.kafka_bootstrap, "test-listener"), "test-listener", kit.kafka_bootstrap, kit.topic_prefix)

    async def on_result(event: Any) -> None:
        found.results.append(event)

    async def on_dead(event: s.EventRejected) -> None:
        found.dead.append(event)

    bus.consume("actions.results", on_result, group_id=f"{kit.topic_prefix}test-listener")
    bus.consume("deadletter", on_dead, group_id=f"{kit.topic_prefix}test-listener")
    await bus.start()
    yield found
    await bus.stop()


@pytest.fixture
async def publisher(kit: KitSettings) -> AsyncIterator[Bus]:
    """A bus to publish test events with (as the policy service, or as an attacker with broker access)."""
    bus = Bus(make_broker(kit.kafka_bootstrap, "test-producer"), "test-producer", kit.kafka_bootstrap, kit.topic_prefix)
    await bus.start()
    yield bus
    await bus.stop()


@pytest.fixture
async def executor(kit: KitSettings) -> AsyncIterator[ServiceProcess]:
    """The executor service, in process, on this test's prefix."""
    from services.executor.app import build

    svc = build(kit=kit)
    await svc.start()
    yield svc
    await svc.stop()


@pytest.fixture
def resign(policy_key: SigningKey) -> Callable[..., s.ActionAuthorized]:
    """Change fields of an authorization and sign it again with the real policy key (as a buggy policy service could)."""

    def make(event: s.ActionAuthorized, **auth_updates: Any) -> s.ActionAuthorized:
        data = event.data.model_copy(update={"authorization": event.data.authorization.model_copy(update=auth_updates)})
        return s.ActionAuthorized.build(sign_authorization(policy_key, data), source="tidegate/policy")

    return make
