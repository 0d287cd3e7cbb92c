"""The integrator's own refund function, calling Stripe's official SDK, served by a process of its own while the agent
only proposes (docs/integrations.md, "From your own application"): the real policy and executor, Stripe's stripe-mock
behind a recording proxy. The refund reaches Stripe once, keyed by the action id (`served_call()`), so a retry of the
executor's is a repeat Stripe answers with the first refund.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import stripe
from conftest import Stack

from servicekit import REPO_ROOT
from standins import RecordingProxy, StripeMock, ensure_stripe_mock, serve_app
from tidegate.client import ClientSettings, Executed, Tidegate, governed, served_call

pytestmark = pytest.mark.timeout(900)  # stripe-mock may need building first


@pytest.fixture(scope="module")
def stripe_mock() -> Iterator[StripeMock]:
    mock = StripeMock(ensure_stripe_mock(REPO_ROOT / ".tidegate" / "bin")).start()
    yield mock
    mock.stop()


@pytest.fixture
async def stripe_proxy(stripe_mock: StripeMock, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RecordingProxy]:
    proxy = RecordingProxy(stripe_mock.url)
    async with serve_app(proxy.app) as url:
        monkeypatch.setattr(stripe, "api_base", url)  # as the integrator points the SDK at the stand-in
        monkeypatch.setattr(stripe, "api_key", "sk_test_standin")
        yield proxy


def pay_vendor(payee_id: str, amount_usd: float, invoice_id: str) -> str:
    """The integrator's function, as the docs' snippet writes it: the action id is Stripe's idempotency key."""
    call = served_call()
    refund = stripe.Refund.create(charge=invoice_id, amount=round(amount_usd * 100), idempotency_key=call and call.action_id)
    return f"refund {refund.id} {refund.status}"


async def test_a_refund_served_by_a_process_of_its_own_reaches_stripe_once_keyed_by_the_action_id(
    stack: Stack, client_settings: ClientSettings, stripe_proxy: RecordingProxy
) -> None:
    async with Tidegate(client_settings) as server, Tidegate(client_settings) as agent:
        governed("pay_vendor", client=server)(pay_vendor)  # serve.py: serves, never proposes
        await server.serve_gates["pay_vendor"].check()  # its loop reads the tool's requests
        outcome = await agent.propose(
            "pay_vendor", {"payee_id": "cus_1001", "amount_usd": 12.5, "invoice_id": "ch_standin"}, action_id="langgraph:t-1:call_1"
        )
    assert isinstance(outcome, Executed), outcome
    assert str(outcome.result.get("value", "")).startswith("refund re_"), outcome.result
    [sent] = stripe_proxy.sent("POST", "/v1/refunds")
    assert sent.headers.get("idempotency-key") == "langgraph:t-1:call_1"
