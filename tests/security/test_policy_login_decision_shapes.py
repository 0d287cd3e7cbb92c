"""The policy service's database login writes a recorded decision's proposal in the wrong shape.

The attacker holds only `tidegate_policy`'s login. A 900 USD refund waits for approval; the login sets its recorded
decision's `proposal` to `{"tool": 5}`. Seen live before: the policy stayed up and decided the next proposal, but bob's
grant and the escalation's redelivery were each dead-lettered `handler_error` "ValidationError: 7 validation errors for
ActionProposedData…" with a traceback in the log, naming no row and counting nothing. Now that row is refused alone:
one WARNING names it, `tidegate_rows_refused_total{service="policy",table="decisions",reason="invalid"}` counts it,
and each event that needed it is dead-lettered saying which row and what to do; a good proposal beside them is decided.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from approval_harness import StartApproval, bearer, read_topic
from test_approval_login_grants import ALICE, ARGS, escalated, policy  # noqa: F401

from schemas import ActionProposed, ActionProposedData, ProposalCost
from servicekit import KitSettings
from servicekit.dbroles import service_database_url
from servicekit.metrics import ROWS_REFUSED

pytestmark = pytest.mark.integration

WaitFor = Callable[..., Awaitable[Any]]


@pytest.fixture
async def policy_login(kit: KitSettings) -> AsyncIterator[asyncpg.Connection]:
    """The policy service's own database login: all its thief holds."""
    conn = await asyncpg.connect(service_database_url(kit, "policy"))
    yield conn
    await conn.close()


def proposed(action_id: str, task_id: str, step: int, args: dict[str, Any]) -> ActionProposed:
    data = ActionProposedData(
        action_id=action_id, task_id=task_id, tenant_id="acme", step=step, tool="issue_refund", args=args, rationale="duplicate charge",
        proposer="tests/security", cost=ProposalCost(usd=0.0), mode="autonomous", requested_by=ALICE,
    )  # fmt: skip
    return ActionProposed.build(data, source="tests/security")


async def test_a_decision_row_of_the_wrong_shape_is_refused_alone_and_named(
    start_approval: StartApproval,
    policy: Any,  # noqa: F811
    http: httpx.AsyncClient,
    policy_login: asyncpg.Connection,
    wait_for: WaitFor,
) -> None:
    h = await start_approval()
    h.tenant = "acme"
    bob = await h.token("bob@acme.example", ["finance"], tenant="acme")
    record = await escalated(h, wait_for)
    counted = ROWS_REFUSED.labels("policy", "decisions", "invalid")._value.get()
    await policy_login.execute("UPDATE policy.decisions SET proposal = '{\"tool\": 5}'::jsonb WHERE key = $1", record.action_id)
    try:
        approve = await http.post(
            f"{h.url}/api/v1/approvals/{record.approval_id}/approve", json={"action_digest": record.action_digest}, headers=bearer(bob)
        )
        assert approve.status_code == 200, approve.text
        await h.publish("actions.proposed", proposed(record.action_id, record.task_id, 1, ARGS))  # the escalation's redelivery
        await h.publish("actions.proposed", proposed(f"{record.action_id}-next", record.task_id, 2, ARGS | {"amount_usd": 5.0}))

        async def next_decided() -> Any:
            decided = await read_topic(h.kit.kafka_bootstrap, h.bus.topic("actions.decided"), "actions.decided")
            return [e.data.outcome for e in decided if e.data.action_id == f"{record.action_id}-next"]

        async def dead_letters() -> Any:
            dead = await read_topic(h.kit.kafka_bootstrap, h.bus.topic("deadletter"), "deadletter")
            mine = [e.data for e in dead if e.data.service == "policy" and record.action_id in str(e.data.model_dump())]
            return mine if len(mine) >= 2 else None

        assert await wait_for(next_decided, what="the good proposal beside the row decided") == ["allow"]
        letters = await wait_for(dead_letters, what="the grant's and the redelivery's dead letters")
        for letter in letters:
            assert "ValidationError" not in letter.error, f"a row of the wrong shape failed an event as a bug: {letter.error}"
            assert f"decision {record.action_id} (tenant acme" in letter.error
            assert "is refused" in letter.error
        assert ROWS_REFUSED.labels("policy", "decisions", "invalid")._value.get() > counted, "the refused row was not counted"
        authorized = await read_topic(h.kit.kafka_bootstrap, h.bus.topic("actions.authorized"), "actions.authorized")
        assert [e for e in authorized if e.data.action_id == record.action_id] == []  # refused, never decided again
    finally:
        await policy_login.execute("DELETE FROM policy.decisions WHERE key = $1", record.action_id)
