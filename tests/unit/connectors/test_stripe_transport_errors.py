"""The Stripe SDK's transport errors, told apart by the httpx error it chains: not sent (failed) or maybe applied (unknown)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from connectors import stripe_tools
from servicekit.toolcontract import ToolContext

CTX = ToolContext(
    pool=None, tenant_id="acme", action_id="a-1", idempotency_key="a-1", task_id="t-1", attempt=1,
    credential="sk_test_x", connection={"base_url": "https://stripe.test"},
)  # fmt: skip


def _raising(error: type[httpx.TransportError]) -> Any:
    def respond(request: httpx.Request) -> httpx.Response:
        raise error("simulated", request=request)

    return respond


@pytest.mark.parametrize(
    ("error", "maybe_applied"),
    [(httpx.ConnectError, False), (httpx.ConnectTimeout, False), (httpx.ReadTimeout, True), (httpx.RemoteProtocolError, True)],
)
async def test_only_a_connect_phase_error_says_the_request_never_reached_stripe(
    answer: Any, refused: Any, error: type[httpx.TransportError], maybe_applied: bool
) -> None:
    answer(_raising(error))
    failure = await refused(stripe_tools.issue_refund, CTX, {"charge_id": "ch_123", "amount_usd": 0.4})
    assert (failure.type, failure.retryable, failure.maybe_applied) == ("unreachable", True, maybe_applied)
    assert error.__name__ in failure.message
