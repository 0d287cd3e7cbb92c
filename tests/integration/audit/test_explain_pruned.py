"""`audit explain`/`show` of a task the prune took (platform5 finding 6): the prune is named, and `--archive` tells it whole.

Before, a task archived and pruned was "no record of task or action … in the audit log", as a typo is, and a task cut
by the prune was explained with "Submitted: -" and nothing saying its start had been pruned. Real tables: the rows
are appended and checkpointed as the audit service does, archived and pruned through the CLI.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

import schemas as s
from servicekit import KitSettings, SigningKey, apply_migrations
from services.audit.app import MIGRATIONS
from services.audit.handlers import Checkpointer
from services.audit.records import observe
from services.audit.repository import PostgresAuditLog
from tests.integration.audit.test_retention import _cli, _ignore
from tests.integration.audit.test_retention import kit as kit  # the fixture: the session's database, no Kafka

_NEXT: dict[tuple[str, str], int] = {}  # the next offset of each (prefix, topic)


def _submitted(task: str) -> tuple[str, s.Envelope]:
    data = s.TaskSubmittedData(task_id=task, tenant_id="acme", workflow="refunds", input={"ticket": "T-1"}, requested_by="alice@acme.ex")
    return "tasks", s.TaskSubmitted.build(data, source="tidegate/cli")


def _completed(task: str) -> tuple[str, s.Envelope]:
    data = s.TaskOutcomeData(task_id=task, tenant_id="acme", workflow="refunds", status="completed", summary="done", duration_ms=9.0)
    return "tasks.outcomes", s.TaskCompleted.build(data, source="tidegate/planner")


async def _append_and_checkpoint(kit: KitSettings, events: list[tuple[str, s.Envelope]]) -> None:
    """`events` on partition 0 of their topics, after what the log holds, then a signed checkpoint (as the audit service takes them)."""
    log = await PostgresAuditLog.connect(kit.database_url)
    try:
        await apply_migrations(log.pool, "audit", MIGRATIONS)
        batch = []
        for topic, event in events:
            offset = _NEXT.get((kit.topic_prefix, topic), 0)
            _NEXT[(kit.topic_prefix, topic)] = offset + 1
            batch.append(
                observe(topic=kit.topic_prefix + topic, partition=0, offset=offset, timestamp_ms=1_790_000_000_000 + len(_NEXT) + offset,
                        timestamp_type=0, key=event.key, value=s.encode(event), headers=[], prefix=kit.topic_prefix)
            )  # fmt: skip
        await log.append(batch)
        checkpointer = Checkpointer(
            log=log, key=SigningKey.load_or_create(kit.keys_dir, "audit"), publish=_ignore,
            checkpoint_topic=kit.topic_prefix + "audit.checkpoints", interval_s=60, prefix=kit.topic_prefix,
        )  # fmt: skip
        assert await checkpointer.tick() is not None
    finally:
        await log.close()


@pytest.fixture
async def pruned(kit: KitSettings, tmp_path: Path) -> tuple[KitSettings, Path, str, str]:
    """An old task, wholly archived and pruned, and one cut by the prune (submitted before it, completed after)."""
    old, cut = f"t-old-{uuid.uuid4().hex[:6]}", f"t-cut-{uuid.uuid4().hex[:6]}"
    # Each chain's head row at the checkpoint stays as its anchor: another task's records end both chains.
    filler = f"t-filler-{uuid.uuid4().hex[:6]}"
    await _append_and_checkpoint(kit, [_submitted(old), _completed(old), _submitted(cut), _submitted(filler), _completed(filler)])
    assert (await _cli(kit, "explain", old)).exit_code == 0  # before the prune, the log tells it
    await _append_and_checkpoint(kit, [_completed(cut)])
    archive = tmp_path / "audit-archive-1.jsonl.gz"
    result = await _cli(kit, "archive", "--through-checkpoint", "1", "--out", str(archive), "--prune")
    assert result.exit_code == 0, result.output
    return kit, archive, old, cut


async def test_a_pruned_task_is_said_to_be_in_the_archive_and_explained_from_it(pruned: tuple[KitSettings, Path, str, str]) -> None:
    kit, archive, old, _ = pruned
    for command in ("explain", "show"):
        result = await _cli(kit, command, old)
        assert result.exit_code == 1
        assert f"no record of task or action '{old}' in the audit log; the log before " in result.said
        assert "(checkpoint 1) was archived and pruned by " in result.said
        assert f"`tidegate audit explain {old} --archive FILE` reads them" in result.said

    told = await _cli(kit, "explain", old, "--archive", str(archive), "--format", "json")
    assert told.exit_code == 0, told.output
    explained: dict[str, Any] = json.loads(told.stdout)
    assert (explained["requested_by"], explained["status"], explained["records"]) == ("alice@acme.ex", "completed", 2)
    shown = await _cli(kit, "show", old, "--archive", str(archive), "--json")
    assert [json.loads(line)["event_type"] for line in shown.stdout.splitlines()] == ["task.submitted", "task.completed"]


async def test_a_task_cut_by_the_prune_says_its_start_was_pruned(pruned: tuple[KitSettings, Path, str, str]) -> None:
    kit, archive, _, cut = pruned
    result = await _cli(kit, "explain", cut, "--format", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["submitted_at"] is None
    assert f"note: task '{cut}' has no task.submitted in the log, and the log before " in result.said
    assert "if it began before then, its start was pruned and is in that archive" in result.said

    whole = await _cli(kit, "explain", cut, "--archive", str(archive), "--format", "json")
    assert whole.exit_code == 0
    assert json.loads(whole.stdout)["submitted_at"] is not None
    assert "note:" not in whole.said


async def test_an_id_never_logged_in_a_log_never_pruned_is_only_not_found(kit: KitSettings) -> None:
    await _append_and_checkpoint(kit, [_submitted(f"t-{uuid.uuid4().hex[:6]}")])
    result = await _cli(kit, "explain", "t-typo")
    assert result.exit_code == 1
    assert result.said == "error: no record of task or action 't-typo' in the audit log"
