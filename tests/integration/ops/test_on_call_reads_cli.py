"""The on-call engineer's reads over a real audit log (integrator5 findings 6 and 7; h35's note on task ids).

`tidegate audit explain` of a call the executor recorded `unknown` shows the tool's late ok reply and the follow-up
still pending; `tidegate undo --task` of a task id two tenants used exits 1 naming them, and with `--tenant` proposes
that tenant's undo alone.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import schemas as s
from tests.integration.audit_log_seed import seed_audit_log
from tidegate.cli import app as cli

TOOL = "oa_refund_order"


def _events(task: str) -> list[tuple[str, s.Envelope]]:
    def proposed(action_id: str, tenant: str) -> s.Envelope:
        data = s.ActionProposedData(
            action_id=action_id, task_id=task, tenant_id=tenant, step=1, tool=TOOL, args={"order_id": "o-66"}, proposer="external:client"
        )
        return s.ActionProposed.build(data, source="urn:tidegate:client:external:client")

    def result(action_id: str, tenant: str, status: str) -> s.Envelope:
        ready = s.UndoPlan(status="ready", tool="oa_cancel_refund", args={"order_id": "o-66"}) if status == "succeeded" else None
        data = s.ActionResultData(
            action_id=action_id, task_id=task, tenant_id=tenant, tool=TOOL, status=status, attempts=3, duration_ms=60_000.0,
            result={} if status == "succeeded" else None, undo=ready,
            error=None if status == "succeeded" else s.ErrorInfo(type="timeout", message="no reply within 20.0 s", maybe_applied=True),
        )  # fmt: skip
        return (s.ActionSucceeded if status == "succeeded" else s.ActionUnknown).build(data, source="tidegate/executor")

    late = s.ToolReplyData(
        action_id=f"{task}:acme-slow", task_id=task, tenant_id="acme", tool=TOOL, attempt=3, ok=True, result={"refund_id": "re_66"}
    )
    return [
        ("actions.proposed", proposed(f"{task}:globex", "globex")),
        ("actions.results", result(f"{task}:globex", "globex", "succeeded")),
        ("actions.proposed", proposed(f"{task}:acme", "acme")),
        ("actions.results", result(f"{task}:acme", "acme", "succeeded")),
        ("actions.proposed", proposed(f"{task}:acme-slow", "acme")),
        ("actions.results", result(f"{task}:acme-slow", "acme", "unknown")),
        (f"tools.{TOOL}.replies", s.ToolReply.build(late, source=f"urn:tidegate:tool:{TOOL}")),  # after the executor gave up
    ]


@pytest.fixture
async def env(infra: Any, prefix: str, tmp_path: Path) -> dict[str, str]:
    task = f"oa-slow-{uuid.uuid4().hex[:6]}"
    return await seed_audit_log(infra, prefix, tmp_path, _events(task)) | {"TIDEGATE_RUN_DIR": str(tmp_path), "TASK": task}


async def _cli(env: dict[str, str], *args: str) -> Any:
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env)


async def test_explain_shows_the_late_reply_and_the_pending_follow_up(env: dict[str, str]) -> None:
    task = env["TASK"]
    md = await _cli(env, "audit", "explain", task, "--tenant", "acme")
    assert md.exit_code == 0, md.output
    assert "after the executor gave up: it probably happened; check the system of record" in md.stdout
    assert "unknown, a human follows it up (pending)" in md.stdout
    assert "all ended" not in md.stdout
    doc = json.loads((await _cli(env, "audit", "explain", task, "--tenant", "acme", "--format", "json")).stdout)
    slow = next(a for a in doc["actions"] if a["action_id"] == f"{task}:acme-slow")
    assert [(r["ok"], r["after_end"], r["result"]) for r in slow["late_replies"]] == [(True, True, {"refund_id": "re_66"})]
    assert (slow["follow_up"], doc["follow_ups_pending"], doc["status"]) == ("pending", 1, "open")


async def test_undo_of_a_task_id_two_tenants_used_needs_the_tenant(env: dict[str, str]) -> None:
    task = env["TASK"]
    mixed = await _cli(env, "undo", "--task", task, "--dry-run")
    assert mixed.exit_code == 1
    assert f"task id {task!r} is used by 2 tenants: globex, acme; say whose (--tenant)" in mixed.stderr
    assert mixed.stdout == ""

    acme = await _cli(env, "undo", "--task", task, "--tenant", "acme", "--dry-run")
    assert acme.exit_code == 0, acme.output
    assert f"undo {task}:acme " in acme.stdout
    assert f"{task}:globex" not in acme.stdout
