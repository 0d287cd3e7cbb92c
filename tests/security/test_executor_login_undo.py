"""The executor's own database login, in an attacker's hands, cannot make an undo out of a state or plan it wrote.

An undo plan is a call: it is proposed as the undo of a call, and the state kept before a call is what that plan
restores. Both sit in `executor.undo_plans`, which the executor's login writes; each part now carries the executor's
signature (`services/executor/undo.py`), so a part the login wrote or changed is refused, logged and counted, and
the undo is `unavailable` (refused `undo_irreversible`), never computed from it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from policy_authorizations import policy_authorized
from prometheus_client import REGISTRY

import schemas as s
from servicekit import EventOutlet, Keyring, KitSettings, SigningKey, ToolCatalog
from servicekit.authority import deployment_authority
from servicekit.db import create_pool
from servicekit.dbroles import service_database_url
from servicekit.toolcontract import ToolContext
from servicekit.undo import ActionState, undo_refusal
from services.executor.claims import PgClaimStore
from services.executor.credentials import CredentialStore
from services.executor.executor import Executor
from services.executor.tools import ToolAnswer, ToolInvokers
from services.executor.undo import PgUndoStore, UndoKey, undo_seals

CATALOG = ToolCatalog.load(Path(__file__).parents[2] / "catalog" / "tools")


def _refused(reason: str) -> float:
    labels = {"service": "executor", "table": "undo_plans", "reason": reason}
    return REGISTRY.get_sample_value("tidegate_rows_refused_total", labels) or 0.0


class Helpdesk:
    """The demo helpdesk as the executor's tools see it: a ticket's tags, and the calls made."""

    def __init__(self, tags: list[str]) -> None:
        self.tags = list(tags)
        self.calls: list[str] = []

    async def invoke(self, spec: s.ToolSpec, ctx: ToolContext, args: dict[str, Any]) -> ToolAnswer:
        self.calls.append(spec.name)
        if spec.name == "get_ticket":
            return ToolAnswer({"ticket_id": args["ticket_id"], "tags": sorted(self.tags), "status": "open"})
        self.tags = sorted(set(self.tags) | set(args["tags"]))
        return ToolAnswer({"ticket_id": args["ticket_id"], "tags": self.tags})


@pytest.fixture
async def executor_login(kit: KitSettings) -> AsyncIterator[asyncpg.Pool]:
    """A pool logged in with the executor's own database login: what the service uses, and what the attacker holds."""
    pool = await create_pool(service_database_url(kit, "executor"), max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
def undo(kit: KitSettings, executor_login: asyncpg.Pool) -> PgUndoStore:
    return PgUndoStore(executor_login, undo_seals(SigningKey.load_or_create(kit.keys_dir, "executor"), deployment_authority(kit)))


def _call() -> UndoKey:
    return UndoKey(f"a-{uuid.uuid4().hex[:12]}", "acme", "t-1", "tag_ticket")


async def test_a_state_or_plan_the_login_changed_or_moved_is_refused_logged_and_counted(
    undo: PgUndoStore, executor_login: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    call, other = _call(), _call()
    assert await undo.keep_prior_state(call, {"ticket_id": "T-1", "tags": ["vip"]}) == {"ticket_id": "T-1", "tags": ["vip"]}
    plan = s.UndoPlan(status="ready", tool="untag_ticket", args={"ticket_id": "T-1", "tags": ["refund"]})
    await undo.keep_plan(call, plan)
    assert (await undo.prior_state(call.action_id), await undo.plan(call.action_id)) == ({"ticket_id": "T-1", "tags": ["vip"]}, plan)

    before = _refused("invalid")
    forged_plan = {"status": "ready", "tool": "untag_ticket", "args": {"ticket_id": "T-1", "tags": ["vip", "refund"]}}
    await executor_login.execute(  # the attacker: the undo removes a tag the call did not add, and restores another state
        "UPDATE executor.undo_plans SET before = $2::jsonb, plan = $3::jsonb WHERE action_id = $1",
        call.action_id,
        json.dumps({"ticket_id": "T-1", "tags": []}),
        json.dumps(forged_plan),
    )
    await executor_login.execute(  # and the genuine row, proofs and all, copied under another action
        "INSERT INTO executor.undo_plans (action_id, tenant_id, task_id, tool, before, before_key_id, before_signature)"
        " SELECT $2, tenant_id, task_id, tool, before, before_key_id, before_signature FROM executor.undo_plans WHERE action_id = $1",
        call.action_id,
        other.action_id,
    )
    with caplog.at_level(logging.WARNING, logger="servicekit.row_proofs"):
        assert await undo.prior_state(call.action_id) is None
        assert await undo.plan(call.action_id) is None
        assert await undo.prior_state(other.action_id) is None
    assert _refused("invalid") == before + 3
    assert f"executor: the undo plan of action {call.action_id} (tag_ticket, tenant acme) refused" in caplog.text
    assert "rotate that login's password" in caplog.text


async def test_a_state_the_login_wrote_before_the_call_never_becomes_its_undo(
    kit: KitSettings, undo: PgUndoStore, executor_login: asyncpg.Pool
) -> None:
    """The login writes the state "before" a call it expects (action ids are no secret): the executor neither uses it nor runs its undo."""
    policy = SigningKey.load_or_create(kit.keys_dir, "policy")
    action_id = f"a-{uuid.uuid4().hex[:12]}"
    await executor_login.execute(  # unsigned: the tags "before" would make the undo remove "vip", which was there all along
        "INSERT INTO executor.undo_plans (action_id, tenant_id, task_id, tool, before) VALUES ($1, 'acme', 't-1', 'tag_ticket', $2::jsonb)",
        action_id,
        json.dumps({"ticket_id": "T-1", "tags": []}),
    )
    helpdesk, published = Helpdesk(["vip"]), list[s.Envelope]()

    async def publish(topic: str, event: s.Envelope) -> None:
        published.append(event)

    executor = Executor(
        catalog=CATALOG,
        keyring_loader=lambda: Keyring.load(kit.keys_dir, "policy"),
        claims=PgClaimStore(executor_login, owner="test", prefix=kit.topic_prefix),
        invokers=ToolInvokers(python=helpdesk, http=helpdesk, topic=helpdesk),
        credentials=CredentialStore({}, {}),
        out=EventOutlet(publish),
        killed=lambda tenant, tool: None,
        undo=undo,
    )
    before = _refused("unsigned")
    await executor.handle(policy_authorized(policy, "tag_ticket", {"ticket_id": "T-1", "tags": ["refund", "vip"]}, action_id=action_id))
    [result] = published
    assert result.type == "tidegate.action.succeeded"  # the call itself ran, as policy allowed
    assert result.data.undo is not None
    assert result.data.undo.status == "unavailable"  # not `ready` to remove "vip" as the forged state says
    refusal = undo_refusal(ActionState.of_result(result.data))
    assert refusal is not None
    assert refusal.code == s.ReasonCode.UNDO_IRREVERSIBLE
    assert _refused("unsigned") >= before + 1
    assert await undo.prior_state(action_id) is None  # and it is never taken for the state before
