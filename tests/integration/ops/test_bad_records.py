"""The tools that read the record never die on it: bad values among good events are skipped with their reasons.

A NaN proposal, invalid JSON, a wrong shape, an unknown type and a NaN outcome are recorded (on the
bus and, through the real audit service, in the audit log) among a good task's events. what-if,
costs, replay and explain each finish, say what they skipped and why, give the right figures for
the good events, and keep their logs out of the report on stdout.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from signers import signed
from typer.testing import CliRunner

import schemas as s
from servicekit import ADMIN, KitSettings, kafka_options
from services.audit.app import build as build_audit
from services.audit.settings import AuditSettings
from services.policy.engine import Controls, decide
from services.policy.facts import Call, History
from tidegate.cli import app
from tidegate.ops.recorded import read_audit_window, recorded_window
from tidegate.ops.whatif import load_pack

LOG_LINE = re.compile(r"\b(DEBUG|INFO|WARNING|ERROR)\b|faststream|aiokafka")
runner = CliRunner()


def _proposal(task_id: str, step: int, tool: str, args: dict[str, Any], usd: float) -> s.ActionProposed:
    data = s.ActionProposedData(
        action_id=f"{task_id}:{step}", task_id=task_id, tenant_id="acme", step=step, tool=tool, args=args,
        proposer="tidegate/planner/playbook", mode="autonomous", cost=s.ProposalCost(usd=usd),
    )  # fmt: skip
    return s.ActionProposed.build(data, source="tidegate/planner")


def _decided(kit: KitSettings, p: s.ActionProposed) -> s.ActionDecided:
    """The decision today's pack takes, as the policy service would have recorded it."""
    verdict = decide(load_pack(kit.policy_dir, kit.tools_dir), Call.from_proposal(p.data), History(), Controls())
    d = p.data
    data = s.ActionDecidedData(
        action_id=d.action_id, task_id=d.task_id, tenant_id=d.tenant_id, step=d.step, tool=d.tool, args=d.args, action_digest="d",
        outcome=verdict.outcome, reasons=list(verdict.reasons), policy_version=verdict.policy_version, latency_ms=1.0,
        facts=verdict.facts, risk=verdict.risk,
    )  # fmt: skip
    return s.ActionDecided.build(data, source="tidegate/policy")


def _outcome(task_id: str, total: float) -> s.TaskCompleted:
    data = s.TaskOutcomeData(
        task_id=task_id, tenant_id="acme", workflow="support_triage", status="completed", summary="done",
        cost=s.TaskCost(model=0.002, tools=total - 0.002, total=total), duration_ms=10.0,
    )  # fmt: skip
    return s.TaskCompleted.build(data, source="tidegate/planner")


async def _rows_at(kit: KitSettings, start: datetime, end: datetime, positions: set[tuple[str, int, int]]) -> list[Any]:
    """The audit's rows (duplicates too) at these (topic, partition, offset) positions: (position, valid, duplicate, event id)."""
    from services.audit import PostgresAuditLog, SearchFilters

    log = await PostgresAuditLog.connect(kit.database_url, max_size=1)
    try:
        rows = await log.search(SearchFilters(since=start, until=end, topic_prefix=kit.topic_prefix, include_duplicates=True))
    finally:
        await log.close()
    found = [(r.topic, r.partition, r.kafka_offset, r.valid, r.duplicate, r.event_id) for r in rows]
    return [row for row in found if row[:3] in positions]


@pytest.fixture
async def recorded(kit: KitSettings, tmp_path: Path) -> dict[str, Any]:
    """Good and bad records on the bus and in the audit log; the window and the task ids."""
    good, bad = f"good-{uuid.uuid4().hex[:6]}", f"bad-{uuid.uuid4().hex[:6]}"
    refund = _proposal(good, 1, "issue_refund", {"payee_id": "cus_1001", "amount_usd": 42.5, "order_id": "O-5001", "reason": "r"}, 0.001)
    tag = _proposal(good, 2, "tag_ticket", {"ticket_id": "T-1007", "tags": ["billing"]}, 0.001)
    nan = s.encode(_proposal(bad, 1, "issue_refund", {"payee_id": "cus_1001", "amount_usd": 1.0, "order_id": "O-1"}, 0.0))
    nan = nan.replace(b'"amount_usd":1.0', b'"amount_usd":NaN')
    wrong_shape = json.dumps({"specversion": "1.0", "type": "tidegate.action.proposed", "data": {"task_id": bad}}).encode()
    unknown = s.encode(tag).replace(b"tidegate.action.proposed", b"tidegate.action.teleported").replace(good.encode(), bad.encode())
    nan_outcome = s.encode(_outcome(bad, 0.5)).replace(b'"total":0.5', b'"total":NaN')
    records: list[tuple[str, bytes, str]] = [
        # The good records signed by their producers, as on a real bus (the audit marks unsigned ones invalid).
        ("actions.proposed", s.encode(signed(refund, kit)), good),
        ("actions.proposed", s.encode(signed(tag, kit)), good),
        ("actions.decided", s.encode(signed(_decided(kit, refund), kit)), good),
        ("actions.decided", s.encode(signed(_decided(kit, tag), kit)), good),
        ("tasks.outcomes", s.encode(signed(_outcome(good, 0.0123), kit)), good),
        ("actions.proposed", nan, bad),
        ("actions.proposed", b'{"specversion": "1.0", "type": "tidegate.action.pro', bad),
        ("actions.proposed", wrong_shape, bad),
        ("actions.proposed", unknown, bad),
        ("tasks.outcomes", nan_outcome, bad),
    ]
    audit = build_audit(kit, AuditSettings(batch_max_records=500, checkpoint_interval_s=0.3, topic_discovery_ms=2000))
    await audit.start()
    producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, acks="all", enable_idempotence=True, **kafka_options(kit, ADMIN))
    await producer.start()
    start = datetime.now(UTC)
    try:
        for topic, value, key in records:
            await producer.send_and_wait(kit.topic_prefix + topic, value, key=key.encode())
        end = datetime.now(UTC) + timedelta(milliseconds=10)  # the window's end is exclusive, to the millisecond
        deadline = time.monotonic() + 30
        while True:  # until the audit log holds the window as the bus does
            on_bus = await recorded_window(kit, start, end, principal=ADMIN)
            logged = await read_audit_window(kit.database_url, kit.topic_prefix, start, end)
            if on_bus.unreadable == 5 and (len(logged.events), logged.unreadable) == (len(on_bus.events), on_bus.unreadable):
                break
            seen = (len(on_bus.events), on_bus.skipped.counts, len(logged.events), logged.skipped.counts)
            if time.monotonic() >= deadline:  # say which records the log lacks, and what rows it holds at their positions
                positions = [{(r.topic, r.partition, r.offset) for r in w.events} for w in (on_bus, logged)]
                lacked = sorted(positions[0] - positions[1])
                rows = await _rows_at(kit, start, end, {(kit.topic_prefix + t, p, o) for t, p, o in lacked})
                raise AssertionError(f"the audit service did not record the window: {seen}; not in it: {lacked}; rows there: {rows}")
            await asyncio.sleep(0.2)
    finally:
        await producer.stop()
        await audit.stop()
    env = {
        "TIDEGATE_KAFKA_BOOTSTRAP": kit.kafka_bootstrap,
        "TIDEGATE_TOPIC_PREFIX": kit.topic_prefix,
        "TIDEGATE_DATABASE_URL": kit.database_url,
        "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
        "TIDEGATE_RUN_DIR": str(tmp_path / "run"),
        "COLUMNS": "200",  # one report line per line
    }
    window = ["--from", start.isoformat(), "--to", end.isoformat()]
    return {"env": env, "window": window, "good": good, "bad": bad, "run_dir": tmp_path / "run"}


def cli(rec: dict[str, Any], *args: str, window: bool = True) -> Any:
    result = runner.invoke(app, [*args, *(rec["window"] if window else [])], env=rec["env"])
    assert result.exit_code == 0, result.output
    return result


def as_a_user(rec: dict[str, Any], *args: str) -> str:
    """Run the command in its own process, as a person does (in-process, loggers made earlier write elsewhere); its stdout."""
    cmd = [sys.executable, "-m", "tidegate.cli", *args, *rec["window"]]
    done = subprocess.run(cmd, env=os.environ | rec["env"], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


SKIPPED_PROPOSALS = {"invalid_event": 1, "invalid_json": 1, "nan": 1, "unknown_type": 1}


def test_every_reader_skips_the_bad_records_with_their_reasons_and_reports_the_good_ones(
    recorded: dict[str, Any], kit: KitSettings
) -> None:
    rec = recorded
    # what-if: the two good proposals are decided again, the four bad ones skipped.
    doc = json.loads(cli(rec, "whatif", "--policy", str(kit.policy_dir), "--json").stdout)
    assert doc["skipped"]["by_reason"] == SKIPPED_PROPOSALS
    assert (doc["evaluated"], doc["unchanged"], doc["flips"], doc["without_recorded_decision"]) == (2, 2, 0, 0)
    text = as_a_user(rec, "whatif", "--policy", str(kit.policy_dir))
    assert "skipped 4: invalid_event 1, invalid_json 1, nan 1, unknown_type 1" in text
    assert not LOG_LINE.search(text), text

    # costs, from the audit log and from the topics: the good task's figures, five skipped.
    for source in ("audit", "topics"):
        doc = json.loads(cli(rec, "costs", "--source", source, "--no-chart", "--json").stdout)
        assert doc["source"] == source
        assert doc["skipped"]["by_reason"] == {**SKIPPED_PROPOSALS, "nan": 2}
        [group] = doc["groups"]
        assert (group["name"], group["completed"], group["cost_per_completed_p50_usd"]) == ("support_triage", 1, 0.0123)
    text = as_a_user(rec, "costs", "--no-chart")
    assert "skipped 5: nan 2, invalid_event 1, invalid_json 1, unknown_type 1" in text
    assert not LOG_LINE.search(text), text

    # replay: the good proposals are decided again in a sandbox (in-process services that log a lot).
    text = as_a_user(rec, "replay", "--idle", "10")
    assert "skipped 5: nan 2, invalid_event 1, invalid_json 1, unknown_type 1" in text
    assert rec["good"] in text
    assert not LOG_LINE.search(text), text
    assert (rec["run_dir"] / "logs" / "replay.log").read_text().strip()  # the logs went to the file
    doc = json.loads(cli(rec, "replay", "--idle", "10", "--json").stdout)
    assert doc["inputs_replayed"] == 2
    assert doc["undecided_now"] == 0

    # explain: the bad task's records are listed with their reasons; the good task is explained in full.
    bad = json.loads(cli(rec, "audit", "explain", rec["bad"], "--format", "json", window=False).stdout)
    assert bad["skipped"] == {**SKIPPED_PROPOSALS, "nan": 2}
    assert sorted(d["code"] for d in bad["dead_letters"]) == ["invalid_event", "invalid_json", "nan", "nan", "unknown_type"]
    assert "Audit records:** 5 (skipped 5: nan 2" in cli(rec, "audit", "explain", rec["bad"], window=False).stdout
    good = json.loads(cli(rec, "audit", "explain", rec["good"], "--format", "json", window=False).stdout)
    assert good["skipped"] == {}
    assert [a["tool"] for a in good["actions"]] == ["issue_refund", "tag_ticket"]
    assert good["costs"]["total_usd"] == 0.0123
