"""The audit's own database login writes rows into `audit.checkpoints`: none stops the service or makes `verify` lie.

The login may INSERT there, and the table is append-only to everyone (the operator cannot delete a row either). One
row whose heads were a JSON text made the audit service fail at every start (`ValidationError` reading the newest
checkpoint) and `tidegate audit verify` end on the same traceback, for good: no event was recorded meanwhile
(attacker6 F5). A well-formed row at the largest id there is, without a valid signature, made the service number its
next checkpoint past it, which no bigint holds: no checkpoint was taken again. Now the chain of checkpoints goes on
from the newest one a trusted audit key signed; a row above it that is not a checkpoint, or not signed, is refused
alone (one WARNING naming it, `tidegate_rows_refused_total{service="audit",table="checkpoints"}`), its id passed
over, and `verify` names it (exit 1) without taking it for a gap.

Each test writes in its own scope (its topic prefix), which nothing else reads: the rows it cannot delete break nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from audit_cli_helpers import as_audit_login, audit_cli
from prometheus_client import REGISTRY

from servicekit import Keyring, KitSettings
from services.audit.app import build as build_audit
from services.audit.checkpoints import Checkpoint
from services.audit.repository import PostgresAuditLog
from services.audit.settings import AuditSettings
from services.audit.verify import verify_log

pytestmark = pytest.mark.integration

SETTINGS = AuditSettings(batch_max_records=500, checkpoint_interval_s=0.3, topic_discovery_ms=2000)
LARGEST_ID = 2**63 - 1  # the largest a bigint holds
COLUMNS = "checkpoint_id, taken_at, heads, rows, key_id, signature, scope"
FORGED = "AAAA"  # the signature the attacker writes (it holds no audit key)
REFUSED = ("tidegate_rows_refused_total", {"service": "audit", "table": "checkpoints", "reason": "invalid"})


async def stored(kit: KitSettings) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(kit.database_url)
    try:
        return await conn.fetch("SELECT * FROM audit.checkpoints WHERE scope = $1 ORDER BY checkpoint_id", kit.topic_prefix)
    finally:
        await conn.close()


async def _signed_past(kit: KitSettings, checkpoint_id: int, rows: int) -> list[asyncpg.Record] | None:
    """The stored rows once one the service wrote after `checkpoint_id` signs at least `rows` rows."""
    found = await stored(kit)
    return found if any(r["checkpoint_id"] > checkpoint_id and r["signature"] != FORGED and r["rows"] >= rows for r in found) else None


def _refused() -> float:
    return REGISTRY.get_sample_value(*REFUSED) or 0.0


async def _checkpoint_1(kit: KitSettings, producer: AIOKafkaProducer, wait_for: Any) -> tuple[str, asyncpg.Record]:
    """The service records one record and signs checkpoint 1, then stops: the topic, and checkpoint 1's row."""
    topic = kit.topic_prefix + "actions.results"
    audit = build_audit(kit, SETTINGS)
    await audit.start()
    try:
        await producer.send_and_wait(topic, json.dumps({"genuine": 0}).encode(), partition=0)
        [first] = await wait_for(lambda: _signed_past(kit, 0, 1), timeout=60, what="checkpoint 1")
    finally:
        await audit.stop()
    return topic, first


async def test_a_checkpoint_row_whose_heads_are_not_heads_is_refused_alone_and_the_service_starts_and_signs_past_it(
    kit: KitSettings, producer: AIOKafkaProducer, wait_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    topic, first = await _checkpoint_1(kit, producer, wait_for)
    # attacker6 F5, as the audit login: checkpoint 2 whose heads are a JSON text, not an object
    sql = f"INSERT INTO audit.checkpoints ({COLUMNS}) VALUES ($1, now(), $2, 175, $3, 'AAAA', $4)"
    assert await as_audit_login(kit, sql, 2, '"x"', first["key_id"], kit.topic_prefix) == "INSERT 0 1"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # nobody takes it back but a superuser
        await as_audit_login(kit, "DELETE FROM audit.checkpoints WHERE scope = $1", kit.topic_prefix)
    await producer.send_and_wait(topic, json.dumps({"genuine": 1}).encode(), partition=0)

    before = _refused()
    again = build_audit(kit, SETTINGS)
    with caplog.at_level(logging.WARNING):
        await again.start()  # raised ValidationError (Checkpoint heads dict_type) at every start
        try:
            await wait_for(lambda: _signed_past(kit, 1, 2), timeout=60, what="a checkpoint signed past the refused row")
        finally:
            await again.stop()

    ids = [r["checkpoint_id"] for r in await stored(kit)]
    assert ids[:3] == [1, 2, 3]  # numbered past the refused row: no insert collides with it
    said = [r.getMessage() for r in caplog.records if "checkpoint 2 of scope" in r.getMessage()]
    assert len(said) == 1, said  # once, however many ticks read it
    assert "refused: it is not a checkpoint (heads: Input should be a valid dictionary)" in said[0]
    assert _refused() > before

    log = await PostgresAuditLog.connect(kit.database_url)
    try:
        report = await verify_log(log, Keyring.load(kit.keys_dir, "audit"), prefix=kit.topic_prefix)
    finally:
        await log.close()
    assert [(b.checkpoint_id, b.problem.split(":")[0]) for b in report.breaks] == [(2, "this row is not a checkpoint (heads")]
    assert report.newest is not None
    assert report.newest.checkpoint_id == ids[-1]

    result = await audit_cli(kit, "verify")
    assert result.exit_code == 1, result.output  # ended on the same traceback
    assert "checkpoint 2: this row is not a checkpoint" in " ".join(result.output.split())
    assert not isinstance(result.exception, Exception), result.exception  # it ended on a traceback


async def test_a_well_formed_checkpoint_row_without_a_valid_signature_is_never_where_the_chain_goes_on(
    kit: KitSettings, producer: AIOKafkaProducer, wait_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    topic, first = await _checkpoint_1(kit, producer, wait_for)
    # As the audit login: checkpoint 1's heads under checkpoint 2, "taken" in 2030 (the gauges read it fresh), and the
    # same at the largest id there is (the service numbered its next checkpoint past it: no bigint holds that id)
    sql = (
        f"INSERT INTO audit.checkpoints ({COLUMNS}) SELECT $1, '2030-01-01', heads, rows, key_id, 'AAAA', scope "
        "FROM audit.checkpoints WHERE scope = $2 AND checkpoint_id = 1"
    )
    for checkpoint_id in (2, LARGEST_ID):
        assert await as_audit_login(kit, sql, checkpoint_id, kit.topic_prefix) == "INSERT 0 1"
    await producer.send_and_wait(topic, json.dumps({"genuine": 1}).encode(), partition=0)

    before = _refused()
    again = build_audit(kit, SETTINGS)
    with caplog.at_level(logging.WARNING):
        await again.start()
        try:
            found = await wait_for(lambda: _signed_past(kit, 1, 2), timeout=60, what="a checkpoint signed past the forged rows")
            age = REGISTRY.get_sample_value("tidegate_audit_checkpoint_age_seconds")
        finally:
            await again.stop()

    assert [r["checkpoint_id"] for r in found][:3] == [1, 2, 3]
    taken = Checkpoint.model_validate({**dict(found[2]), "heads": json.loads(found[2]["heads"])})
    assert taken.key_id == first["key_id"]
    assert taken.rows >= 2  # both records (and checkpoint 1's own record, once the audit read it)
    assert age is not None
    assert age >= 0  # the gauges describe the signed checkpoint, not the one "taken" in 2030
    assert _refused() > before
    said = [r.getMessage() for r in caplog.records if "refused: its signature does not verify" in r.getMessage()]
    assert sorted(m.split(" of scope")[0].split()[-1] for m in said) == sorted(["2", str(LARGEST_ID)])

    result = await audit_cli(kit, "verify")
    assert result.exit_code == 1, result.output
    words = " ".join(result.output.split())
    assert f"checkpoint 2: signature is not valid for a trusted audit key ({first['key_id']})" in words
    assert "are missing" not in words  # the ids passed over are no gap
