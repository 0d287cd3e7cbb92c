"""The on-call person after `TidegateDeadLetters` paged: which records were refused, by whom, why, and what they held.

SRE probe: the alert's first look said "read the `deadletter` topic", which no command reads; `tidegate audit search
--type event.rejected --json` found the rows but printed only a summary, without the refused value, its key or its
size: what was lost could not be seen, nor sent again, without a Kafka client and the admin's login.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import schemas as s
from servicekit import KitSettings, apply_migrations
from services.audit.app import MIGRATIONS
from services.audit.records import observe
from services.audit.repository import PostgresAuditLog
from tidegate.cli import app as cli
from tidegate.commands._common import console

REFUSED = '{"specversion": "1.0", "type": "tidegate.action.proposed", "data": {"tool": "issue_refund", "amount_usd": 1e999}}'


@pytest.fixture
async def env(infra: Any, prefix: str, tmp_path: Path) -> dict[str, str]:
    """A log holding one dead letter (a proposal the policy refused) beside an ordinary record."""
    kit = KitSettings(database_url=infra.database_url, topic_prefix=prefix, keys_dir=tmp_path / "keys")
    task = f"t-{uuid.uuid4().hex[:8]}"
    rejected = s.EventRejected.build(
        s.EventRejectedData(
            tenant_id="acme", task_id=task, topic=prefix + "actions.proposed", partition=3, offset=41, key=task,
            raw_value=REFUSED, size=len(REFUSED), sha256=hashlib.sha256(REFUSED.encode()).hexdigest(),
            code="not_finite", error="a number that overflows a double", service="policy",
        ),
        source="tidegate/policy",
    )  # fmt: skip
    submitted = s.TaskSubmitted.build(
        s.TaskSubmittedData(task_id=task, tenant_id="acme", workflow="support_triage", requested_by="demo@acme.example", input={}),
        source="tidegate/cli",
    )
    log = await PostgresAuditLog.connect(kit.database_url)
    try:
        await apply_migrations(log.pool, "audit", MIGRATIONS)
        await log.append(
            [
                observe(topic=prefix + topic, partition=0, offset=offset, timestamp_ms=1_790_000_000_000 + offset, timestamp_type=0,
                        key=task.encode(), value=s.encode(event), headers=[], prefix=prefix)
                for offset, (topic, event) in enumerate([("tasks", submitted), ("deadletter", rejected)])
            ]
        )  # fmt: skip
    finally:
        await log.close()
    return {"TIDEGATE_DATABASE_URL": kit.database_url, "TIDEGATE_TOPIC_PREFIX": prefix, "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
            "TASK": task}  # fmt: skip


async def _cli(env: dict[str, str], *args: str) -> Any:
    return await asyncio.to_thread(CliRunner().invoke, cli, ["audit", *args], env=env)


async def test_the_dead_letters_of_a_task_show_what_was_refused_whole(env: dict[str, str]) -> None:
    result = await _cli(env, "search", "--dead-letters", "--task", env["TASK"], "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["event_type"] for line in lines] == ["event.rejected"]  # only the dead letter, not the task's other record
    dead = lines[0]["dead_letter"]
    assert dead["raw_value"] == REFUSED  # what was refused, byte for byte: to see it, or to send it again
    assert (dead["service"], dead["code"], dead["partition"], dead["offset"], dead["key"]) == ("policy", "not_finite", 3, 41, env["TASK"])
    assert (dead["size"], dead["sha256"]) == (len(REFUSED), hashlib.sha256(REFUSED.encode()).hexdigest())

    other = await _cli(env, "search", "--task", env["TASK"], "--json")
    assert {json.loads(line)["event_type"]: json.loads(line)["dead_letter"] for line in other.stdout.splitlines()}["task.submitted"] is None

    mixed = await _cli(env, "search", "--dead-letters", "--type", "action.decided")
    assert mixed.exit_code != 0
    assert "cannot go with --type action.decided" in mixed.output


@pytest.mark.parametrize("width", [80, 100])
async def test_an_80_column_terminal_reads_each_record_whole(env: dict[str, str], width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight columns at 80 wrapped a dead letter's summary to 8 letters a line ("dead-l…"), a record 15 lines."""
    # The console's own width, undone to None (read from COLUMNS again): patching `width` left the width it had then fixed
    # for every later command of the run, and `topics check` tables at COLUMNS=200 wrapped at 80.
    monkeypatch.setattr(console, "_width", width)
    result = await _cli(env, "search", "--task", env["TASK"])
    assert result.exit_code == 0, result.output
    cells = [row.split("│")[3].strip() for row in result.stdout.splitlines() if row.count("│") == 4]  # "what happened"
    text = " ".join(cells)
    assert "dead-lettered by policy from" in text
    assert "not_finite: a number that overflows a double" in " ".join(text.split())
    assert f"task {env['TASK']}" in text  # where and whose, on the line below
    assert "…" not in result.stdout  # nothing cut


async def test_garbage_on_the_dead_letter_topic_is_listed_by_invalid_not_by_dead_letters(env: dict[str, str], infra: Any) -> None:
    """A service's Kafka login wrote garbage on `deadletter`: no service reads it, so the log is its only trace (oncall22 F1).

    `--dead-letters` lists dead letters (`event.rejected`); the garbage was not one, and nothing listed it.
    """
    prefix = env["TIDEGATE_TOPIC_PREFIX"]
    log = await PostgresAuditLog.connect(env["TIDEGATE_DATABASE_URL"])
    try:
        await log.append(
            [observe(topic=prefix + "deadletter", partition=3, offset=7, timestamp_ms=1_790_000_000_100, timestamp_type=1,
                     key=b"junk", value=b"garbage from planner", headers=[], prefix=prefix)]
        )  # fmt: skip
    finally:
        await log.close()

    found = await _cli(env, "search", "--invalid", "--json")
    assert found.exit_code == 0, found.output
    lines = [json.loads(line) for line in found.stdout.splitlines()]
    assert [(line["topic"], line["partition"], line["offset"], line["valid"]) for line in lines] == [(prefix + "deadletter", 3, 7, False)]
    assert lines[0]["summary"].startswith("not a valid event (not JSON")  # what it is not, at 3 a.m.

    dead = await _cli(env, "search", "--dead-letters", "--json")
    assert [json.loads(line)["offset"] for line in dead.stdout.splitlines()] == [1]  # the genuine dead letter alone
