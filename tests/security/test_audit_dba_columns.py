"""A superuser rewrites what a genuine row says without touching its value, re-chains, and `verify --signatures` names it.

auditor1 F2: with checkpoints stalled, the DBA flagged bob's genuine `approval.granted` a duplicate (`explain` skips a
duplicate), re-chained the partition so every hash held, and every verify mode passed: `--content` compares only the
value, timestamp, key and headers with the bus, and `--signatures` re-checked only the signature of rows stored valid.
Now `--signatures` observes every row again from its own value: a duplicate of an event no other valid row holds, a
task id or tenant its value does not carry, a genuine event stored refused, each is named; plain `verify` (the hashes)
still passes, as it must: the chain is consistent.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from audit_cli_helpers import audit_cli

import schemas as s
from schemas.examples import sample_events
from servicekit import KitSettings, apply_migrations, deployment_authority, service_key, sign_event
from services.audit.app import MIGRATIONS
from services.audit.handlers import Checkpointer
from services.audit.records import observe
from services.audit.repository import PostgresAuditLog
from services.audit.rows import COLUMNS, LogRow, headers_json

pytestmark = pytest.mark.integration


@dataclass
class Logged:
    topic: str
    task_id: str
    grant_seq: int


async def log_a_granted_task(kit: KitSettings, *, checkpoint_between: bool = False) -> Logged:
    """A proposal and bob's grant of one task, signed by their producers, observed and stored as the audit service does.

    `checkpoint_between`: the audit signs a checkpoint after the request, before the grant (the daily check starts there).
    """
    task_id, topic = f"t-{uuid.uuid4().hex[:8]}", kit.topic_prefix + "approvals"
    sample = dict(sample_events())["approvals"]
    bob = {"task_id": task_id, "approver": "bob@acme.example", "approvers": ["bob@acme.example"]}
    requested = s.ApprovalRequested.build(s.ApprovalData.model_validate(sample.data.model_dump() | {"task_id": task_id}),
                                          source="tidegate/approval")  # fmt: skip
    granted = s.ApprovalGranted.build(s.ApprovalData.model_validate(sample.data.model_dump() | bob), source="tidegate/approval")
    key, check = service_key(kit, "approval"), deployment_authority(kit, history=True).check
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    records = [
        observe(topic=topic, partition=0, offset=n, timestamp_ms=now_ms + n, timestamp_type=1, key=e.key,
                value=s.encode(sign_event(e, key)), headers=[], prefix=kit.topic_prefix, check=check)
        for n, e in enumerate([requested, granted])
    ]  # fmt: skip
    assert all(r.valid for r in records), [r.invalid_reason for r in records]
    log = await PostgresAuditLog.connect(kit.database_url)
    try:
        await apply_migrations(log.pool, "audit", MIGRATIONS)
        for batch in ([records[0]], [records[1]]) if checkpoint_between else (records,):
            await log.append(batch)
            if checkpoint_between and batch[0] is records[0]:
                checkpointer = Checkpointer(
                    log=log, key=service_key(kit, "audit"), publish=_nothing, checkpoint_topic=kit.topic_prefix + "audit.checkpoints",
                    interval_s=60, prefix=kit.topic_prefix,
                )  # fmt: skip
                assert await checkpointer.tick() is not None
    finally:
        await log.close()
    return Logged(topic, task_id, grant_seq=2)


async def _nothing(event: Any) -> None:
    return None


async def rechain(admin_url: str, topic: str, edit: Callable[[LogRow], LogRow]) -> None:
    """As the superuser: rewrite partition 0 of `topic` with `edit` applied to each row, every hash recomputed."""
    log = await PostgresAuditLog.connect(admin_url)
    try:
        rows = [row async for row in log.chain_rows(topic, 0)]
    finally:
        await log.close()
    conn = await asyncpg.connect(admin_url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")  # past the log's append-only triggers
            await conn.execute("DELETE FROM audit.log WHERE topic = $1 AND partition = 0", topic)
            prev, rewritten = rows[0].prev_hash, []
            for row in rows:
                changed = edit(row)._replace(prev_hash=prev)
                changed = changed._replace(hash=changed.expected_hash())
                prev = changed.hash
                values = list(changed)
                values[COLUMNS.index("headers")] = headers_json(changed.headers)
                rewritten.append(tuple(values))
            await conn.copy_records_to_table("log", schema_name="audit", columns=COLUMNS, records=rewritten)
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ({"duplicate": True}, "flagged a duplicate of event"),
        ({"task_id": "t-elsewhere"}, "its columns say other than its value: task_id 't-elsewhere'"),
        ({"valid": False, "invalid_reason": "signature_invalid: signature of approval.granted does not verify"},
         "stored as refused (signature_invalid"),
        # auditor2 N1: a reason that a change of keys could explain, when none did (the approval key was on file all along)
        ({"valid": False, "invalid_reason": "signer_not_allowed: service approval may not produce tidegate.approval.granted"},
         "was on file since"),
        ({"valid": False, "invalid_reason": "unknown_key: key 'approval-1' is not trusted"}, "no change of keys explains it"),
    ],
    ids=["hidden-as-duplicate", "moved-to-another-task", "recorded-refused", "refused-signer-not-allowed", "refused-unknown-key"],
)  # fmt: skip
async def test_a_consistent_rewrite_of_a_rows_columns_is_named_by_signatures(
    kit: KitSettings, infra: Any, edit: dict[str, Any], named: str
) -> None:
    logged = await log_a_granted_task(kit)
    honest = await audit_cli(kit, "verify", "--signatures")
    assert honest.exit_code == 0, honest.output

    await rechain(infra.admin_database_url, logged.topic, lambda row: row._replace(**edit) if row.seq == logged.grant_seq else row)
    plain = await audit_cli(kit, "verify")
    assert plain.exit_code == 0, plain.output  # every hash holds: the DBA re-chained
    checked = await audit_cli(kit, "verify", "--signatures", "--json")
    assert checked.exit_code == 1, checked.output
    report = json.loads(checked.output)
    [found] = [b for b in report["breaks"] if b["topic"] == logged.topic]
    assert (found["seq"], found["offset"]) == (logged.grant_seq, 1)
    assert named in found["problem"]


async def test_the_daily_check_from_a_checkpoint_still_asks_what_a_flagged_duplicate_duplicates(kit: KitSettings, infra: Any) -> None:
    """auditor2 N3: `verify --signatures --from-checkpoint N` (the daily routine) turned the duplicate check off."""
    logged = await log_a_granted_task(kit, checkpoint_between=True)
    await rechain(infra.admin_database_url, logged.topic, lambda row: row._replace(duplicate=True) if row.seq == logged.grant_seq else row)
    daily = await audit_cli(kit, "verify", "--signatures", "--from-checkpoint", "1", "--json")
    assert daily.exit_code == 1, daily.output
    [found] = [b for b in json.loads(daily.output)["breaks"] if b["topic"] == logged.topic]
    assert "flagged a duplicate of event" in found["problem"]
