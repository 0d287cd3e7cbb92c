"""The approval service against the real policy service: the policy verifies our signed grant and authorizes."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from approval_harness import StartApproval

from schemas import ActionProposed, ActionProposedData, ProposalCost, decode
from servicekit import ADMIN, KitSettings, kafka_options
from services.policy.app import build as build_policy


async def read(bootstrap: str, full_topic: str, name: str) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **kafka_options(KitSettings(), ADMIN), enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        parts = [TopicPartition(full_topic, p) for p in consumer.partitions_for_topic(full_topic) or ()]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        events: list[Any] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                events.extend(decode(name, r.value) for r in records)
        return events
    finally:
        await consumer.stop()


async def test_policy_accepts_our_signed_grant_with_edits_and_we_open_no_second_request(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: Any
) -> None:
    h = await start_approval()
    h.tenant = "acme"  # the default policy pack knows acme's payees and threshold
    policy = build_policy(h.kit)
    await policy.start()
    try:
        bob = await h.token("bob@acme.example", ["finance"], tenant="acme")
        action_id, task_id = f"a-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:10]}"
        args = {"payee_id": "cus_1001", "amount_usd": 900.0, "order_id": "O-1001"}
        proposal = ActionProposedData(
            action_id=action_id,
            task_id=task_id,
            tenant_id="acme",
            step=1,
            tool="issue_refund",
            args=args,
            rationale="duplicate charge",
            proposer="tests/approval",
            cost=ProposalCost(usd=0.0),
            mode="autonomous",
            requested_by="alice@acme.example",
        )
        await h.publish("actions.proposed", ActionProposed.build(proposal, source="tests/approval"))
        record = await h.request_for(action_id, wait_for)
        assert record.requested_by == "alice@acme.example"
        assert "needs_human_approval" in [r.code for r in record.reasons]

        edited = args | {"amount_usd": 450.0}
        answer = await http.post(
            f"{h.url}/api/v1/approvals/{record.approval_id}/approve",
            json={"action_digest": record.action_digest, "edited_args": edited, "comment": "half now"},
            headers={"Authorization": f"Bearer {bob}"},
        )
        assert answer.status_code == 200, answer.text

        async def authorized() -> list[Any]:
            events = await read(h.kit.kafka_bootstrap, h.bus.topic("actions.authorized"), "actions.authorized")
            return [e for e in events if e.data.action_id == action_id]

        (auth,) = await wait_for(authorized, timeout=30, what="the policy service to authorize after our grant")
        assert auth.data.authorization.via == "approval"
        assert auth.data.authorization.approval_id == record.approval_id
        assert auth.data.args == edited
        deadletters = await read(h.kit.kafka_bootstrap, h.bus.topic("deadletter"), "deadletter")
        assert [d for d in deadletters if d.data.service in ("policy", "approval")] == []
        await h.proc.bus.wait_caught_up("actions.decided")
        requests = [r for r in await h.repo.search(tenant_id="acme", status=None) if r.action_id == action_id]
        assert len(requests) == 1
        assert requests[0].status == "granted"
    finally:
        await policy.stop()
