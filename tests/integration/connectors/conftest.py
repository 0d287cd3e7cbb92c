"""Fixtures of the connector tests: the vendors' and our stand-ins on free loopback ports, and a call context."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import connectors as c
import schemas as s
from servicekit import REPO_ROOT, Keyring, SigningKey, ToolCatalog, action_digest, authorization_message
from services.executor.claims import InMemoryClaimStore
from services.executor.credentials import CredentialStore
from services.executor.executor import Executor
from services.executor.tools import ConnectorTools, PythonTools, ToolInvokers
from standins import RecordingProxy, StripeMock, ensure_stripe_mock, serve_app
from systems import ToolContext

CANARY = "sk_test_CANARYb3f9e1c27d"  # a credential value searched for wherever it must never appear


@pytest.fixture(scope="session")
def stripe_mock() -> Iterator[StripeMock]:
    """Stripe's own stripe-mock, built with `go install` into the git-ignored .tidegate/bin on first use (a minute or two)."""
    mock = StripeMock(ensure_stripe_mock(REPO_ROOT / ".tidegate" / "bin")).start()
    yield mock
    mock.stop()


@pytest.fixture
async def stripe_proxy(stripe_mock: StripeMock) -> AsyncIterator[RecordingProxy]:
    """stripe-mock behind a proxy that records every request the SDK sent (headers included)."""
    proxy = RecordingProxy(stripe_mock.url)
    async with serve_app(proxy.app) as url:
        proxy.url = url
        yield proxy


def call_context(*, credential: str | None = CANARY, base_url: str, action_id: str = "act-1", **connection: str) -> ToolContext:
    """The context the executor builds for one connector call (no database pool: connectors call APIs)."""
    return ToolContext(
        pool=None,  # type: ignore[arg-type]
        tenant_id="acme",
        action_id=action_id,
        idempotency_key=action_id,
        credential=credential,
        connection={"base_url": base_url, **connection},
    )


def pytest_collection_modifyitems(items: list[Any]) -> None:
    """stripe-mock may need building first: the Stripe tests get a longer timeout than the suite's default."""
    for item in items:
        if "stripe" in item.nodeid:
            item.add_marker(pytest.mark.timeout(900))


@dataclass
class Executed:
    """An executor wired as in `app.py` (connector invoker, grants, vault) over in-memory claims; results collected."""

    executor: Executor
    grants: c.InMemoryGrantStore
    vault: c.Vault
    key: SigningKey
    results: list[s.Envelope] = field(default_factory=list)

    async def connect(self, tenant: str, connector: str, *, tools: list[str], base_url: str, secret: str = CANARY, **more: str) -> None:
        """What `tidegate connectors enable … && set-credential …` does."""
        await c.enable(self.grants, CATALOG, tenant, connector, tools=tools, connection={"base_url": base_url, **more})
        await c.set_credential(self.grants, self.vault, tenant, connector, secret)

    def authorize(self, tenant: str, tool: str, args: dict[str, Any], action_id: str | None = None) -> s.ActionAuthorized:
        """A signed `action.authorized`, as the policy service makes it."""
        now = datetime.now(UTC)
        data = s.ActionAuthorizedData(
            action_id=action_id or f"act-{uuid.uuid4().hex[:12]}",
            task_id="t-1",
            tenant_id=tenant,
            tool=tool,
            args=args,
            authorization=s.Authorization(
                via="policy",
                policy_version="v1",
                action_digest=action_digest(tenant, tool, args),
                issued_at=now,
                expires_at=now + timedelta(minutes=5),
                key_id=self.key.key_id,
                signature="",
            ),
        )
        auth = data.authorization.model_copy(update={"signature": self.key.sign(authorization_message(data))})
        return s.ActionAuthorized.build(data.model_copy(update={"authorization": auth}), source="tidegate/policy")

    async def run(self, event: s.ActionAuthorized) -> s.Envelope:
        """Handle one authorization; the result it published."""
        before = len(self.results)
        await self.executor.handle(event)
        assert len(self.results) == before + 1
        return self.results[-1]


CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")


@pytest.fixture
def executed(tmp_path: Path) -> Executed:
    """The executor with the shipped catalog and no tenant connected yet."""
    key = SigningKey.load_or_create(tmp_path / "keys", "policy")
    grants, vault = c.InMemoryGrantStore(), c.Vault(tmp_path / "keys")
    vault.ensure()
    results: list[s.Envelope] = []

    async def publish(topic: str, event: s.Envelope) -> None:
        assert topic == "actions.results"
        results.append(event)

    async def no_wait(_: float) -> None:
        return None

    python = PythonTools()
    executor = Executor(
        catalog=CATALOG,
        keyring_loader=lambda: Keyring.load(tmp_path / "keys", "policy"),
        claims=InMemoryClaimStore(),
        invokers=ToolInvokers(python=python, http=python, topic=python, connector=ConnectorTools(c.ConnectorAccess(grants, vault), python)),
        credentials=CredentialStore({}, {}),
        publish=publish,
        killed=lambda tenant, tool: None,
        sleep=no_wait,
    )
    return Executed(executor, grants, vault, key, results)
