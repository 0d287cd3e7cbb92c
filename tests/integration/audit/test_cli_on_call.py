"""`tidegate audit show|explain|search` from an action id, and who asked for an approval, over a real log (on-call's questions)."""

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
from servicekit import KitSettings, apply_migrations
from services.audit.app import MIGRATIONS
from services.audit.records import observe
from services.audit.repository import PostgresAuditLog
from tidegate.cli import app as cli

REQUESTER = "demo@acme.example"


@pytest.fixture
async def env(infra: Any, prefix: str, tmp_path: Path) -> dict[str, str]:
    """A log of the contract's sample events for a task of this test's own, its action named as a system of record sees it."""
    kit = KitSettings(database_url=infra.database_url, topic_prefix=prefix, keys_dir=tmp_path / "keys")
    task = f"t-{uuid.uuid4().hex[:8]}"
    action = f"{uuid.uuid4().hex[:12]}:4.56f132daa1aef52a4e4e"  # an outside agent's id: it does not start with the task id
    log = await PostgresAuditLog.connect(kit.database_url)
    try:
        await apply_migrations(log.pool, "audit", MIGRATIONS)
        records = []
        for offset, (topic, event) in enumerate(sample_events()):
            update: dict[str, Any] = {"task_id": task} if hasattr(event.data, "task_id") else {}
            if getattr(event.data, "action_id", None) == "a-1":
                update["action_id"] = action
            if isinstance(event.data, s.ApprovalData):
                update["requested_by"] = REQUESTER
            source = "tidegate/approval" if isinstance(event, s.ApprovalExpired) else event.source  # the service's clock expires it
            event = event.model_copy(
                update={"data": event.data.model_copy(update=update), "subject": task if event.subject else None, "source": source}
            )
            records.append(
                observe(topic=prefix + topic, partition=0, offset=offset, timestamp_ms=1_790_000_000_000 + offset, timestamp_type=0,
                        key=event.key, value=s.encode(event), headers=[], prefix=prefix)
            )  # fmt: skip
        await log.append(records)
    finally:
        await log.close()
    return {"TIDEGATE_DATABASE_URL": kit.database_url, "TIDEGATE_TOPIC_PREFIX": prefix, "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
            "TASK": task, "ACTION": action}  # fmt: skip


async def _cli(env: dict[str, str], *args: str) -> Any:
    return await asyncio.to_thread(CliRunner().invoke, cli, ["audit", *args], env=env)


async def test_show_and_explain_take_an_action_id_and_say_whose_task_it_is(env: dict[str, str]) -> None:
    by_task = await _cli(env, "show", env["TASK"], "--json")
    by_action = await _cli(env, "show", env["ACTION"], "--json")
    assert by_action.exit_code == 0, by_action.output
    assert by_action.stdout == by_task.stdout  # the same story, the task's
    assert f"{env['ACTION']} is an action id: it belongs to task {env['TASK']}" in by_action.stderr
    doc = json.loads((await _cli(env, "explain", env["ACTION"], "--format", "json")).stdout)
    assert doc["task_id"] == env["TASK"]
    missing = await _cli(env, "explain", "no-such-action:1.00")
    assert missing.exit_code == 1
    assert "no record of task or action 'no-such-action:1.00'" in missing.output


async def test_explain_of_an_approval_id_says_it_is_one_and_where_its_task_is(env: dict[str, str]) -> None:
    """The approver2am probe: the morning after, the on-call gave `explain` the chat message's `ap-…` and read "no record"."""
    missing = await _cli(env, "explain", "ap-0123456789abcdef")
    assert missing.exit_code == 1
    said = " ".join(missing.output.split())
    assert "no record of task or action 'ap-0123456789abcdef' in the audit log" in said
    assert "ap-0123456789abcdef is an approval id: give the task or action id it was raised for" in said
    assert "`tidegate approvals show ap-0123456789abcdef` prints (task …, action …)" in said


async def test_search_by_action_id(env: dict[str, str]) -> None:
    result = await _cli(env, "search", "--action", env["ACTION"], "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert lines
    assert {line["task_id"] for line in lines} == {env["TASK"]}
    assert "approval.granted" in {line["event_type"] for line in lines}
    other = await _cli(env, "search", "--action", "a-1", "--json")  # the sample's own id is not in this log
    assert other.output.strip() == ""


async def test_search_with_more_matches_than_its_limit_shows_the_newest_and_says_so(env: dict[str, str]) -> None:
    """At 2 a.m. the incident is at the end of the window: a limit keeps the newest records, and stderr says more match."""
    everything = await _cli(env, "search", "--task", env["TASK"], "--json")
    assert everything.stderr == ""  # all of them: nothing to say
    offsets = [json.loads(line)["offset"] for line in everything.stdout.splitlines()]
    assert len(offsets) > 3
    cut = await _cli(env, "search", "--task", env["TASK"], "--limit", "3", "--json")
    assert cut.exit_code == 0, cut.output
    assert [json.loads(line)["offset"] for line in cut.stdout.splitlines()] == offsets[-3:]  # the newest, oldest first
    assert "more than 3 records match: these are the newest 3" in cut.stderr  # it kept the oldest 3, and said nothing
    table = await _cli(env, "search", "--task", env["TASK"], "--limit", "3")
    assert "3 records (the newest; more match" in table.stdout


async def test_explain_names_who_requested_an_approval_and_that_the_service_expired_one(env: dict[str, str]) -> None:
    md = (await _cli(env, "explain", env["TASK"])).stdout
    assert f"ap-1 requested by {REQUESTER} (the proposal's requester)" in md
    assert "requested by -" not in md
    assert "expired by -" not in md
    assert "expired unanswered: closed by tidegate/approval at its expiry, no human decided" in md
    html = (await _cli(env, "explain", env["TASK"], "--format", "html")).stdout
    assert f"requested by {REQUESTER}" in html
