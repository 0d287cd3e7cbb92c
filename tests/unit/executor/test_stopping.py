"""A process that stops between two attempts of a call: the action waits for the next process, which makes the next attempt.

Before, a stop during the backoff left the action `running`, so the next process took it for a call cut
off mid-way: a tool unsafe to repeat ended `unknown` (a person had to check a call that had certainly not
happened), and a stop whose grace outlasted the backoff started the next attempt only to cut it off.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest

import schemas as s
from servicekit.toolcontract import ToolError
from services.executor.executor import Executor
from tests.unit.executor.test_executor import NOW, World, make_world


@pytest.fixture
def world(tmp_path: Path) -> World:
    world = make_world(tmp_path)
    world.executor.stopping = asyncio.Event()
    return world


def _stops_in_backoff(world: World) -> None:
    """The process is told to stop while it waits between two attempts; the wait itself never ends on its own."""

    async def backoff(seconds: float) -> None:
        world.sleeps.append(seconds)
        assert world.executor.stopping is not None
        world.executor.stopping.set()
        await asyncio.Event().wait()

    world.executor.sleep = backoff


async def _handled_until_stopped(executor: Executor, event: s.ActionAuthorized) -> None:
    """Handle `event` until the handler parks; then cancel it, as the stop's grace ending does."""
    handling = asyncio.ensure_future(executor.handle(event))
    await asyncio.sleep(0.05)
    assert not handling.done(), "the handler must not return (its record would be committed) while the action is unfinished"
    handling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handling


def _next_process(world: World) -> Executor:
    """The executor of the process that starts next: same claims, same tool, not stopping; its waits are recorded, not slept."""

    async def sleep(seconds: float) -> None:
        world.sleeps.append(seconds)

    return dataclasses.replace(world.executor, stopping=asyncio.Event(), sleep=sleep)


async def test_a_call_unsafe_to_repeat_stopped_in_its_backoff_is_called_again_by_the_next_process(world: World) -> None:
    push = world.authorize("push", {"files": ["x"]})  # not idempotent, no idempotency key: unsafe to repeat
    world.tool.script = [ToolError("rate_limited", "429", retryable=True, retry_after_s=0.5)]  # refused: certainly not applied
    _stops_in_backoff(world)
    await _handled_until_stopped(world.executor, push)
    record = world.claims.records[push.data.action_id]
    assert (record.status, record.attempts, record.error.type if record.error else None) == ("waiting", 1, "rate_limited")
    assert record.retry_at == NOW + timedelta(seconds=0.5)  # the Retry-After, kept for the next process
    assert world.published == []

    await _next_process(world).handle(push)  # the authorization, never committed, is read again
    [result] = world.published
    assert (result.type, result.data.attempts) == ("tidegate.action.succeeded", 2)  # not `unknown`/`interrupted`
    assert len(world.tool.contexts) == 2
    assert world.sleeps[-1] == 0.5  # its clock has not moved: it waits out what is left of the backoff


async def test_a_stopping_process_starts_no_call(world: World) -> None:
    assert world.executor.stopping is not None
    world.executor.stopping.set()
    event = world.authorize()
    await _handled_until_stopped(world.executor, event)
    assert world.tool.contexts == []
    assert event.data.action_id not in world.claims.records  # not even claimed: the next process decides all of it


async def test_an_error_that_may_have_taken_effect_is_kept_across_the_stop(world: World) -> None:
    refund = world.authorize()  # keyed: safe to repeat, a write, 3 attempts
    world.tool.script = [ToolError("timeout", "refund did not answer", retryable=True, maybe_applied=True)]
    _stops_in_backoff(world)
    await _handled_until_stopped(world.executor, refund)
    world.tool.script = [ToolError("http_503", "unavailable", retryable=True)] * 2
    await _next_process(world).handle(refund)
    [result] = world.published
    # The first attempt may have refunded: the later refusals cannot say it did not, so the outcome is unknown, not failed.
    assert (result.type, result.data.attempts, result.data.error.type) == ("tidegate.action.unknown", 3, "http_503")
    assert result.data.cost.usd == pytest.approx(0.03)


async def test_a_kill_switch_set_while_no_process_ran_stops_the_retry_and_keeps_its_error(world: World) -> None:
    push = world.authorize("push", {"files": ["x"]})
    world.tool.script = [ToolError("rate_limited", "429", retryable=True)]
    _stops_in_backoff(world)
    await _handled_until_stopped(world.executor, push)
    world.switches[("acme", "push")] = "ops stop"
    await _next_process(world).handle(push)  # no Reject: the authorization was used by the first attempt
    [result] = world.published
    assert (result.type, result.data.attempts, result.data.error.type) == ("tidegate.action.failed", 1, "kill_switch")
    assert "stopped the retry after rate_limited" in result.data.error.message
    assert len(world.tool.contexts) == 1
