"""`tidegate audit show|explain|search` over a real log (filled through the service's repository)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import schemas as s
from schemas.examples import sample_events
from servicekit import KitSettings, SigningKey, apply_migrations
from services.audit.app import MIGRATIONS
from services.audit.handlers import Checkpointer
from services.audit.records import observe
from services.audit.repository import PostgresAuditLog
from tidegate.cli import app as cli


@pytest.fixture
async def env(infra: Any, prefix: str, tmp_path: Path) -> dict[str, str]:
    """A log holding the contract's sample events for a task of this test's own, under this test's prefix."""
    kit = KitSettings(database_url=infra.database_url, topic_prefix=prefix, keys_dir=tmp_path / "keys")
    task = f"t-{uuid.uuid4().hex[:8]}"
    log = await PostgresAuditLog.connect(kit.database_url)
    try:
        await apply_migrations(log.pool, "audit", MIGRATIONS)
        records = []
        for offset, (topic, event) in enumerate(sample_events()):
            data = event.data.model_copy(update={"task_id": task}) if hasattr(event.data, "task_id") else event.data
            event = event.model_copy(update={"data": data, "subject": task if event.subject else None})
            records.append(
                observe(topic=prefix + topic, partition=0, offset=offset, timestamp_ms=1_790_000_000_000 + offset, timestamp_type=0,
                        key=event.key, value=s.encode(event), headers=[], prefix=prefix)
            )  # fmt: skip
        await log.append(records)
    finally:
        await log.close()
    return {
        "TIDEGATE_DATABASE_URL": kit.database_url,
        "TIDEGATE_TOPIC_PREFIX": prefix,
        "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
        "TASK": task,
    }


async def _cli(env: dict[str, str], *args: str) -> Any:
    return await asyncio.to_thread(CliRunner().invoke, cli, ["audit", *args], env=env)


async def test_show_tells_the_story_in_order(env: dict[str, str]) -> None:
    result = await _cli(env, "show", env["TASK"], "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["event_type"] for line in lines][:3] == ["task.submitted", "action.proposed", "action.decided"]
    table = await _cli(env, "show", env["TASK"])
    assert table.exit_code == 0
    assert f"task {env['TASK']}: {len(lines)} records" in table.output
    missing = await _cli(env, "show", "no-such-task")
    assert missing.exit_code == 1


async def test_explain_in_every_format(env: dict[str, str], tmp_path: Path) -> None:
    md = await _cli(env, "explain", env["TASK"], "--format", "md")
    assert md.exit_code == 0, md.output
    assert "## Sources referenced" in md.output
    assert "`no_permit`" in md.output
    out = tmp_path / "x.html"
    html = await _cli(env, "explain", env["TASK"], "--format", "html", "-o", str(out))
    assert html.exit_code == 0, html.output
    assert out.read_text().startswith("<!doctype html>")
    doc = json.loads((await _cli(env, "explain", env["TASK"], "--format", "json")).output)
    assert doc["task_id"] == env["TASK"]
    assert doc["actions"][0]["decisions"][0]["reasons"][0]["code"] == "no_permit"


async def test_search_by_reason_tool_outcome_and_tenant(env: dict[str, str]) -> None:
    result = await _cli(env, "search", "--reason", "no_permit", "--tenant", "acme", "--json")
    assert result.exit_code == 0, result.output
    hits = [json.loads(line) for line in result.output.splitlines()]
    assert [h["event_type"] for h in hits] == ["action.decided"]
    assert hits[0]["task_id"] == env["TASK"]
    by_tool = await _cli(env, "search", "--tool", "tag_ticket", "--outcome", "succeeded", "--json")
    assert [json.loads(line)["event_type"] for line in by_tool.output.splitlines()] == ["action.succeeded"]
    since = await _cli(env, "search", "--since", "2000-01-01", "--until", "2001-01-01", "--json")
    assert since.output == ""


async def test_times_read_as_every_operator_command_reads_them_and_print_fixed_width(env: dict[str, str]) -> None:
    for since in ("now", "-5m", "1.5h", "100000d"):
        result = await _cli(env, "search", "--since", since, "--json")
        assert result.exit_code == 0, (since, result.output)
    everything = await _cli(env, "search", "--since", "100000d", "--until", "now", "--json")
    stamps = [json.loads(line)["at"] for line in everything.output.splitlines()]
    assert stamps[0].endswith(":20.000000Z")  # a whole second keeps its microseconds: the times sort as text
    assert len({len(at) for at in stamps}) == 1
    assert stamps == sorted(stamps)
    inverted = await _cli(env, "search", "--since", "1m", "--until", "2h")
    assert inverted.exit_code == 1
    assert "is not before --until" in inverted.output
    bad = await _cli(env, "search", "--since", "yesterday")
    assert (bad.exit_code, "Traceback" in bad.output) == (1, False)


async def test_an_exported_window_explains_a_task_offline_as_the_database_does(env: dict[str, str], tmp_path: Path) -> None:
    """An auditor's machine: the export file and the audit's public key, no database (auditor1 F4)."""
    log = await PostgresAuditLog.connect(env["TIDEGATE_DATABASE_URL"])
    try:
        checkpointer = Checkpointer(
            log=log, key=SigningKey.load_or_create(Path(env["TIDEGATE_KEYS_DIR"]), "audit"), publish=_nothing,
            checkpoint_topic=env["TIDEGATE_TOPIC_PREFIX"] + "audit.checkpoints", interval_s=60, prefix=env["TIDEGATE_TOPIC_PREFIX"],
        )  # fmt: skip
        assert await checkpointer.tick() is not None
    finally:
        await log.close()
    window = tmp_path / "window.gz"
    exported = await _cli(env, "export", "--since", "1d", "--out", str(window))
    assert exported.exit_code == 0, exported.output
    online = await _cli(env, "explain", env["TASK"], "--format", "md")
    offline_env = env | {"TIDEGATE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "TIDEGATE_TOPIC_PREFIX": "elsewhere."}
    offline = await asyncio.to_thread(
        CliRunner().invoke, cli, ["audit", "explain", env["TASK"], "--archive", str(window), "--offline"], env=offline_env
    )
    assert offline.exit_code == 0, offline.output
    assert offline.output == online.output  # the same story, read from the file alone (its scope, not this machine's prefix)
    refused = await asyncio.to_thread(CliRunner().invoke, cli, ["audit", "explain", env["TASK"], "--offline"], env=offline_env)
    assert refused.exit_code != 0
    assert "give at least one" in refused.output


async def _nothing(event: Any) -> None:
    return None


async def test_search_reads_a_widening_and_its_rollback_as_changes(infra: Any, prefix: str, tmp_path: Path) -> None:
    """Governance probe F8, on PostgreSQL: `search --type control.tenant --json` after the onboarding says what each change did."""
    tenant = f"acme{uuid.uuid4().hex[:6]}"
    base = {"allow_autonomous": True, "known_payees": [f"cus_{n}" for n in range(1001, 1030)], "refund_threshold_usd": 500}
    changes = [(base, "operator"), (base | {"refund_threshold_usd": 700}, "alice"), (base, "bob")]
    log = await PostgresAuditLog.connect(infra.database_url)
    try:
        await apply_migrations(log.pool, "audit", MIGRATIONS)
        records = []
        for offset, (settings, by) in enumerate(changes):
            event = s.ControlTenant.build(s.ControlTenantData(tenant_id=tenant, settings=settings, set_by=by), source="tidegate/cli")
            records.append(
                observe(topic=prefix + "control", partition=0, offset=offset, timestamp_ms=1_790_000_000_000 + 60_000 * offset,
                        timestamp_type=0, key=event.key, value=s.encode(event), headers=[], prefix=prefix)
            )  # fmt: skip
        await log.append(records)
    finally:
        await log.close()
    env = {"TIDEGATE_DATABASE_URL": infra.database_url, "TIDEGATE_TOPIC_PREFIX": prefix, "TIDEGATE_KEYS_DIR": str(tmp_path / "keys")}
    after_onboarding = "2026-09-21T14:14:00Z"  # between the onboarding (14:13:20) and the widening (14:14:20)
    result = await _cli(env, "search", "--type", "control.tenant", "--tenant", tenant, "--since", after_onboarding, "--json")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["summary"] for line in result.output.splitlines()] == [
        f"tenant {tenant}: refund_threshold_usd 500 → 700 by alice",
        f"tenant {tenant}: refund_threshold_usd 700 → 500 by bob",
    ]


SIGNERS = {"task.submitted": "client", "action.proposed": "planner", "action.decided": "policy", "approval.granted": "approval",
           "action.authorized": "policy", "action.succeeded": "executor"}  # fmt: skip


async def test_an_export_checks_every_rows_signature_on_a_laptop_with_the_audit_fingerprint_alone(
    infra: Any, prefix: str, tmp_path: Path
) -> None:
    """auditor F6 on PostgreSQL and the real `export`: each row signed by its own producer, the export read with no keys.

    `export` carries the deployment's signing keys (its keys folders: services', clients') under the attested header;
    the auditor's `explain --offline --trust-key` and `actions --offline` check every row with them. Before, every row
    read `does not verify … unknown_key` there.
    """
    from servicekit import client_key, service_key, sign_event
    from servicekit.authority import LOG_APPEND_TIME, deployment_authority

    keys = tmp_path / "keys"
    keys.mkdir()
    kit = KitSettings(database_url=infra.database_url, topic_prefix=prefix, keys_dir=keys)
    task = f"t-{uuid.uuid4().hex[:8]}"
    alice = client_key(kit, "acme", "alice@acme.example", registering=True)
    check = deployment_authority(kit, history=True).check
    records, offsets = [], {}
    for topic, event in sample_events():
        signer = SIGNERS.get(event.type.removeprefix("tidegate."))
        if signer is None or (event.type == "tidegate.approval.granted" and topic != "approvals"):
            continue
        data = event.data.model_copy(update={"task_id": task}) if hasattr(event.data, "task_id") else event.data
        event = event.model_copy(update={"data": data, "subject": task if event.subject else None})
        signed = sign_event(event, alice if signer == "client" else service_key(kit, signer))
        offsets[topic] = offsets.get(topic, -1) + 1
        records.append(
            observe(topic=prefix + topic, partition=0, offset=offsets[topic], timestamp_ms=1_790_000_000_000 + len(records),
                    timestamp_type=LOG_APPEND_TIME, key=signed.key, value=s.encode(signed), headers=[], prefix=prefix, check=check)
        )  # fmt: skip
    assert all(r.valid for r in records), [r.invalid_reason for r in records]
    log = await PostgresAuditLog.connect(kit.database_url)
    try:
        await apply_migrations(log.pool, "audit", MIGRATIONS)
        await log.append(records)
        checkpointer = Checkpointer(
            log=log, key=SigningKey.load_or_create(keys, "audit"), publish=_nothing,
            checkpoint_topic=prefix + "audit.checkpoints", interval_s=60, prefix=prefix,
        )  # fmt: skip
        assert await checkpointer.tick() is not None
    finally:
        await log.close()
    deployment = {"TIDEGATE_DATABASE_URL": kit.database_url, "TIDEGATE_TOPIC_PREFIX": prefix, "TIDEGATE_KEYS_DIR": str(keys)}
    window = tmp_path / "evidence.jsonl.gz"
    exported = await _cli(deployment, "export", "--since", "100000d", "--out", str(window), "--json")
    assert exported.exit_code == 0, exported.output
    done = json.loads(exported.stdout)
    assert done["signers"] >= 6  # client, planner, policy, approval, executor, audit (and the operator's, if any)
    [fingerprint] = [k["sha256"] for k in done["keys"]]

    (tmp_path / "laptop-keys").mkdir()
    laptop = {"TIDEGATE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "TIDEGATE_KEYS_DIR": str(tmp_path / "laptop-keys")}
    explained = await _cli(laptop, "explain", task, "--archive", str(window), "--offline", "--trust-key", fingerprint, "--format", "json")
    assert explained.exit_code == 0, explained.output
    doc = json.loads(explained.stdout)
    assert (doc["records"], doc["unverified"]) == (len(records), [])
    ledger = await _cli(laptop, "actions", "--archive", str(window), "--offline", "--trust-key", fingerprint, "--format", "json")
    assert ledger.exit_code == 0, ledger.output
    [line] = [json.loads(x) for x in ledger.stdout.splitlines()]
    assert (line["task_id"], line["approval"], line["approvers"], line["unverified_rows"]) == (task, "granted", ["bob"], 0)
    unchecked = await _cli(laptop, "explain", task, "--archive", str(window), "--offline", "--format", "json")
    assert len(json.loads(unchecked.stdout)["unverified"]) == len(records)  # without the fingerprint, nothing the file carries counts
