"""A DBA edits who approved a refund in the audit log: `audit explain` no longer tells it as fact (auditor1 F4).

As superuser, the DBA rewrote bob's `approval.granted` row in place to name mallory (hash and signature left as they
were). `explain` read the row's columns and value and printed "granted by mallory" with no warning; only a separate
`verify` run named the row. Now `explain` observes each row of the task again from its own value with the deployment's
keys first, and heads its story with the rows that do not verify, named, in Markdown, HTML and JSON alike.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from audit_cli_helpers import audit_cli

import schemas as s
from schemas.examples import sample_events
from servicekit import KitSettings, service_key, sign_event
from services.audit.app import build as build_audit
from services.audit.settings import AuditSettings

pytestmark = pytest.mark.integration

SETTINGS = AuditSettings(batch_max_records=500, checkpoint_interval_s=0.3, topic_discovery_ms=2000)


def bobs_grant(kit: KitSettings, task_id: str) -> s.ApprovalGranted:
    sample = dict(sample_events())["approvals"]
    bob = {"task_id": task_id, "approver": "bob@acme.example", "approvers": ["bob@acme.example"]}
    data = s.ApprovalData.model_validate(sample.data.model_dump() | bob)
    return sign_event(s.ApprovalGranted.build(data, source="tidegate/approval"), service_key(kit, "approval"))


async def test_explain_names_a_row_the_dba_edited_instead_of_telling_it(
    kit: KitSettings, infra: Any, producer: AIOKafkaProducer, wait_for: Any
) -> None:
    task_id = f"t-{uuid.uuid4().hex[:8]}"
    grant = bobs_grant(kit, task_id)
    audit = build_audit(kit, SETTINGS)
    await audit.start()
    try:
        await producer.send_and_wait(kit.topic_prefix + "approvals", s.encode(grant), key=grant.key, partition=0)

        async def logged() -> bool:
            conn = await asyncpg.connect(kit.database_url)
            try:
                return bool(await conn.fetchval("SELECT count(*) FROM audit.log WHERE task_id = $1 AND valid", task_id))
            finally:
                await conn.close()

        await wait_for(logged, timeout=60, what="bob's grant recorded, valid")
    finally:
        await audit.stop()

    honest = json.loads((await audit_cli(kit, "explain", task_id, "--format", "json")).output)
    assert honest["unverified"] == []
    assert "Rows checked:** each of the 1 verifies" in (await audit_cli(kit, "explain", task_id)).output

    conn = await asyncpg.connect(infra.admin_database_url)  # the superuser
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")  # past the log's append-only trigger
            edited = await conn.execute(
                "UPDATE audit.log SET value = convert_to(replace(convert_from(value, 'UTF8'), 'bob@acme.example', "
                "'mallory@acme.example'), 'UTF8') WHERE task_id = $1",
                task_id,
            )
        assert edited == "UPDATE 1"
    finally:
        await conn.close()

    told = await audit_cli(kit, "explain", task_id)
    assert told.exit_code == 0, told.output
    assert "mallory@acme.example" in told.output  # what the row says is shown, under a warning
    assert "WARNING: 1 row(s) do not verify from their own value" in told.output
    assert "stored as a valid event, but its value does not verify: signature_invalid" in told.output
    doc = json.loads((await audit_cli(kit, "explain", task_id, "--format", "json")).output)
    [problem] = doc["unverified"]
    assert f"{kit.topic_prefix}approvals[0] seq 1" in problem
    page = (await audit_cli(kit, "explain", task_id, "--format", "html")).output
    assert "WARNING: 1 row(s) do not verify from their own value" in page
    assert f"<li>{kit.topic_prefix}approvals[0] seq 1" in page  # as it is, not as Markdown escaped it (`\[0\]`)
