"""Retention on the real tables: archive and prune through the owner's function only, verify after it, archives offline."""

from __future__ import annotations

import asyncio
import gzip
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from typer.testing import CliRunner

from servicekit import REPO_ROOT, KitSettings, SigningKey, apply_migrations, create_pool
from servicekit.dbroles import service_database_url
from services.audit.app import MIGRATIONS
from services.audit.archive import read_archive
from services.audit.handlers import Checkpointer
from services.audit.records import observe
from services.audit.repository import PostgresAuditLog
from services.policy import PackSource
from services.policy._pg_repository import PgPolicyRepository
from tidegate.cli import app as cli

ROWS = 10  # per partition and batch


@pytest.fixture
def kit(infra: Any, prefix: str, tmp_path: Path) -> KitSettings:
    """Kit settings on the session's database (the operator's login); no Kafka is needed to archive and prune."""
    return KitSettings(
        kafka_bootstrap=infra.kafka_bootstrap, database_url=infra.database_url, topic_prefix=prefix, keys_dir=tmp_path / "keys",
        db_credentials_dir=infra.db_credentials_dir,
    )  # fmt: skip


async def _append_and_checkpoint(kit: KitSettings, first: int) -> None:
    """`ROWS` records on partitions 0 and 1 of `tasks` from offset `first`, then a signed checkpoint (as the service takes them)."""
    topic = kit.topic_prefix + "tasks"
    log = await PostgresAuditLog.connect(kit.database_url)
    try:
        await apply_migrations(log.pool, "audit", MIGRATIONS)
        batch = [
            observe(topic=topic, partition=p, offset=i, timestamp_ms=1_790_000_000_000 + i, timestamp_type=0, key=None,
                    value=json.dumps({"n": i, "run": uuid.uuid4().hex}).encode(), headers=[], prefix=kit.topic_prefix)
            for p in (0, 1) for i in range(first, first + ROWS)
        ]  # fmt: skip
        await log.append(batch)
        checkpointer = Checkpointer(
            log=log, key=SigningKey.load_or_create(kit.keys_dir, "audit"), publish=_ignore,
            checkpoint_topic=kit.topic_prefix + "audit.checkpoints", interval_s=60, prefix=kit.topic_prefix,
        )  # fmt: skip
        assert await checkpointer.tick() is not None
    finally:
        await log.close()


async def _ignore(event: Any) -> None:
    return None


@pytest.fixture
async def two_checkpoints(kit: KitSettings) -> KitSettings:
    """Checkpoint 1 signs seq 10 of each chain, checkpoint 2 seq 20."""
    await _append_and_checkpoint(kit, 0)
    await _append_and_checkpoint(kit, ROWS)
    return kit


def _env(kit: KitSettings, database_url: str | None = None) -> dict[str, str]:
    return {
        "TIDEGATE_DATABASE_URL": database_url or kit.database_url,
        "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
        "TIDEGATE_TOPIC_PREFIX": kit.topic_prefix,
    }


async def _cli(kit: KitSettings, *args: str, database_url: str | None = None) -> Any:
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["audit", *args], env=_env(kit, database_url))
    result.said = " ".join(result.output.split())  # as one line, however the terminal wrapped it
    return result


async def _fetch(dsn: str, query: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def _attack(infra: Any, *statements: str) -> None:
    """Statements as the superuser with the append-only trigger silenced, as test_tamper's attacker."""
    conn = await asyncpg.connect(infra.admin_database_url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            for statement in statements:
                await conn.execute(statement)
    finally:
        await conn.close()


def _seqs(kit: KitSettings) -> str:
    return (
        "SELECT partition, min(seq) AS lo, max(seq) AS hi, count(*) AS n FROM audit.log "
        f"WHERE starts_with(topic, '{kit.topic_prefix}') GROUP BY partition ORDER BY partition"
    )


async def test_archive_and_prune_then_verify_passes_and_counts(two_checkpoints: KitSettings, tmp_path: Path) -> None:
    kit = two_checkpoints
    archive = tmp_path / "a1.jsonl.gz"
    result = await _cli(kit, "archive", "--through-checkpoint", "1", "--out", str(archive), "--prune")
    assert result.exit_code == 0, result.output
    assert "20 rows of 2 chain(s), from seq 1 through checkpoint 1" in result.said
    assert "18 row(s) removed" in result.said
    # Each chain keeps the head checkpoint 1 signed (seq 10) as its anchor, and everything after it.
    assert [tuple(r) for r in await _fetch(kit.database_url, _seqs(kit))] == [(0, 10, 20, 11), (1, 10, 20, 11)]
    prunes = await _fetch(kit.database_url, "SELECT * FROM audit.prunes WHERE scope = $1", kit.topic_prefix)
    assert [(p["checkpoint_id"], p["rows_removed"], p["pruned_by"]) for p in prunes] == [(1, 18, "tidegate")]
    assert prunes[0]["archive_sha256"] in result.said
    result = await _cli(kit, "verify", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert (report["rows"], report["kept_from"], report["kept_from_reason"], report["rows_before"]) == (22, 1, "pruned", 18)
    result = await _cli(kit, "verify")
    assert "pruned through checkpoint 1" in result.said
    assert "intact" in result.said


async def test_archives_verify_offline_in_sequence_and_against_the_live_log(two_checkpoints: KitSettings, tmp_path: Path) -> None:
    kit = two_checkpoints
    a1, a2 = tmp_path / "a1.gz", tmp_path / "a2.gz"
    assert (await _cli(kit, "archive", "--through-checkpoint", "1", "--out", str(a1), "--prune")).exit_code == 0
    result = await _cli(kit, "archive", "--through-checkpoint", "2", "--out", str(a2), "--prune")
    assert result.exit_code == 0, result.output
    assert "after checkpoint 1 through checkpoint 2" in result.said
    nowhere = "postgresql://nobody@127.0.0.1:1/none"  # no database is read for archives alone
    result = await _cli(kit, "verify", "--archive", str(a2), "--archive", str(a1), database_url=nowhere)
    assert result.exit_code == 0, result.output
    assert "2 archive(s) check out" in result.said
    result = await _cli(kit, "verify", "--archive", str(a1), "--archive", str(a2), "--with-log")
    assert result.exit_code == 0, result.output
    # The first archive alone checks out, but the live log is kept from a later prune: an archive is missing.
    result = await _cli(kit, "verify", "--archive", str(a1), "--with-log")
    assert result.exit_code == 1
    assert "the newest archive ends at checkpoint 1, the live log is kept from checkpoint 2" in result.said


async def test_an_edited_line_of_an_archive_is_named(two_checkpoints: KitSettings, tmp_path: Path) -> None:
    kit = two_checkpoints
    archive = tmp_path / "a1.gz"
    assert (await _cli(kit, "archive", "--through-checkpoint", "1", "--out", str(archive))).exit_code == 0
    lines = gzip.decompress(archive.read_bytes()).splitlines()
    row = json.loads(lines[4])  # the fourth row: seq 4 of the first chain
    row["outcome"] = "allow"
    lines[4] = json.dumps(row).encode()
    archive.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    result = await _cli(kit, "verify", "--archive", str(archive))
    assert result.exit_code == 1
    assert f"{kit.topic_prefix}tasks[{row['partition']}] seq 4" in result.said
    assert "row edited" in result.said


async def test_only_the_owners_function_removes_rows_and_the_writer_may_not_call_it(
    two_checkpoints: KitSettings, infra: Any, tmp_path: Path
) -> None:
    kit = two_checkpoints
    conn = await asyncpg.connect(kit.database_url)  # the operator's login: a member of the schema's owner
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute("DELETE FROM audit.log WHERE starts_with(topic, $1)", kit.topic_prefix)
        async with conn.transaction():  # the flag the function sets does not let anyone else through
            await conn.execute("SELECT set_config('tidegate_audit.pruning', 'x', true)")
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute("DELETE FROM audit.log WHERE starts_with(topic, $1)", kit.topic_prefix)
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE tidegate_audit_writer")
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="prune_log"):
                await conn.fetchval("SELECT audit.prune_log($1, 1, $2, 18)", kit.topic_prefix, "0" * 64)
    finally:
        await conn.close()
    service = await asyncpg.connect(service_database_url(kit, "audit"))  # the audit service's own login
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="prune_log"):
            await service.fetchval("SELECT audit.prune_log($1, 1, $2, 18)", kit.topic_prefix, "0" * 64)
    finally:
        await service.close()
    # A count that differs from the archive's removes nothing.
    conn = await asyncpg.connect(kit.database_url)
    try:
        with pytest.raises(asyncpg.DataError, match="would remove 18 rows, the archive read 17"):
            await conn.fetchval("SELECT audit.prune_log($1, 1, $2, 17)", kit.topic_prefix, "0" * 64)
    finally:
        await conn.close()
    assert [r["n"] for r in await _fetch(kit.database_url, _seqs(kit))] == [20, 20]


async def test_a_superusers_delete_without_the_prune_path_is_still_named(two_checkpoints: KitSettings, infra: Any, tmp_path: Path) -> None:
    kit = two_checkpoints
    assert (await _cli(kit, "archive", "--through-checkpoint", "1", "--out", str(tmp_path / "a1.gz"), "--prune")).exit_code == 0
    where = f"starts_with(topic, '{kit.topic_prefix}') AND partition = 0"
    await _attack(infra, f"DELETE FROM audit.log WHERE {where} AND seq IN (10, 11)")
    result = await _cli(kit, "verify")
    assert result.exit_code == 1
    assert f"{kit.topic_prefix}tasks[0] seq 12" in result.said
    assert "seq 10, the head checkpoint 1 signed and the chain is kept from, is missing" in result.said


async def test_a_forged_prune_record_is_named(two_checkpoints: KitSettings, infra: Any) -> None:
    kit = two_checkpoints
    # The superuser removes the first rows of a chain and forges a prune naming a checkpoint that does not exist.
    await _attack(
        infra,
        f"DELETE FROM audit.log WHERE starts_with(topic, '{kit.topic_prefix}') AND partition = 1 AND seq < 15",
        f"INSERT INTO audit.prunes (scope, checkpoint_id, rows_removed, archive_sha256) VALUES ('{kit.topic_prefix}', 7, 14, '{'0' * 64}')",
    )
    result = await _cli(kit, "verify")
    assert result.exit_code == 1
    assert "names checkpoint 7: no such checkpoint (rows removed outside the prune path?)" in result.said
    assert f"{kit.topic_prefix}tasks[1] seq 15" in result.said
    assert "seq 1..14 missing" in result.said


async def test_from_checkpoint_checks_only_the_tail(two_checkpoints: KitSettings, infra: Any) -> None:
    kit = two_checkpoints
    await _attack(
        infra, f"UPDATE audit.log SET outcome = 'allow' WHERE starts_with(topic, '{kit.topic_prefix}') AND partition = 0 AND seq = 3"
    )
    assert (await _cli(kit, "verify")).exit_code == 1  # the whole log: the edit before checkpoint 2 is named
    result = await _cli(kit, "verify", "--from-checkpoint", "2")
    assert result.exit_code == 0, result.output
    assert "incremental: each chain checked from the heads of checkpoint 2 on" in result.said
    assert "checked 2 rows in 2 chain(s)" in result.said  # each chain's signed head row, nothing before it
    await _append_and_checkpoint(kit, 2 * ROWS)
    await _attack(
        infra, f"UPDATE audit.log SET outcome = 'allow' WHERE starts_with(topic, '{kit.topic_prefix}') AND partition = 1 AND seq = 25"
    )
    result = await _cli(kit, "verify", "--from-checkpoint", "2")
    assert result.exit_code == 1
    assert f"{kit.topic_prefix}tasks[1] seq 25" in result.said
    assert "checked 17 rows" in result.said  # 11 rows of chain 0 (seq 20..30), chain 1 up to its broken link (20..25)
    assert (await _cli(kit, "verify", "--from-checkpoint", "9")).exit_code == 1


async def test_an_export_of_a_window_verifies_offline_and_removes_nothing(two_checkpoints: KitSettings, tmp_path: Path) -> None:
    """An auditor's evidence of one window (auditor1 F4): the rows between two signed checkpoints, checked with the key alone."""
    kit = two_checkpoints
    await _append_and_checkpoint(kit, 2 * ROWS)  # checkpoint 3 signs seq 30
    conn = await asyncpg.connect(kit.database_url)
    try:
        taken = {r["checkpoint_id"]: r["taken_at"] for r in await conn.fetch("SELECT checkpoint_id, taken_at FROM audit.checkpoints "
                                                                              "WHERE scope = $1", kit.topic_prefix)}  # fmt: skip
        before = await conn.fetchval("SELECT count(*) FROM audit.log WHERE topic = $1", kit.topic_prefix + "tasks")
    finally:
        await conn.close()
    window = tmp_path / "window.gz"
    since, until = (taken[1] + (taken[2] - taken[1]) / 2).isoformat(), taken[2].isoformat()  # within checkpoint 2's stretch
    result = await _cli(kit, "export", "--since", since, "--until", until, "--out", str(window))
    assert result.exit_code == 0, result.output
    assert "20 rows of 2 chain(s), after checkpoint 1 through checkpoint 2, every chain checked; nothing removed" in result.said
    nowhere = "postgresql://nobody@127.0.0.1:1/none"  # the auditor's machine: the file and the audit's public key
    checked = await _cli(kit, "verify", "--archive", str(window), database_url=nowhere)
    assert checked.exit_code == 0, checked.output
    assert "1 archive(s) check out" in checked.said
    conn = await asyncpg.connect(kit.database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM audit.log WHERE topic = $1", kit.topic_prefix + "tasks") == before
    finally:
        await conn.close()

    lines = gzip.decompress(window.read_bytes()).splitlines()
    row = json.loads(lines[3])
    row["outcome"] = "allow"  # the evidence edited on its way to the auditor
    lines[3] = json.dumps(row).encode()
    window.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    edited = await _cli(kit, "verify", "--archive", str(window), database_url=nowhere)
    assert edited.exit_code == 1
    assert "row edited" in edited.said

    again = await _cli(kit, "export", "--since", since, "--out", str(window))
    assert again.exit_code != 0
    assert "never overwritten" in again.said
    newest = await _cli(kit, "export", "--since", since, "--out", str(tmp_path / "to-now.gz"))  # through the newest checkpoint
    assert "after checkpoint 1 through checkpoint 3" in newest.said


async def test_an_export_carries_the_policy_the_decisions_name_and_not_one_a_dba_edited(
    two_checkpoints: KitSettings, infra: Any, tmp_path: Path
) -> None:
    """The auditor's "under which policy": the pack the real policy repository recorded travels in the export (auditor3 F2).

    Before, decisions named `sha256:…` and the text was only in `policy.policy_versions`, in no export, printed by no
    command. A superuser who rewrites a stored pack's text under its version does not get it into the evidence.
    """
    kit = two_checkpoints
    run = uuid.uuid4().hex
    source = PackSource.from_dir(REPO_ROOT / "policies" / "default")
    genuine = PackSource(files=source.files, settings={**source.settings, "auditor_run": run})
    older = PackSource(files=source.files, settings={**source.settings, "auditor_run": run + "-older"})
    pool = await create_pool(infra.database_url, max_size=2)
    try:
        await apply_migrations(pool, "policy", REPO_ROOT / "services" / "policy" / "migrations")
        repo = PgPolicyRepository(pool)  # as the policy service records each pack it decides with
        await repo.record_policy_version(genuine.version, genuine.files, genuine.settings, "file:policies/default")
        await repo.record_policy_version(older.version, older.files, older.settings, "alice")
    finally:
        await pool.close()
    loosened = "jsonb_set(files, '{financial.cedar}', '\"permit(principal, action, resource);\"')"
    await _attack(infra, f"UPDATE policy.policy_versions SET files = {loosened} WHERE version = '{older.version}'")
    export = tmp_path / "evidence.jsonl.gz"
    result = await _cli(kit, "export", "--since", "2000-01-01", "--out", str(export))
    assert result.exit_code == 0, result.output
    assert genuine.version in result.said
    assert f"the policy pack stored as {older.version} (policy.policy_versions) does not hash to that version" in result.said
    header, _ = read_archive(export)
    assert genuine.version in {p.version for p in header.policies}
    assert older.version not in {p.version for p in header.policies}
    refused = await _cli(kit, "policy", older.version)
    assert refused.exit_code == 1
    assert "not evidence" in refused.said
    out = tmp_path / "pack"
    offline = await asyncio.to_thread(
        CliRunner().invoke, cli, ["audit", "policy", genuine.version, "--archive", str(export), "--out", str(out)],
        env={"TIDEGATE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
    )  # fmt: skip
    assert offline.exit_code == 0, offline.output
    assert PackSource.from_dir(out).version == genuine.version


async def test_an_export_is_attested_and_an_auditor_without_the_keys_folder_sees_its_header_rewritten(
    two_checkpoints: KitSettings, tmp_path: Path
) -> None:
    """The operator exports on the deployment (the audit key there attests the header); the auditor rewrites nothing and
    checks it with the fingerprints alone; a header rewritten to drop a key's retirement time is then named."""
    kit = two_checkpoints
    export = tmp_path / "evidence.jsonl.gz"
    result = await _cli(kit, "archive", "--through-checkpoint", "2", "--out", str(export))
    assert result.exit_code == 0, result.output
    assert "header attested by audit-" in result.said
    header, _ = read_archive(export)
    assert header.attestation is not None
    fingerprints = [a for k in header.keys for a in ("--trust-key", k.sha256)]
    auditor = KitSettings(**{**kit.model_dump(), "keys_dir": tmp_path / "auditor-keys"})
    (tmp_path / "auditor-keys").mkdir()
    nowhere = "postgresql://nobody@127.0.0.1:1/none"
    result = await _cli(auditor, "verify", "--archive", str(export), *fingerprints, database_url=nowhere)
    assert result.exit_code == 0, result.output
    assert "header attested by" in result.said
    lines = gzip.decompress(export.read_bytes()).splitlines()
    doc = json.loads(lines[0])
    doc["keys"][0]["retired_at"] = "2020-01-01T00:00:00Z"  # a forger's edit of what the file says of a key
    rewritten = tmp_path / "rewritten.jsonl.gz"
    rewritten.write_bytes(gzip.compress(b"\n".join([json.dumps(doc).encode(), *lines[1:]]) + b"\n"))
    result = await _cli(auditor, "verify", "--archive", str(rewritten), *fingerprints, database_url=nowhere)
    assert result.exit_code == 1, result.output
    assert f"audit key {doc['keys'][0]['key_id']} is not as attested" in result.said


async def test_verify_with_log_and_signatures_holds_the_archived_rows_to_their_own_signatures(kit: KitSettings, tmp_path: Path) -> None:
    """A grant written into the log with no signature (stored valid), signed over by the next checkpoint, then archived and pruned.

    Its chain, checkpoint and prune record all hold; only its own value shows it was never signed, and with `--with-log
    --signatures` the archived rows are observed again too (before, only the live rows were).
    """
    import schemas as s
    from schemas.examples import sample_events

    grant = dict(sample_events())["approvals"]
    planted = observe(
        topic=kit.topic_prefix + "approvals", partition=0, offset=0, timestamp_ms=1_790_000_000_000, timestamp_type=0, key=grant.key,
        value=s.encode(grant), headers=[], prefix=kit.topic_prefix, check=lambda *a, **k: None,  # recorded valid, as a forger writes it
    )  # fmt: skip
    assert planted.valid
    log = await PostgresAuditLog.connect(kit.database_url)
    try:
        await apply_migrations(log.pool, "audit", MIGRATIONS)
        await log.append([planted])
    finally:
        await log.close()
    await _append_and_checkpoint(kit, 0)
    await _append_and_checkpoint(kit, ROWS)
    archive = tmp_path / "a1.gz"
    assert (await _cli(kit, "archive", "--through-checkpoint", "2", "--out", str(archive), "--prune")).exit_code == 0
    assert (await _cli(kit, "verify", "--archive", str(archive), "--with-log")).exit_code == 0
    result = await _cli(kit, "verify", "--archive", str(archive), "--with-log", "--signatures")
    assert result.exit_code == 1, result.output
    assert f"{kit.topic_prefix}approvals:0 seq 1: stored as a valid event, but its value does not verify: signature_missing" in result.said
