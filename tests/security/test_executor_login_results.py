"""The executor's own database login cannot have the executor sign a result it wrote (review 2026-12-05, executor, "Open").

A finished claim (`executor.actions`) keeps the result event first published, and a redelivered authorization is
answered with it. The login can write that row: before, a kept event it left unsigned (or none: one was then built
from the row's columns) was signed by the executor on its way out, and the planner, the policy and the approval
service believe the executor's signature. Now a kept event goes out again only when it verifies as the executor's
own signed result for exactly that action (`services/executor/kept_results.py`); anything else is dead-lettered
with why, logged and counted, nothing is signed, and nothing runs again. The real executor, Kafka and PostgreSQL;
the attacker holds the executor's login and has the same signed authorizations delivered again, within their expiry.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from bus_helpers import Collector, Producer
from prometheus_client import REGISTRY

import schemas as s
from servicekit import KitSettings, SigningKey, action_digest, authorization_message, create_pool
from servicekit.dbroles import service_database_url
from services.executor import build as build_executor
from systems.seed import seed_demo

pytestmark = pytest.mark.integration

REFUND = {"payee_id": "cus_1001", "amount_usd": 5.0, "order_id": "O-5001"}  # five of them stay within the order paid
FORGED = {"refund_id": "re_FORGED", "amount_usd": 10_000.0}  # what the attacker wants the executor to have signed
FORGERIES = ("unsigned", "altered", "another action's", "none")


@dataclass
class Stage:
    kit: KitSettings
    tenant: str
    login: asyncpg.Pool  # the executor's own database login: the attacker's
    producer: Producer
    collector: Collector
    policy: SigningKey

    def authorize(self, task_id: str) -> s.ActionAuthorized:
        """A refund authorized as the policy service signs it (one task: the executor handles its records in order)."""
        now = datetime.now(UTC)
        data = s.ActionAuthorizedData(
            action_id=f"a-{uuid.uuid4().hex[:12]}",
            task_id=task_id,
            tenant_id=self.tenant,
            tool="issue_refund",
            args=REFUND,
            authorization=s.Authorization(
                via="policy",
                policy_version="sha256:test",
                action_digest=action_digest(self.tenant, "issue_refund", REFUND),
                issued_at=now,
                expires_at=now + timedelta(minutes=10),
                key_id=self.policy.key_id,
                signature="",
            ),
        )
        auth = data.authorization.model_copy(update={"signature": self.policy.sign(authorization_message(data))})
        return s.ActionAuthorized.build(data.model_copy(update={"authorization": auth}), source="tidegate/policy")

    def results(self, action_id: str) -> list[Any]:
        return [e for e in self.collector.events["actions.results"] if e.data.action_id == action_id]


@pytest.fixture
async def stage(kit: KitSettings) -> AsyncIterator[Stage]:
    tenant = f"h9-{uuid.uuid4().hex[:8]}"
    operator = await create_pool(kit.database_url, max_size=2)
    await seed_demo(operator, [tenant])
    await operator.close()
    executor = build_executor(kit, environ={})
    await executor.start()
    producer, collector = Producer(kit), Collector(kit, ["actions.results", "deadletter"])
    await producer.start()
    await collector.start()
    login = await create_pool(service_database_url(kit, "executor"), max_size=2)
    try:
        yield Stage(kit, tenant, login, producer, collector, SigningKey.load_or_create(kit.keys_dir, "policy"))
    finally:
        await login.close()
        await collector.stop()
        await producer.stop()
        await executor.stop()


def refused(reason: str) -> float:
    labels = {"service": "executor", "table": "actions", "reason": reason}
    return REGISTRY.get_sample_value("tidegate_rows_refused_total", labels) or 0.0


async def forge(stage: Stage, forgery: str, action_id: str, genuine: Any, other: Any) -> None:
    """What the executor's login writes into the finished claim of `action_id` (`genuine`: its result as published)."""
    richer = genuine.data.model_copy(update={"result": FORGED})
    kept = {
        "unsigned": s.encode(genuine.model_copy(update={"data": richer, "signature": None, "keyid": None})),
        "altered": s.encode(genuine.model_copy(update={"data": richer})),  # the genuine signature kept over another result
        "another action's": None,  # copied below, byte for byte: the executor's genuine, signed result of another action
        "none": None,  # the columns forged instead: the executor used to build the event from them, and sign it
    }[forgery]
    if forgery == "another action's":
        done = await stage.login.execute(
            "UPDATE executor.actions SET result_event = (SELECT result_event FROM executor.actions WHERE action_id = $2)"
            " WHERE action_id = $1",
            action_id,
            other.data.action_id,
        )
    else:
        done = await stage.login.execute(
            "UPDATE executor.actions SET result_event = $2, result = $3::jsonb WHERE action_id = $1",
            action_id,
            None if kept is None else kept.decode(),
            json.dumps(FORGED),
        )
    assert done == "UPDATE 1"


async def test_a_result_the_login_wrote_into_a_finished_claim_is_never_signed_nor_published(
    stage: Stage, wait_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = f"t-{uuid.uuid4().hex[:12]}"
    actions = {name: stage.authorize(task_id) for name in (*FORGERIES, "untouched")}
    for event in actions.values():
        await stage.producer.send("actions.authorized", event)
    genuine = {}
    for name, event in actions.items():
        [genuine[name]] = await wait_for(lambda e=event: stage.results(e.data.action_id), what=f"the {name} refund's result")
        assert genuine[name].type == "tidegate.action.succeeded", genuine[name].data.error
        assert genuine[name].keyid is not None  # signed by the executor

    for name in FORGERIES:  # the attacker, as the executor's database login
        await forge(stage, name, actions[name].data.action_id, genuine[name], genuine["untouched"])
    unsigned, invalid = refused("unsigned"), refused("invalid")
    for name in FORGERIES:  # the same signed authorizations, delivered again
        await stage.producer.send("actions.authorized", actions[name])
    await stage.producer.send("actions.authorized", actions["untouched"])  # last of the task: any other result comes before its own

    untouched = actions["untouched"].data.action_id
    again = await wait_for(lambda: stage.results(untouched)[1:], what="the untouched action's result, published again")
    assert [e.id for e in again] == [genuine["untouched"].id]  # a genuine kept result still goes out again, as it was
    for name in FORGERIES:
        action_id = actions[name].data.action_id
        [dead] = await wait_for(lambda a=action_id: stage.collector.rejected(a), what=f"the {name} redelivery's dead letter")
        assert dead.data.code == "kept_result_refused"
        assert "the result event its claim keeps" in dead.data.error
        assert [e.id for e in stage.results(action_id)] == [genuine[name].id]  # nothing new: no result signed for the login
    published = stage.collector.events["actions.results"]
    assert not [e for e in published if e.data.result == FORGED]
    assert (refused("unsigned"), refused("invalid")) == (unsigned + 2, invalid + 2)  # none and unsigned; altered and another's
    for name in FORGERIES:
        assert f"executor: the result event kept for action {actions[name].data.action_id} (issue_refund" in caplog.text
    refunds = await stage.login.fetchval(
        "SELECT count(*) FROM executor.actions WHERE action_id = ANY($1::text[]) AND attempts = 1",
        [e.data.action_id for e in actions.values()],
    )
    assert refunds == len(actions)  # each called once: a refused redelivery runs nothing again
