"""The audit's own database login writes log and conflict rows whose headers are no headers: nothing stops, verify names them.

`headers` is the one jsonb column of `audit.log` and `audit.conflicts`: any JSON goes in. One log row whose headers were
a JSON number, written at the next offset of a partition, made the audit service retry the batch that reached it for
ever (`TypeError: 'int' object is not iterable` reading the row's fingerprint): no record of any topic was recorded
again. One with headers `null` made `audit verify` (every mode), `show`, `explain` and `search --task` end on a
traceback; a conflict row with such headers did the same to every batch with a conflict and to `verify`. Now such a
row hashes and fingerprints as the JSON it holds (it then differs from every genuine record: a conflict, a broken
link), and `verify --signatures` and `explain` name it: its headers are not headers the audit stores.

Each test writes only in its own topic prefix, which nothing else reads.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from audit_cli_helpers import as_audit_login, audit_cli, offsets_logged

from servicekit import KitSettings
from services.audit.app import build as build_audit
from services.audit.settings import AuditSettings

pytestmark = pytest.mark.integration

SETTINGS = AuditSettings(batch_max_records=500, checkpoint_interval_s=0.3, topic_discovery_ms=2000)

# A row as the attacker writes it, at the next seq and offset of its chain (its hash is no matter: nobody checks it on the way)
FORGE = """
INSERT INTO audit.log (topic, partition, kafka_offset, seq, kafka_ts, ts_type, key, headers, value, valid, reasons, duplicate,
                       recorded_at, prev_hash, hash, task_id)
SELECT $1, 0, coalesce(max(kafka_offset), -1) + 1, coalesce(max(seq), 0) + 1, now(), 1, convert_to($3, 'UTF8'), $2::jsonb,
       '{}', false, '{}', false, now(), '\\x00'::bytea, '\\x00'::bytea, $3
FROM audit.log WHERE topic = $1 AND partition = 0
"""
CONFLICT = """
INSERT INTO audit.conflicts (topic, partition, kafka_offset, logged_seq, differs, kafka_ts, ts_type, key, headers, value, record_sha256)
VALUES ($1, 0, 999, NULL, '{value}', now(), 1, NULL, $2::jsonb, NULL, '\\x01'::bytea)
"""


async def test_a_log_row_whose_headers_are_a_number_at_the_next_offset_is_a_conflict_not_a_stopped_service(
    kit: KitSettings, producer: AIOKafkaProducer, wait_for: Any
) -> None:
    topic = kit.topic_prefix + "actions.results"
    audit = build_audit(kit, SETTINGS)
    await audit.start()
    try:
        await producer.send_and_wait(topic, json.dumps({"genuine": 0}).encode(), partition=0)
        await wait_for(lambda: offsets_logged(kit, topic, [0]), timeout=60, what="the first record logged")
    finally:
        await audit.stop()
    assert await as_audit_login(kit, FORGE, topic, "5", "") == "INSERT 0 1"  # offset 1, headers 5
    assert await as_audit_login(kit, CONFLICT, kit.topic_prefix + "approvals", "null") == "INSERT 0 1"
    for n in (1, 2):
        await producer.send_and_wait(topic, json.dumps({"genuine": n}).encode(), partition=0)

    again = build_audit(kit, SETTINGS)
    await again.start()
    try:  # the batch reaching offset 1 was retried for ever: nothing after it was recorded
        await wait_for(lambda: offsets_logged(kit, topic, [0, 1, 2]), timeout=60, what="the chain going on past the forged row")
        assert again.recorder.conflicts == 1  # the genuine record at offset 1, kept in audit.conflicts
    finally:
        await again.stop()

    result = await audit_cli(kit, "verify")
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, Exception), result.exception  # it ended on a traceback
    words = " ".join(result.output.split())
    assert f"{topic}[0] seq 2 (offset 1): prev_hash does not match" in words  # the forged row: a broken link
    assert f"{topic}[0] seq 2 (offset 1): conflict recorded" in words
    assert f"{kit.topic_prefix}approvals[0] (offset 999): forged conflict row" in words


async def test_rows_whose_headers_are_no_headers_are_named_by_verify_and_explain_instead_of_a_traceback(kit: KitSettings) -> None:
    task_id = f"t-{uuid.uuid4().hex[:8]}"
    shapes = ["null", '"abc"', '[{"x": "y"}]', '[{"k": "a", "b64": "!!"}]', '{"k": "v"}']
    for n, headers in enumerate(shapes):
        assert await as_audit_login(kit, FORGE, f"{kit.topic_prefix}forged.{n}", headers, task_id) == "INSERT 0 1"

    for command in (("verify",), ("verify", "--signatures"), ("verify", "--content")):
        result = await audit_cli(kit, *command)
        assert result.exit_code == 1, (command, result.output)
        assert not isinstance(result.exception, Exception), (command, result.exception)
    signatures = " ".join((await audit_cli(kit, "verify", "--signatures")).output.split())
    for n, _ in enumerate(shapes):
        assert f"{kit.topic_prefix}forged.{n}[0] seq 1 (offset 0): its headers are not Kafka headers as the audit stores them" in signatures

    for command in (("show", task_id), ("search", "--task", task_id), ("explain", task_id)):
        result = await audit_cli(kit, *command)
        assert result.exit_code == 0, (command, result.output, result.exception)
    told = (await audit_cli(kit, "explain", task_id)).output
    assert f"WARNING: {len(shapes)} row(s) do not verify from their own value" in told
