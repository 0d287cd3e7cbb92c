"""Stripe out of reach, with the real SDK: a refused connection was never sent (failed), a dropped answer may have been (unknown)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from connector_harness import Executed, call_context

import schemas as s
from connectors import stripe_tools
from servicekit import REPO_ROOT
from servicekit.toolcontract import ToolError
from standins import StripeMock, ensure_stripe_mock

REFUND = {"charge_id": "ch_123", "amount_usd": 0.4, "payee_id": "cus_1001"}


@pytest.fixture
def stripe_gone() -> str:
    """The URL of a stripe-mock that answered and then stopped: its port now refuses connections."""
    mock = StripeMock(ensure_stripe_mock(REPO_ROOT / ".tidegate" / "bin")).start()
    mock.stop()
    return mock.url


@pytest.fixture
async def stripe_hanging_up() -> AsyncIterator[str]:
    """A server that reads the whole request, then closes the connection without answering: the request was sent."""

    async def read_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
        await reader.readexactly(length)
        writer.close()

    server = await asyncio.start_server(read_then_close, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


async def test_a_refused_connection_is_a_retryable_failure_that_never_reached_stripe(stripe_gone: str) -> None:
    with pytest.raises(ToolError) as refused:
        await stripe_tools.get_charge(call_context(base_url=stripe_gone), {"charge_id": "ch_123"})
    assert (refused.value.type, refused.value.retryable, refused.value.maybe_applied) == ("unreachable", True, False)
    assert "ConnectError" in refused.value.message


async def test_a_refund_while_stripe_refuses_connections_ends_failed_with_no_follow_up(stripe_gone: str, executed: Executed) -> None:
    await executed.connect("acme", "stripe", tools=["stripe_refund"], base_url=stripe_gone)
    result = await executed.run(executed.authorize("acme", "stripe_refund", REFUND))
    assert isinstance(result, s.ActionFailed), result  # not ActionUnknown: no person has to check whether it was refunded
    assert result.data.error is not None
    assert (result.data.error.type, result.data.attempts) == ("unreachable", 4)  # retried as catalog's retry.max_attempts says


async def test_a_connection_dropped_after_the_request_was_sent_may_have_been_applied(stripe_hanging_up: str, executed: Executed) -> None:
    with pytest.raises(ToolError) as dropped:
        await stripe_tools.get_charge(call_context(base_url=stripe_hanging_up), {"charge_id": "ch_123"})
    assert (dropped.value.type, dropped.value.retryable, dropped.value.maybe_applied) == ("unreachable", True, True)

    await executed.connect("acme", "stripe", tools=["stripe_refund"], base_url=stripe_hanging_up)
    result = await executed.run(executed.authorize("acme", "stripe_refund", REFUND))
    assert isinstance(result, s.ActionUnknown), result  # a refund that may have happened: a person checks
