"""An operator acknowledges a known conflict so `verify` goes green; the audit's own login cannot acknowledge one for them.

Real PostgreSQL, the real CLI. The conflict is made as the audit's login can make one (a forged row at the next
offset, then the genuine record there). The attacker holds the audit's database login and the audit service's
signing key (both on the audit host): the login may not write `audit.conflict_acks` at all, and a row written by a
login that may (the operator's, or a superuser's) under any key but an allow-listed operator's does not count.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from audit_cli_helpers import audit_cli, bus_records

from servicekit import ADMIN, KitSettings, SigningKey, kafka_options, service_key
from servicekit.dbroles import service_database_url
from services.audit.acknowledgements import acknowledge
from services.audit.handlers import Recorder
from services.audit.records import observe
from services.audit.repository import PostgresAuditLog
from services.audit.rows import Observed

pytestmark = pytest.mark.integration


def record(kit: KitSettings, offset: int, value: bytes) -> Observed:
    return observe(
        topic=kit.topic_prefix + "actions.results", partition=0, offset=offset, timestamp_ms=1_790_000_000_000 + offset,
        timestamp_type=1, key=None, value=value, headers=[], prefix=kit.topic_prefix,
    )  # fmt: skip


async def conflict_at(kit: KitSettings, offset: int) -> None:
    """As the audit's login: a row of its own at `offset`, then the genuine record there, which the log records as a conflict."""
    log = await PostgresAuditLog.connect(service_database_url(kit, "audit"), max_size=1)
    try:
        if offset == 1:
            await log.append([record(kit, 0, b'{"genuine": 0}')])
        await log.append([record(kit, offset, b'{"forged": true}')])
        result = await log.append([record(kit, offset, b'{"genuine": %d}' % offset)])
        assert [c.record.kafka_offset for c in result.conflicts] == [offset]
    finally:
        await log.close()


def flat(output: str) -> str:
    """The CLI's output with its line wrapping undone."""
    return " ".join(output.split())


async def test_an_operator_acknowledges_a_conflict_and_no_one_else_can(kit: KitSettings) -> None:
    topic = kit.topic_prefix + "actions.results"
    await conflict_at(kit, 1)
    broken = await audit_cli(kit, "verify")
    assert broken.exit_code == 1, broken.output
    assert f"{topic}[0] seq 2 (offset 1): conflict recorded" in flat(broken.output)

    listed = await audit_cli(kit, "conflicts", "list", "--json")
    assert listed.exit_code == 0, listed.output
    [conflict] = [json.loads(line) for line in listed.output.splitlines()]
    assert (conflict["offset"], conflict["logged_seq"], conflict["acknowledged"]) == (1, 2, False)
    ident = conflict["conflict_id"]

    # The audit's own login may not write an acknowledgement, as itself or as its writer role.
    stolen = await asyncpg.connect(service_database_url(kit, "audit"))
    try:
        for role in ("", "SET ROLE tidegate_audit_writer"):
            if role:
                await stolen.execute(role)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await stolen.execute(
                    "INSERT INTO audit.conflict_acks (topic, partition, kafka_offset, record_sha256, logged_seq, differs, reason, "
                    "acked_by, acked_at, key_id, signature) SELECT topic, partition, kafka_offset, record_sha256, logged_seq, differs, "
                    "'known', 'operator', now(), 'x', 'x' FROM audit.conflicts WHERE topic = $1",
                    topic,
                )
    finally:
        await stolen.close()

    # A login that may write it (the operator's database login, stolen) signs with the audit service's key, under the operator's name.
    log = await PostgresAuditLog.connect(kit.database_url, max_size=1)
    try:
        [recorded] = await log.conflicts(kit.topic_prefix)
        audit_key = service_key(kit, "audit")
        await log.add_acknowledgement(
            acknowledge(SigningKey(kit.operator, audit_key.private), recorded, "nothing to see", datetime.now(UTC))
        )
    finally:
        await log.close()
    still = await audit_cli(kit, "verify")
    assert still.exit_code == 1, still.output
    assert "an acknowledgement is stored but does not count" in flat(still.output)
    assert "which is no operator's key on the allow-list" in flat(still.output)

    acked = await audit_cli(kit, "conflicts", "ack", ident, "--reason", "forged row of the 2026-12-05 drill (INC-42)")
    assert acked.exit_code == 0, acked.output
    assert f"conflict {ident}" in flat(acked.output)
    green = await audit_cli(kit, "verify")
    assert green.exit_code == 0, green.output
    assert f"acknowledged: {topic}[0] seq 2 (offset 1): conflict {ident} acknowledged by {kit.operator}" in flat(green.output)
    doc = json.loads((await audit_cli(kit, "verify", "--json")).output)
    assert (doc["conflicts"], doc["breaks"]) == (1, [])
    assert doc["acknowledged"][0]["reason"] == "forged row of the 2026-12-05 drill (INC-42)"

    # Signed and append-only: nobody rewrites what was acknowledged, nor removes it, not even the operator's login.
    owner = await asyncpg.connect(kit.database_url)
    try:
        for sql in ("UPDATE audit.conflict_acks SET reason = 'other'", "DELETE FROM audit.conflict_acks", "TRUNCATE audit.conflict_acks"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await owner.execute(sql)
    finally:
        await owner.close()

    await conflict_at(kit, 3)  # the next conflict still fails verify
    again = await audit_cli(kit, "verify")
    assert again.exit_code == 1, again.output
    assert f"{topic}[0] seq 3 (offset 3): conflict recorded" in flat(again.output)
    assert "acknowledged: " in flat(again.output)
    listed = await audit_cli(kit, "conflicts", "list", "--json")
    states = [json.loads(line) for line in listed.output.splitlines()]
    assert [(c["offset"], c["acknowledged"], c["acknowledged_by"]) for c in states] == [(1, True, kit.operator), (3, False, None)]
    still_open = await audit_cli(kit, "conflicts", "list", "--open", "--json")
    assert [json.loads(line)["offset"] for line in still_open.output.splitlines()] == [3]
    table = await audit_cli(kit, "conflicts", "list")
    assert table.exit_code == 0, table.output
    assert "2 conflict(s)" in table.output


async def test_verify_content_shows_the_row_of_an_acknowledged_conflict_apart_and_still_names_a_new_forged_row(kit: KitSettings) -> None:
    """`--content` compares rows with the bus: the forged row an operator acknowledged is listed as such, not a mismatch."""
    topic = kit.topic_prefix + "actions.results"
    producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for n in range(3):
            await producer.send_and_wait(topic, b'{"genuine": %d}' % n, partition=0)
    finally:
        await producer.stop()
    records = await bus_records(kit, topic)
    assert [r.offset for r in records] == [0, 1, 2]
    log = await PostgresAuditLog.connect(service_database_url(kit, "audit"), max_size=1)  # as the service writes: its own login
    try:
        recorder = Recorder(prefix=kit.topic_prefix, log=log)
        await recorder.record_batch(records[:1])
        await log.append([record(kit, 1, b'{"forged": true}')])  # the login's row, ahead of the genuine record 1
        await recorder.record_batch(records[1:])
        assert recorder.conflicts == 1
    finally:
        await log.close()

    before = await audit_cli(kit, "verify", "--content")
    assert before.exit_code == 1, before.output
    assert f"{topic}[0] seq 2 (offset 1): differs from the record the bus holds at this offset" in flat(before.output)
    [conflict] = [json.loads(line) for line in (await audit_cli(kit, "conflicts", "list", "--json")).output.splitlines()]
    acked = await audit_cli(kit, "conflicts", "ack", conflict["conflict_id"], "--reason", "INC-43: drill")
    assert acked.exit_code == 0, acked.output

    after = await audit_cli(kit, "verify", "--content")
    assert after.exit_code == 0, after.output
    assert f"acknowledged: {topic}[0] seq 2 (offset 1): differs from the record the bus holds" in flat(after.output)
    assert "but the 1 row(s) of acknowledged conflicts" in flat(after.output)
    doc = json.loads((await audit_cli(kit, "verify", "--content", "--json")).output)
    assert (doc["content"]["mismatches"], [m["seq"] for m in doc["content"]["acknowledged"]]) == ([], [2])

    log = await PostgresAuditLog.connect(service_database_url(kit, "audit"), max_size=1)
    try:
        await log.append([record(kit, 102, b'{"forged": true}')])  # a new forged row: the bus never had this offset
    finally:
        await log.close()
    again = await audit_cli(kit, "verify", "--content")
    assert again.exit_code == 1, again.output
    assert f"{topic}[0] seq 4 (offset 102): the bus never had this offset" in flat(again.output)


async def test_the_audits_login_cannot_make_a_genuine_conflict_impossible_to_acknowledge(kit: KitSettings) -> None:
    """Finding F4: a decoy conflict row carrying the genuine conflict's digest at another offset made `ack` refuse for good.

    As the audit's login: the genuine conflict (a forged log row, then the genuine record), then two decoys with its
    digest: a copy of its record at offset 999998 (consistent) and a record of its own at 999999 (forged: the digest
    is not its record's). The operator acknowledges the genuine one by position; the decoys stay breaks (the forged
    one said to be so) until acknowledged by position themselves.
    """
    topic = kit.topic_prefix + "actions.results"
    await conflict_at(kit, 1)
    stolen = await asyncpg.connect(service_database_url(kit, "audit"))
    try:
        copied = await stolen.execute(
            "INSERT INTO audit.conflicts (topic, partition, kafka_offset, logged_seq, differs, kafka_ts, ts_type, key, headers, value, "
            "record_sha256) SELECT topic, partition, 999998, NULL, '{}', kafka_ts, ts_type, key, headers, value, record_sha256 "
            "FROM audit.conflicts WHERE topic = $1 AND kafka_offset = 1",
            topic,
        )
        forged = await stolen.execute(
            "INSERT INTO audit.conflicts (topic, partition, kafka_offset, logged_seq, differs, kafka_ts, ts_type, key, headers, value, "
            "record_sha256) SELECT topic, partition, 999999, NULL, ARRAY['value'], now(), 1, NULL, '[]'::jsonb, '{\"decoy\": true}', "
            "record_sha256 FROM audit.conflicts WHERE topic = $1 AND kafka_offset = 1",
            topic,
        )
        assert (copied, forged) == ("INSERT 0 1", "INSERT 0 1")
    finally:
        await stolen.close()

    listed = [json.loads(line) for line in (await audit_cli(kit, "conflicts", "list", "--json")).output.splitlines()]
    assert [(c["offset"], c["at"], c["forged"]) for c in listed] == [
        (1, f"{topic}[0]@1", False),  # the genuine conflict: its digest re-derived from the stored record is its own
        (999998, f"{topic}[0]@999998", False),
        (999999, f"{topic}[0]@999999", True),
    ]
    assert len({c["record_sha256"] for c in listed}) == 1
    ident, digest = listed[0]["conflict_id"], listed[0]["record_sha256"]
    for named in (ident, digest):
        refused = await audit_cli(kit, "conflicts", "ack", named, "--reason", "INC-46")
        assert refused.exit_code == 1, refused.output
        assert "names 3 conflicts; pick one" in flat(refused.output)
        assert f"ack --at {topic}[0]@1" in flat(refused.output)
        assert f"ack --at {topic}[0]@999999" in flat(refused.output)

    acked = await audit_cli(kit, "conflicts", "ack", ident, "--at", f"{topic}[0]@1", "--reason", "INC-46: forged row of the drill")
    assert acked.exit_code == 0, acked.output
    assert f"conflict {ident} ({topic}[0]@1) acknowledged by {kit.operator}" in flat(acked.output)
    still = await audit_cli(kit, "verify")
    assert still.exit_code == 1, still.output
    said = flat(still.output)
    assert f"acknowledged: {topic}[0] seq 2 (offset 1): conflict {ident} acknowledged by {kit.operator}" in said
    assert f"{topic}[0] (offset 999999): forged conflict row" in said
    assert f"tidegate audit conflicts ack --at {topic}[0]@999999" in said
    table = await audit_cli(kit, "conflicts", "list")
    assert table.exit_code == 0, table.output
    assert "forged" in table.output

    for offset in (999998, 999999):
        decoy = await audit_cli(kit, "conflicts", "ack", "--at", f"{topic}[0]@{offset}", "--reason", "INC-46: the audit login's decoys")
        assert decoy.exit_code == 0, decoy.output
    green = await audit_cli(kit, "verify", "--json")
    assert green.exit_code == 0, green.output
    doc = json.loads(green.output)
    assert [(a["offset"], a["forged"]) for a in doc["acknowledged"]] == [(1, False), (999998, False), (999999, True)]
