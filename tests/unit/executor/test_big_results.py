"""A result or an error too large for the bus: the claim keeps the whole, the event carries a stand-in that says so."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydantic import ValidationError

import schemas as s
from servicekit import KitSettings, ToolCatalog
from servicekit.toolcontract import ToolError
from services.executor.app import _result_bound
from services.executor.results import ERROR_MESSAGE_CHARS, PREVIEW_CHARS
from services.executor.settings import DEFAULT_MAX_RESULT_BYTES, ExecutorSettings
from services.executor.tools import ToolAnswer
from tests.unit.executor.test_executor import World, make_world, tool_spec

BIG = {"rows": [{"id": i, "text": "é" * 100} for i in range(10_000)]}  # ~2.3 MB of JSON: over the producer's 1 MiB


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def event_bytes(world: World, event: s.Envelope) -> int:
    """The size of `event` as it went out: the result event the claim keeps is those bytes."""
    kept = world.claims.records[event.data.action_id].result_event
    assert kept is not None
    return len(kept.encode())


async def test_a_result_over_the_bound_is_kept_whole_and_its_event_carries_a_stand_in_that_says_so(world: World) -> None:
    world.tool.script = [ToolAnswer(BIG)]
    event = world.authorize()
    await world.executor.handle(event)
    [result] = world.published
    assert isinstance(result, s.ActionSucceeded)
    text = s.canonical_json(BIG)
    stand_in = result.data.result
    assert stand_in is not None
    assert stand_in["truncated"] is True
    assert (stand_in["bytes"], stand_in["sha256"]) == (len(text), hashlib.sha256(text).hexdigest())
    assert stand_in["preview"] == text.decode()[:PREVIEW_CHARS]
    assert stand_in["kept_in"] == "executor.actions"
    assert f"{len(text)} bytes" in stand_in["message"]
    assert world.claims.records[event.data.action_id].result == BIG  # nothing lost: the claim row keeps the whole
    assert event_bytes(world, result) <= DEFAULT_MAX_RESULT_BYTES
    assert (result.data.attempts, result.data.cost.usd) == (1, 0.01)


async def test_the_bound_is_the_setting_and_a_result_that_fits_goes_whole(world: World) -> None:
    medium = {"text": "x" * 100_000}  # fits the broker's 1 MiB, not a 64 KiB bound
    world.executor.max_result_bytes = 64 * 1024
    world.tool.script = [ToolAnswer({"ok": "small"}), ToolAnswer(medium)]
    await world.executor.handle(world.authorize())
    await world.executor.handle(world.authorize())
    small_result, medium_result = world.published
    assert small_result.data.result == {"ok": "small"}
    assert medium_result.data.result["truncated"] is True
    assert medium_result.data.result["bytes"] == len(s.canonical_json(medium))
    assert event_bytes(world, medium_result) <= 64 * 1024


async def test_a_redelivery_publishes_the_same_stand_in_event(world: World) -> None:
    world.tool.script = [ToolAnswer(BIG)]
    event = world.authorize()
    await world.executor.handle(event)
    await world.executor.handle(event)
    first, again = world.published
    assert again.id == first.id
    assert again.data.result == first.data.result
    assert world.executor.calls == 1


@pytest.mark.parametrize(
    "raised",
    [
        ToolError("x" * 5_000_000, "y" * 3_000_000),  # a python tool's (or an outside tool's reply's) own error
        RuntimeError("z" * 3_000_000),  # a bug in a tool: its exception's text
    ],
)
async def test_an_error_message_is_bounded_in_the_event_and_kept_whole(world: World, raised: Exception) -> None:
    world.tool.script = [raised]
    event = world.authorize("push")  # not safe to repeat: one attempt
    await world.executor.handle(event)
    [result] = world.published
    assert result.data.error is not None
    assert len(result.data.error.type) <= 200
    assert len(result.data.error.message) < ERROR_MESSAGE_CHARS + 200
    assert "characters in all; the whole is kept in executor.actions" in result.data.error.message
    kept = world.claims.records[event.data.action_id].error
    assert kept is not None
    assert len(kept.message) >= 3_000_000
    assert event_bytes(world, result) <= DEFAULT_MAX_RESULT_BYTES


async def test_an_undo_plan_too_large_for_the_event_gives_way_to_one_that_says_where_it_is_kept(world: World) -> None:
    undo = {"tool": "restore_doc", "args": {"doc_id": "args.doc_id", "body": "result.old_body"}}
    catalog = {
        "replace_doc": tool_spec("replace_doc", risk="write_low", undo=undo),
        "restore_doc": tool_spec("restore_doc", risk="write_low"),
    }
    world.executor.catalog = ToolCatalog(catalog)
    old_body = "o" * 600_000
    world.tool.script = [ToolAnswer({"doc_id": "D-1", "old_body": old_body})]
    event = world.authorize("replace_doc", {"doc_id": "D-1"})
    await world.executor.handle(event)
    [result] = world.published
    assert result.data.result["truncated"] is True
    plan = result.data.undo
    assert plan is not None
    assert (plan.status, plan.tool) == ("unavailable", "restore_doc")
    assert "executor.undo_plans" in plan.message
    assert "ready" in plan.message
    assert world.executor.undo.plans[event.data.action_id].args == {"doc_id": "D-1", "body": old_body}  # type: ignore[attr-defined]
    assert event_bytes(world, result) <= DEFAULT_MAX_RESULT_BYTES


def test_the_bound_is_a_setting_with_headroom_below_what_consumers_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ExecutorSettings().max_result_bytes == 256 * 1024
    monkeypatch.setenv("TIDEGATE_EXECUTOR_MAX_RESULT_BYTES", "131072")
    assert ExecutorSettings().max_result_bytes == 131072
    for bad in ("1048576", "1000", "lots"):
        monkeypatch.setenv("TIDEGATE_EXECUTOR_MAX_RESULT_BYTES", bad)
        with pytest.raises(ValidationError, match="max_result_bytes"):
            ExecutorSettings()


def test_the_bound_stays_under_what_a_deployment_s_consumers_parse(tmp_path: Path) -> None:
    lowered = KitSettings(max_value_bytes=300 * 1024, keys_dir=tmp_path)
    assert _result_bound(lowered, ExecutorSettings(max_result_bytes=256 * 1024)) == 236 * 1024  # 64 KiB of room for the envelope
    assert _result_bound(KitSettings(keys_dir=tmp_path), ExecutorSettings(max_result_bytes=256 * 1024)) == 256 * 1024
