"""A run with real Kafka, PostgreSQL, the executor and the audit service: the credential reaches the stand-ins and nothing else.

The tenant's Stripe and Zendesk credentials (one canary value) are set through the CLI from stdin,
then the executor performs reads, writes, a refused refund and a write whose outcome is unknown.
The canary must be absent from every record of every topic, from the audit log, from every log
line of the services and of the CLI, and from the executor's table (where it is sealed).
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from bus_helpers import every_record
from connector_harness import CANARY, cli

import schemas as s
from servicekit import ADMIN, KitSettings, SigningKey, action_digest, authorization_message, kafka_options, sign_event
from services.audit.app import build as build_audit
from services.executor import build as build_executor
from standins import RecordingProxy
from standins.zendesk import ZendeskStandIn


def authorization(key: SigningKey, tenant: str, tool: str, args: dict[str, Any]) -> s.ActionAuthorized:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    data = s.ActionAuthorizedData(
        action_id=f"a-{uuid.uuid4().hex[:12]}", task_id=f"t-{uuid.uuid4().hex[:8]}", tenant_id=tenant, step=1, tool=tool, args=args,
        authorization=s.Authorization(via="policy", policy_version="sha256:test", action_digest=action_digest(tenant, tool, args),
                                      issued_at=now, expires_at=now + timedelta(minutes=10), key_id=key.key_id, signature=""),
    )  # fmt: skip
    signed = data.authorization.model_copy(update={"signature": key.sign(authorization_message(data))})
    return s.ActionAuthorized.build(data.model_copy(update={"authorization": signed}), source="tidegate/policy")


async def test_the_credential_is_never_on_a_topic_in_the_audit_log_or_in_a_log(
    kit: KitSettings, stripe_proxy: RecordingProxy, zendesk: ZendeskStandIn, caplog: pytest.LogCaptureFixture, wait_for: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    tenant = f"leak-{uuid.uuid4().hex[:8]}"
    said = cli(
        kit, "connectors", "enable", "stripe", "--tenant", tenant, "--tool", "stripe_refund", "--set", f"base_url={stripe_proxy.url}"
    )
    said += cli(kit, "connectors", "set-credential", "stripe", "--tenant", tenant, stdin=CANARY + "\n")
    said += cli(kit, "connectors", "enable", "zendesk", "--tenant", tenant, "--tool", "zendesk_add_internal_note",
                "--set", f"base_url={zendesk.url}", "--set", "email=agent@acme.example")  # fmt: skip
    said += cli(kit, "connectors", "set-credential", "zendesk", "--tenant", tenant, stdin=CANARY)
    said += cli(kit, "connectors", "list", "--tenant", tenant)

    audit = build_audit(kit)
    executor = build_executor(kit, environ={})
    await audit.start()
    await executor.start()
    try:
        key = SigningKey.load_or_create(kit.keys_dir, "policy")
        zendesk.inject(500, {"error": "InternalError"})  # the first note's outcome is unknown
        stripe_proxy.fixtures["/v1/charges/ch_123"] = {"customer": "cus_1001"}  # who paid it (stripe-mock's charge names no customer)
        calls: list[tuple[str, dict[str, Any]]] = [
            ("stripe_get_charge", {"charge_id": "ch_123"}),
            ("stripe_refund", {"charge_id": "ch_123", "amount_usd": 0.5, "payee_id": "cus_1001"}),
            ("stripe_refund", {"charge_id": "ch_123", "amount_usd": 50.0, "payee_id": "cus_1001"}),  # refused: more than was charged
            ("zendesk_add_internal_note", {"ticket_id": 101, "body": "first"}),
            ("zendesk_get_ticket", {"ticket_id": 101}),
            ("zendesk_tag_ticket", {"ticket_id": 101, "tags": ["x"]}),  # not enabled
        ]
        events = [sign_event(authorization(key, tenant, tool, args), key) for tool, args in calls]  # as the policy service
        producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, acks="all", **kafka_options(kit, ADMIN))
        await producer.start()
        try:
            for event in events:
                headers = [(k, v.encode()) for k, v in s.headers_for(event).items()]
                await producer.send_and_wait(f"{kit.topic_prefix}actions.authorized", s.encode(event), key=event.key, headers=headers)
        finally:
            await producer.stop()

        pool = await asyncpg.connect(kit.database_url)
        try:
            ids = [e.data.action_id for e in events]

            async def recorded() -> list[Any]:
                rows = await pool.fetch(
                    "SELECT action_id, event_type, value FROM audit.log WHERE starts_with(topic, $1) AND action_id = ANY($2::text[]) "
                    "AND event_type LIKE 'tidegate.action.%' AND event_type <> 'tidegate.action.authorized'",
                    kit.topic_prefix,
                    ids,
                )
                return rows if len(rows) == len(ids) else []

            results = {r["action_id"]: r["event_type"] for r in await wait_for(recorded, timeout=60, what="every result in the audit log")}
            assert [results[i] for i in ids] == [
                "tidegate.action.succeeded", "tidegate.action.succeeded", "tidegate.action.failed",
                "tidegate.action.unknown", "tidegate.action.succeeded", "tidegate.action.failed",
            ]  # fmt: skip
            audit_rows = await pool.fetch(
                "SELECT key, headers::text AS headers, value FROM audit.log WHERE starts_with(topic, $1)", kit.topic_prefix
            )
            grant_rows = await pool.fetch(
                "SELECT row_to_json(g)::text AS row FROM executor.connector_grants g WHERE tenant_id = $1", tenant
            )
        finally:
            await pool.close()
    finally:
        await executor.stop()
        await audit.stop()

    # The credential did reach the systems of record …
    assert stripe_proxy.requests
    assert {r.headers["authorization"] for r in stripe_proxy.requests} == {f"Bearer {CANARY}"}
    assert ("GET", "/api/v2/tickets/101.json") in zendesk.requests  # the stand-in answers only the right token
    # … and nothing else.
    canary = CANARY.encode()
    records = await every_record(kit.kafka_bootstrap, kit.topic_prefix)
    assert len(records) >= 2 * len(events)
    assert not [r for r in records if canary in r]
    assert len(audit_rows) >= 2 * len(events)
    assert not [r for r in audit_rows if canary in (r["key"] or b"") + r["headers"].encode() + (r["value"] or b"")]
    assert len(grant_rows) == 2
    assert not [r for r in grant_rows if CANARY in r["row"]]
    assert CANARY not in caplog.text
    assert len(caplog.records) > 10  # the services did log (at DEBUG) during the run
    assert CANARY not in said
    assert tenant in said
    assert (Path(kit.keys_dir) / "executor" / "connector-credentials.key").exists()  # in the executor's own folder
