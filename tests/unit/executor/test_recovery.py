"""Crash recovery, copies of an action id, and the re-checks before each attempt (in-memory twins)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

import schemas as s
from servicekit import Reject, authorization_message
from servicekit.toolcontract import ToolError
from services.executor.tools import ToolAnswer
from tests.unit.executor.test_executor import NOW, World, _claimed, make_world


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


async def _crash_mid_call(world: World, event: s.ActionAuthorized, attempts: int = 1) -> None:
    async with world.claims.hold(event.data.action_id) as session:
        await session.claim(_claimed(event))
        await session.running(attempts)  # then the process died


def _signed_under(world: World, event: s.ActionAuthorized, action_id: str) -> s.ActionAuthorized:
    """`event`'s call, signed again as the policy would under `action_id` (a signing bug, a second deployment)."""
    data = event.data.model_copy(update={"action_id": action_id})
    auth = data.authorization.model_copy(update={"signature": world.key.sign(authorization_message(data))})
    return s.ActionAuthorized.build(data.model_copy(update={"authorization": auth}), source="tidegate/policy")


async def test_another_call_signed_under_an_interrupted_action_id_is_never_called(world: World) -> None:
    push = world.authorize("push", {"files": ["x"]})  # unsafe to repeat
    await _crash_mid_call(world, push)
    copy = _signed_under(world, world.authorize("refund", {"amount_usd": 999}), push.data.action_id)
    with pytest.raises(Reject) as refused:
        await world.executor.handle(copy)
    assert refused.value.code == "authorization_replayed"
    assert "differs" in str(refused.value)
    assert world.tool.contexts == []  # neither the refund nor the push again
    [result] = world.published  # the original ended as its own redelivery would end it
    assert (result.type, result.data.tool, result.data.error.type, result.data.attempts) == (
        "tidegate.action.unknown",
        "push",
        "interrupted",
        1,
    )


async def test_another_call_signed_under_a_finished_action_id_is_answered_from_the_record(world: World) -> None:
    first = world.authorize()
    await world.executor.handle(first)
    copy = _signed_under(world, world.authorize(args={"amount_usd": 999}), first.data.action_id)
    with pytest.raises(Reject) as refused:
        await world.executor.handle(copy)
    assert refused.value.code == "authorization_replayed"
    assert "differs" in str(refused.value)
    assert len(world.tool.contexts) == 1
    assert [e.id for e in world.published] == [world.published[0].id] * 2


async def test_recovery_never_goes_past_max_attempts_in_all(world: World) -> None:
    keyed = world.authorize()  # refund: safe to repeat (idempotency key), a write, 3 attempts at most
    await _crash_mid_call(world, keyed, attempts=3)
    await world.executor.handle(keyed)
    assert world.tool.contexts == []
    [result] = world.published
    assert (result.type, result.data.error.type, result.data.attempts, result.data.cost.usd) == (
        "tidegate.action.unknown",
        "interrupted",
        3,
        0.03,
    )
    # Attempts left: only those are made.
    again = world.authorize(args={"amount_usd": 11})
    await _crash_mid_call(world, again, attempts=2)
    world.tool.script = [ToolError("busy", "x", retryable=True)] * 3
    await world.executor.handle(again)
    # `unknown`, not `failed`: the interrupted attempt may have refunded, and `busy` refusals after it cannot say it did not.
    assert (world.published[-1].type, world.published[-1].data.attempts) == ("tidegate.action.unknown", 3)
    assert len(world.tool.contexts) == 1


async def test_start_up_settles_a_safe_call_whose_attempts_are_used_up(world: World) -> None:
    read, keyed = world.authorize("read", {"id": 1}), world.authorize()
    await _crash_mid_call(world, read, attempts=3)
    await _crash_mid_call(world, keyed, attempts=1)
    assert await world.executor.settle_interrupted() == 1
    [result] = world.published
    assert (result.type, result.data.action_id, result.data.attempts) == ("tidegate.action.failed", read.data.action_id, 3)  # a read
    assert world.claims.records[keyed.data.action_id].status == "running"  # attempts left: its redelivery calls again


async def test_an_interrupted_call_costs_the_same_settled_on_redelivery_or_at_start(world: World) -> None:
    on_redelivery = world.authorize("push", {"files": ["a"]})
    await _crash_mid_call(world, on_redelivery, attempts=1)
    await world.executor.handle(on_redelivery)
    await _crash_mid_call(world, world.authorize("push", {"files": ["b"]}), attempts=1)
    await world.executor.settle_interrupted()
    first, second = world.published
    assert (first.data.cost.usd, first.data.duration_ms, first.data.attempts) == (0.01, 0.0, 1)
    assert (second.data.cost.usd, second.data.duration_ms, second.data.attempts) == (0.01, 0.0, 1)


async def test_a_switch_after_a_maybe_applied_error_keeps_the_error_and_says_why_the_retry_stopped(world: World) -> None:
    async def set_switch(seconds: float) -> None:
        world.switches[("acme", "refund")] = "ops stop"

    world.executor.sleep = set_switch
    world.tool.script = [ToolError("timeout", "refund did not answer in 10 s", retryable=True, maybe_applied=True)]
    await world.executor.handle(world.authorize())
    [result] = world.published
    assert (result.type, result.data.error.type, result.data.attempts) == ("tidegate.action.unknown", "timeout", 1)
    assert "refund did not answer" in result.data.error.message
    assert "retry was stopped: kill switch set for refund: ops stop" in result.data.error.message


async def test_an_expiry_after_a_maybe_applied_error_keeps_the_error_and_does_not_dead_letter_the_used_authorization(world: World) -> None:
    now = [NOW]

    async def pass_time(seconds: float) -> None:
        now[0] = NOW + timedelta(seconds=400)

    world.executor.sleep = pass_time
    world.executor.clock = lambda: now[0]
    world.tool.script = [ToolError("http_502", "bad gateway", retryable=True, maybe_applied=True)]
    await world.executor.handle(world.authorize())  # no Reject: the authorization was used
    [result] = world.published
    assert (result.type, result.data.error.type, result.data.attempts) == ("tidegate.action.unknown", "http_502", 1)
    assert "authorization expired" in result.data.error.message


async def test_an_interrupted_call_found_expired_on_redelivery_ends_unknown_and_is_not_dead_lettered(world: World) -> None:
    keyed = world.authorize(ttl_s=60)  # refund: safe to repeat, a write
    await _crash_mid_call(world, keyed)
    world.executor.clock = lambda: NOW + timedelta(seconds=120)  # redelivered after the authorization expired
    await world.executor.handle(keyed)  # no Reject: the interrupted attempt used the authorization
    assert world.tool.contexts == []
    [result] = world.published
    assert (result.type, result.data.error.type, result.data.attempts, result.data.cost.usd) == (
        "tidegate.action.unknown",
        "interrupted",
        1,
        0.01,
    )
    assert "since then: authorization expired at" in result.data.error.message
    record = world.claims.records[keyed.data.action_id]
    assert (record.status, record.error.refusal if record.error else "no error") == ("unknown", None)
    # A copy of it is still dead-lettered as a replay, not as expired.
    with pytest.raises(Reject) as refused:
        await world.executor.handle(keyed.model_copy(update={"id": "another-event"}))
    assert refused.value.code == "authorization_replayed"


async def test_a_recovery_whose_attempts_are_refused_still_says_the_interrupted_one_may_have_taken_effect(world: World) -> None:
    """A refund killed mid-call, then refused on recovery (already refunded; or unreachable to the end), is not `failed`."""
    refused_after = world.authorize()  # refund: keyed, a write
    await _crash_mid_call(world, refused_after, attempts=1)
    world.tool.script = [ToolError("amount_exceeds_charge", "50.00 USD is more than the 0.00 USD left")]  # final, never applied
    await world.executor.handle(refused_after)
    unreachable = world.authorize(args={"amount_usd": 11})
    await _crash_mid_call(world, unreachable, attempts=1)
    world.tool.script = [ToolError("unreachable", "connection refused", retryable=True)] * 2
    await world.executor.handle(unreachable)
    first, second = world.published
    assert (first.type, first.data.attempts, first.data.error.type) == ("tidegate.action.unknown", 2, "amount_exceeds_charge")
    assert "an earlier attempt may have taken effect: interrupted" in first.data.error.message
    assert (second.type, second.data.attempts, second.data.error.type) == ("tidegate.action.unknown", 3, "unreachable")


@pytest.mark.parametrize(("tool", "args"), [("push", {"files": ["x"]}), ("refund", {"amount_usd": 10})])
async def test_an_answer_whose_recording_failed_is_recorded_on_the_next_try_not_called_again_nor_guessed_at(
    world: World, monkeypatch: pytest.MonkeyPatch, tool: str, args: dict[str, object]
) -> None:
    """PostgreSQL restarted while Zendesk answered 200: the note was added, the executor had the answer, yet it ended
    `unknown`, "the executor stopped during a call … a person must check" (connectors probe F3); an idempotent refund
    would have been called again."""
    from services.executor import claims

    finish = claims._MemorySession.finish
    lost = [ConnectionError("connection was closed in the middle of operation")]

    async def finish_once_lost(self: claims._MemorySession, done: claims.ClaimRecord) -> claims.ClaimRecord:
        if lost:
            raise lost.pop()
        return await finish(self, done)

    monkeypatch.setattr(claims._MemorySession, "finish", finish_once_lost)
    event = world.authorize(tool, args)
    world.tool.script = [ToolAnswer({"comment_id": 42})]
    with pytest.raises(ConnectionError):
        await world.executor.handle(event)  # the bus retries the handler, as it does on any infrastructure error
    assert world.published == []
    await world.executor.handle(event)
    [result] = world.published
    assert (result.type, result.data.result, result.data.attempts) == ("tidegate.action.succeeded", {"comment_id": 42}, 1)
    assert len(world.tool.contexts) == 1  # called once
    assert world.claims.records[event.data.action_id].status == "succeeded"
    assert world.executor.held == {}


async def test_a_call_whose_executor_was_killed_mid_attempt_says_so_in_its_result(world: World) -> None:
    """The on-call's F4: `kill -9` of the executor during attempt 1 of a keyed refund; the restarted executor called it again
    twice, both timed out. The result said "timeout: … did not answer", 3 attempts, and nothing of the crash between them:
    the next morning's `audit explain` could not tell that an attempt was cut off mid-call."""
    keyed = world.authorize()  # refund: safe to repeat (idempotency key), 3 attempts at most
    await _crash_mid_call(world, keyed, attempts=1)
    world.tool.script = [ToolError("timeout", "refund did not answer in 10 s", retryable=True, maybe_applied=True)] * 2
    await world.executor.handle(keyed)
    [result] = world.published
    assert (result.type, result.data.error.type, result.data.attempts) == ("tidegate.action.unknown", "timeout", 3)
    assert result.data.error.message.startswith("refund did not answer in 10 s")
    assert "the executor stopped during attempt 1 of refund" in result.data.error.message
