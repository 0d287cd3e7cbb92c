"""An agent flooding the policy with its own decided call gets its first repeat answered, then at most one a minute (restore8 N2).

Acting as the agent: the `agent` login of the broker and the client key of its tenant and requester. It proposes one
call, then the same proposal 200 more times. Each re-proposal used to publish the recorded decision and its
authorization again (three records a re-proposal with the executor's kept result), which every start's check reads:
156,000 of them made `tidegate restart policy` take 106 s.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from bus_helpers import Collector
from prometheus_client import REGISTRY
from signers import as_client

from schemas import ActionProposed, encode, headers_for
from servicekit import AGENT, KitSettings, kafka_options
from services.policy.app import build
from services.policy.settings import PolicySettings
from tidegate.commands.tenant import publish_tenant

REFUND = {"payee_id": "cus_1002", "amount_usd": 40.0, "order_id": "O-6001"}  # under the tenant's threshold: allowed
REPEATS = 200


def _unanswered(tenant: str) -> float:
    return REGISTRY.get_sample_value("tidegate_policy_repeats_unanswered_total", {"tenant": tenant}) or 0.0


async def _as_agent(kit: KitSettings, proposals: list[ActionProposed]) -> None:
    """Publish `proposals` as an outside agent does: its client key, the broker's `agent` login."""
    login = kafka_options(kit, AGENT)
    assert login.get("sasl_plain_username") == "agent", "no credentials for agent: is the broker up with logins (infra up)?"
    producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, acks="all", **login)
    await producer.start()
    try:
        sent = []
        for proposal in proposals:
            event = as_client(proposal, kit)
            headers = [(k, v.encode()) for k, v in headers_for(event).items()]
            sent.append(await producer.send(kit.topic_prefix + "actions.proposed", encode(event), key=event.key, headers=headers))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def _again(proposal: ActionProposed) -> ActionProposed:
    """The same proposal sent again by its agent: the same call and requester, a new envelope."""
    return ActionProposed.build(proposal.data, source=proposal.source)


@pytest.mark.parametrize("interval_s", [60.0, 0.0], ids=["default", "disabled"])
async def test_an_agents_repeats_of_its_own_call_are_answered_at_most_once_an_interval(
    kit: KitSettings, collector: Collector, wait_for: Any, make_proposal: Any, caplog: pytest.LogCaptureFixture, interval_s: float
) -> None:
    tenant = f"rpt-{uuid.uuid4().hex[:8]}"
    settings = {"allow_autonomous": True, "refund_threshold_usd": 500, "known_payees": ["cus_1002"]}
    await publish_tenant(kit, tenant=tenant, record=settings, set_by="ops@tidegate.example")
    first = make_proposal("issue_refund", REFUND, tenant=tenant)
    action_id = first.data.action_id
    policy = PolicySettings(repeat_answer_interval_s=interval_s)
    svc = build(kit=kit, settings=policy)
    await svc.start()
    try:
        await _as_agent(kit, [first])
        [decided] = await wait_for(lambda: collector.decided(action_id), what="the decision")
        assert decided.data.outcome == "allow", decided.data.reasons
        with caplog.at_level(logging.WARNING, logger="services.policy"):
            await _as_agent(kit, [_again(first) for _ in range(REPEATS)])

            def handled() -> bool:  # every repeat either answered on the bus or counted as not answered again
                return len(collector.decided(action_id)) + _unanswered(tenant) == 1 + REPEATS

            await wait_for(handled, timeout=120, what="every repeat handled")
    finally:
        await svc.stop()

    answers = collector.decided(action_id)
    assert {d.id for d in answers} == {decided.id}  # the recorded decision each time, never a new one
    assert collector.rejected(action_id) == []  # acknowledged, not dead-lettered: the flood does not move to deadletter
    if interval_s == 0:  # the filter disabled: every repeat is answered, as before (this test fails without the filter)
        assert len(answers) == len(collector.authorized(action_id)) == 1 + REPEATS
        assert _unanswered(tenant) == 0
        return
    assert len(answers) <= 2  # the first; one republish only if the run outlasted the interval
    assert len(collector.authorized(action_id)) == len(answers)
    assert _unanswered(tenant) >= REPEATS - 1
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "not answered again" in r.getMessage()]
    assert lines
    assert all(f"by alice@acme.example (tenant {tenant})" in line for line in lines)
    assert all("their answers are on actions.decided" in line for line in lines)

    # A restart passes its check (what it reads since the newest decision did not grow with the flood), and it
    # answered nothing yet: the same proposal, as a redelivery after a crash would bring it, is answered again.
    restarted = build(kit=kit, settings=policy)
    await restarted.start()
    try:
        await _as_agent(kit, [_again(first)])
        await wait_for(lambda: len(collector.decided(action_id)) == len(answers) + 1, what="the answer after the restart")
    finally:
        await restarted.stop()
