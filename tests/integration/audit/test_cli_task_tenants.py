"""`tidegate audit explain|show` over a real log where two tenants used one task id: never one story of both (review 5, F4)."""

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


def _events(task: str) -> list[tuple[str, s.Envelope]]:
    def submitted(tenant: str, ticket: str) -> s.TaskSubmitted:
        data = s.TaskSubmittedData(
            task_id=task, tenant_id=tenant, workflow="support_triage", input={"ticket_id": ticket}, requested_by=f"agent@{tenant}.example"
        )
        return s.TaskSubmitted.build(data, source="tidegate/cli")

    proposal = s.ActionProposedData(
        action_id=f"{task}:1.globex", task_id=task, tenant_id="globex", step=1, tool="tag_ticket", args={"ticket_id": "T-2001"},
        proposer="tidegate/planner/playbook",
    )  # fmt: skip
    return [
        ("tasks", submitted("globex", "T-2001")),
        ("actions.proposed", s.ActionProposed.build(proposal, source="tidegate/planner")),
        ("tasks", submitted("acme", "T-1001")),
    ]


@pytest.fixture
async def env(infra: Any, prefix: str, tmp_path: Path) -> dict[str, str]:
    task = f"squat-T1001-{uuid.uuid4().hex[:6]}"
    return await seed_audit_log(infra, prefix, tmp_path, _events(task)) | {"TASK": task}


async def _cli(env: dict[str, str], *args: str) -> Any:
    return await asyncio.to_thread(CliRunner().invoke, cli, ["audit", *args], env=env)


@pytest.mark.parametrize("command", ["explain", "show"])
async def test_a_task_id_of_two_tenants_is_an_error_naming_them_without_tenant(env: dict[str, str], command: str) -> None:
    mixed = await _cli(env, command, env["TASK"])
    assert mixed.exit_code == 1
    assert f"task id {env['TASK']!r} is used by 2 tenants: globex, acme; say whose (--tenant)" in mixed.stderr
    assert mixed.stdout == ""


async def test_explain_and_show_with_a_tenant_tell_that_tenants_task_only(env: dict[str, str]) -> None:
    acme = json.loads((await _cli(env, "explain", env["TASK"], "--tenant", "acme", "--format", "json")).stdout)
    assert (acme["tenant_id"], acme["requested_by"], acme["sources"], acme["actions"]) == (
        "acme", "agent@acme.example", {"ticket_id": "T-1001"}, [],
    )  # fmt: skip
    globex = (await _cli(env, "explain", env["TASK"], "--tenant", "globex")).stdout
    assert "T-2001" in globex
    assert "T-1001" not in globex
    shown = await _cli(env, "show", env["TASK"], "--tenant", "globex", "--json")
    assert shown.exit_code == 0, shown.output
    assert {json.loads(line)["tenant_id"] for line in shown.stdout.splitlines()} == {"globex"}
    nobody = await _cli(env, "explain", env["TASK"], "--tenant", "initech")
    assert nobody.exit_code == 1
    assert f"no record of task or action {env['TASK']!r} of tenant 'initech' in the audit log" in nobody.stderr
