"""What the connector tests share: the canary credential, a call context, and an executor wired as `app.py` wires it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import connectors as c
import schemas as s
from servicekit import REPO_ROOT, KitSettings, SigningKey, ToolCatalog, action_digest, authorization_message
from servicekit.toolcontract import ToolContext
from servicekit.undo import undo_proposal
from services.executor.executor import Executor

__all__ = ["CANARY", "CATALOG", "Executed", "call_context", "cli"]

CANARY = "sk_test_CANARYb3f9e1c27d"  # a credential value searched for wherever it must never appear

CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")


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


@dataclass
class Executed:
    """An executor wired as in `app.py` (connector invoker, grants, vault) over in-memory claims; results collected."""

    executor: Executor
    grants: c.InMemoryGrantStore
    vault: c.Vault
    key: SigningKey
    operator: c.GrantWriter  # the grants as `tidegate connectors` writes them: signed by an allow-listed operator
    results: list[s.Envelope] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)

    async def connect(self, tenant: str, connector: str, *, tools: list[str], base_url: str, secret: str = CANARY, **more: str) -> None:
        """What `tidegate connectors enable … && set-credential …` does."""
        await c.enable(self.operator, CATALOG, tenant, connector, tools=tools, connection={"base_url": base_url, **more})
        await c.set_credential(self.operator, self.vault, tenant, connector, secret)

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

    async def undo(self, done: s.Envelope) -> tuple[s.ActionProposedData, s.Envelope]:
        """Propose the undo of a succeeded call as `tidegate undo` does, authorize it as policy would, and run it."""
        proposal = undo_proposal(done.data, requested_by="agent@acme.example", proposer="tidegate/undo")
        assert proposal.undoes == done.data.action_id
        result = await self.run(self.authorize(proposal.tenant_id, proposal.tool, proposal.args, proposal.action_id))
        assert isinstance(result, s.ActionSucceeded), result.data.error
        return proposal, result


def cli(kit: KitSettings, *args: str, stdin: str = "") -> str:
    """Run `tidegate …` as a user does; its whole output."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TIDEGATE_DATABASE_URL": kit.database_url, "TIDEGATE_KEYS_DIR": str(kit.keys_dir)}
    done = subprocess.run(
        [sys.executable, "-m", "tidegate.cli", *args], input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr
