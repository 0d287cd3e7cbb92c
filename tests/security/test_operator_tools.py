"""The operator tools read history as the services do: an event the deployment's keys refuse is skipped, and counted.

The attacker has the `agent` bus login and knows the id of tenant globex's next call (one an outside agent chose
predictably; the planner's own ids cannot be guessed): it writes an unsigned `action.proposed` of that id, with a
huge model cost, before the genuine proposal. The policy service refuses the forgery (`signature_missing`)
and denies the genuine call; `tidegate costs --by tenant` must charge globex for the genuine proposal only,
whether it reads the topics or the audit log, and say what it skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from signers import signed

import schemas as s
from servicekit import ADMIN, AGENT, REPO_ROOT, KitSettings, kafka_options
from services.audit.app import build as build_audit
from services.audit.settings import AuditSettings
from tidegate.ops.recorded import read_audit_window, recorded_window

FORGED_USD = 250_000.0
GENUINE_USD = 0.002


def proposal(task_id: str, usd: float) -> s.ActionProposed:
    data = s.ActionProposedData(
        action_id=f"{task_id}:1", task_id=task_id, tenant_id="globex", step=1, tool="delete_customer_data",
        args={"customer_id": "cus_1"}, proposer="tidegate/planner/playbook", mode="autonomous", cost=s.ProposalCost(usd=usd),
    )  # fmt: skip
    return s.ActionProposed.build(data, source="tidegate/planner")


def denial(p: s.ActionProposed) -> s.ActionDecided:
    d = p.data
    data = s.ActionDecidedData(
        action_id=d.action_id, task_id=d.task_id, tenant_id=d.tenant_id, step=d.step, tool=d.tool, args=d.args,
        action_digest="d", outcome="deny", reasons=[s.Reason(code=s.ReasonCode.HUMAN_ONLY, policy_id="human-only")],
        policy_version="sha256:test", latency_ms=1.0,
    )  # fmt: skip
    return s.ActionDecided.build(data, source="tidegate/policy")


async def send(kit: KitSettings, principal: str, topic: str, value: bytes, key: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, acks="all", **kafka_options(kit, principal))
    await producer.start()
    try:
        await producer.send_and_wait(kit.topic_prefix + topic, value, key=key.encode())
    finally:
        await producer.stop()


def globex(report: dict[str, Any]) -> dict[str, Any]:
    return next(g for g in report["groups"] if g["name"] == "globex")


async def test_a_forged_proposal_charges_no_tenant_in_the_cost_report(kit: KitSettings, tmp_path: Path) -> None:
    task = f"sec-{uuid.uuid4().hex[:8]}"
    genuine = proposal(task, GENUINE_USD)
    audit = build_audit(kit, AuditSettings(batch_max_records=500, checkpoint_interval_s=0.3, topic_discovery_ms=2000))
    await audit.start()
    start = datetime.now(UTC)
    try:
        await send(kit, AGENT, "actions.proposed", s.encode(proposal(task, FORGED_USD)), task)  # the attacker's, first
        await send(kit, ADMIN, "actions.proposed", s.encode(signed(genuine, kit)), task)
        await send(kit, ADMIN, "actions.decided", s.encode(signed(denial(genuine), kit)), task)
        end = datetime.now(UTC) + timedelta(milliseconds=10)
        deadline = time.monotonic() + 30
        while (logged := await read_audit_window(kit.database_url, kit.topic_prefix, start, end)).skipped.total < 1:
            assert time.monotonic() < deadline, "the audit service did not record the window"
            await asyncio.sleep(0.2)
    finally:
        await audit.stop()
    assert len(logged.events) == 2
    assert dict(logged.skipped.counts) == {"signature_missing": 1}
    on_bus = await recorded_window(kit, start, end, principal=ADMIN)
    assert [type(r.event) for r in on_bus.events] == [s.ActionProposed, s.ActionDecided]
    assert on_bus.events[0].event.data.cost.usd == GENUINE_USD
    assert dict(on_bus.skipped.counts) == {"signature_missing": 1}

    env = {
        "TIDEGATE_KAFKA_BOOTSTRAP": kit.kafka_bootstrap,
        "TIDEGATE_TOPIC_PREFIX": kit.topic_prefix,
        "TIDEGATE_DATABASE_URL": kit.database_url,
        "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
        "TIDEGATE_RUN_DIR": str(tmp_path / "run"),
    }
    window = ["--from", start.isoformat(), "--to", end.isoformat()]
    for source in ("topics", "audit"):
        command = [sys.executable, "-m", "tidegate.cli", "costs", "--by", "tenant", "--source", source, "--no-chart", "--json", *window]
        done = subprocess.run(command, env=os.environ | env, capture_output=True, text=True, timeout=120, check=False, cwd=REPO_ROOT)
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(done.stdout)
        assert report["source"] == source
        assert globex(report)["blocked_proposals"] == 1
        assert globex(report)["blocked_usd"] == GENUINE_USD
        assert report["skipped"]["by_reason"] == {"signature_missing": 1}
