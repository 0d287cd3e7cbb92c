"""A served function's failure as the real executor takes it: retried when it says so, `unknown` (a follow-up) if it may have happened."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import Stack

from tidegate.client import ClientSettings, Failed, GovernanceError, ServedCall, Tidegate, ToolFailed, governed


async def test_a_retryable_failure_is_tried_again_and_the_second_attempt_runs(stack: Stack, client_settings: ClientSettings) -> None:
    keys: list[tuple[str, int]] = []
    async with Tidegate(client_settings) as tg:

        @governed("reorder_stock", client=tg)
        async def reorder_stock(sku: str, quantity: int, tidegate_call: ServedCall | None = None) -> str:
            assert tidegate_call is not None
            keys.append((tidegate_call.idempotency_key, tidegate_call.attempt))
            if len(keys) == 1:
                raise ToolFailed("supplier API answered 503: nothing was ordered", retryable=True)
            return f"PO-{sku}"

        assert await reorder_stock("KB-1", 3) == "PO-KB-1"
    [(first_key, first), (second_key, second)] = keys
    assert (first, second) == (1, 2)
    assert first_key == second_key  # the action id, the idempotency key to hand the supplier


@pytest.mark.parametrize(
    "raised",
    [
        ToolFailed("payments API read timed out after the request was sent", maybe_applied=True),
        RuntimeError("payments API said 502 Bad Gateway"),  # not the function's word: how far it got is unknown
    ],
)
async def test_a_failure_that_may_have_taken_effect_ends_unknown_with_a_follow_up(
    stack: Stack, client_settings: ClientSettings, raised: Exception
) -> None:
    ran: list[str] = []
    async with Tidegate(client_settings) as tg:

        @governed("tag_order", client=tg)
        def tag_order(order_id: str, tag: str) -> str:
            ran.append(order_id)
            raise raised

        with pytest.raises(GovernanceError) as failed:
            await tag_order("O-1", "vip")
    outcome = failed.value.outcome
    assert isinstance(outcome, Failed)
    assert outcome.status == "unknown", outcome
    assert outcome.error is not None
    assert str(raised) in outcome.error.message
    assert ran == ["O-1"]  # not repeated: it may have happened
    await _follow_up_resolved(stack, outcome.action_id)


async def test_a_call_past_its_deadline_is_cancelled_and_ends_unknown(stack: Stack, client_settings: ClientSettings) -> None:
    """The function stops when the executor stops waiting; it never completes the order after Tidegate recorded `unknown`."""
    events: list[str] = []
    async with Tidegate(client_settings) as tg:

        @governed("reorder_stock", client=tg)
        async def reorder_stock(sku: str, quantity: int) -> str:
            events.append("started")
            try:
                await asyncio.Event().wait()  # a supplier that never answers (the catalog's timeout_s is 10)
            except asyncio.CancelledError:
                events.append("cancelled")
                raise
            events.append("ordered")
            return "PO"

        with pytest.raises(GovernanceError) as failed:
            await reorder_stock("KB-2", 1)
    outcome = failed.value.outcome
    assert isinstance(outcome, Failed)
    assert outcome.status == "unknown", outcome
    assert events == ["started", "cancelled"]
    await _follow_up_resolved(stack, outcome.action_id)


async def _follow_up_resolved(stack: Stack, action_id: str) -> None:
    """The follow-up the unknown outcome opened is pending; a person resolves it (and leaves no pending request behind)."""
    repo = stack.approval.approval.repo
    follow_up = await _eventually(lambda: repo.get_by_action(action_id, "follow_up", tenant_id="acme"))
    assert follow_up.status == "pending"
    await stack.decide(follow_up.approval_id, "reject", await stack.approver_token("carol@acme.example", ["support"]))


async def _eventually(probe: Any, timeout_s: float = 45) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (found := await probe()) is None:
        assert asyncio.get_running_loop().time() < deadline, "no follow-up"
        await asyncio.sleep(0.1)
    return found
