"""Stripe connector against Stripe's own stripe-mock: lookups, refunds and credit notes, error shapes, no double refund."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from connector_harness import CANARY, Executed, call_context

import schemas as s
from connectors import stripe_tools
from servicekit import REPO_ROOT, Reject, ToolCatalog
from servicekit.toolcontract import ToolError
from services.policy import PackSource, compile_pack, in_process
from standins import RecordingProxy

# stripe-mock answers every charge as 100 cents USD with nothing refunded, every invoice as 1000 cents.


async def test_looks_up_a_charge_and_a_payment_intent_as_stripe_records_them(stripe_proxy: RecordingProxy) -> None:
    charge = await stripe_tools.get_charge(call_context(base_url=stripe_proxy.url), {"charge_id": "ch_123"})
    assert (charge["charge_id"], charge["amount_usd"], charge["amount_refunded_usd"], charge["currency"]) == ("ch_123", 1.0, 0.0, "usd")
    intent = await stripe_tools.get_payment_intent(call_context(base_url=stripe_proxy.url), {"payment_intent_id": "pi_123"})
    assert (intent["payment_intent_id"], intent["amount_usd"], intent["currency"]) == ("pi_123", 10.99, "usd")
    [first, _] = stripe_proxy.requests
    assert first.headers["authorization"] == f"Bearer {CANARY}"


async def test_refund_sends_the_action_id_as_idempotency_key_in_cents(stripe_proxy: RecordingProxy) -> None:
    stripe_proxy.fixtures["/v1/charges/ch_123"] = {"customer": "cus_1001"}  # who paid it (stripe-mock's charge names no customer)
    ctx = call_context(base_url=stripe_proxy.url, action_id="act-refund-1")
    args = {"charge_id": "ch_123", "amount_usd": 0.5, "payee_id": "cus_1001", "reason": "requested_by_customer"}
    refund = await stripe_tools.issue_refund(ctx, args)
    assert refund["refund_id"].startswith("re_")
    assert refund["charge_amount_usd"] == 1.0
    [post] = stripe_proxy.sent("POST", "/v1/refunds")
    assert post.headers["idempotency-key"] == "act-refund-1"
    assert b"amount=50" in post.body
    assert b"charge=ch_123" in post.body


async def test_refund_above_what_was_charged_is_refused_before_anything_is_sent(stripe_proxy: RecordingProxy) -> None:
    with pytest.raises(ToolError) as refused:
        await stripe_tools.issue_refund(call_context(base_url=stripe_proxy.url), {"charge_id": "ch_123", "amount_usd": 1.01})
    assert refused.value.type == "amount_exceeds_charge"
    assert not refused.value.retryable
    assert stripe_proxy.sent("POST", "/v1/refunds") == []


async def test_refund_goes_only_to_the_customer_who_paid_as_stripe_records_it(stripe_proxy: RecordingProxy) -> None:
    stripe_proxy.fixtures["/v1/charges/ch_O5001"] = {"id": "ch_O5001", "amount": 4250, "customer": "cus_1001"}
    ctx = call_context(base_url=stripe_proxy.url, action_id="act-refund-2")
    with pytest.raises(ToolError) as other:
        await stripe_tools.issue_refund(ctx, {"charge_id": "ch_O5001", "amount_usd": 42.5, "payee_id": "acct_attacker"})
    assert other.value.type == "payee_mismatch"
    assert stripe_proxy.sent("POST", "/v1/refunds") == []
    with pytest.raises(ToolError) as unnamed:  # the catalog requires payee_id; the tool refuses without one all the same
        await stripe_tools.issue_refund(ctx, {"charge_id": "ch_O5001", "amount_usd": 42.5})
    assert unnamed.value.type == "payee_mismatch"
    assert stripe_proxy.sent("POST", "/v1/refunds") == []
    refund = await stripe_tools.issue_refund(ctx, {"charge_id": "ch_O5001", "amount_usd": 42.5, "payee_id": "cus_1001"})
    assert refund["charge_amount_usd"] == 42.5


async def test_credit_note_on_an_invoice_never_above_its_total(stripe_proxy: RecordingProxy) -> None:
    stripe_proxy.fixtures["/v1/invoices/in_123"] = {"customer": "cus_1001"}  # whom it bills
    ctx = call_context(base_url=stripe_proxy.url, action_id="act-credit-1")
    note = await stripe_tools.create_credit_note(
        ctx, {"invoice_id": "in_123", "amount_usd": 2.5, "payee_id": "cus_1001", "memo": "late delivery"}
    )
    assert note["credit_note_id"].startswith("cn_")
    [post] = stripe_proxy.sent("POST", "/v1/credit_notes")
    assert post.headers["idempotency-key"] == "act-credit-1"
    assert b"amount=250" in post.body
    with pytest.raises(ToolError) as refused:
        await stripe_tools.create_credit_note(ctx, {"invoice_id": "in_123", "amount_usd": 10.01, "payee_id": "cus_1001"})
    assert refused.value.type == "amount_exceeds_charge"


async def test_credit_note_goes_only_to_the_customer_the_invoice_bills(stripe_proxy: RecordingProxy) -> None:
    stripe_proxy.fixtures["/v1/invoices/in_9001"] = {"id": "in_9001", "total": 126000, "customer": "cus_1001", "currency": "usd"}
    ctx = call_context(base_url=stripe_proxy.url, action_id="act-credit-2")
    for args, said in [
        ({"invoice_id": "in_9001", "amount_usd": 499, "payee_id": "cus_1008"}, "invoice in_9001 bills cus_1001, not cus_1008"),
        ({"invoice_id": "in_9001", "amount_usd": 499}, "the call names no payee"),
    ]:
        with pytest.raises(ToolError) as other:
            await stripe_tools.create_credit_note(ctx, args)
        assert other.value.type == "payee_mismatch"
        assert said in other.value.message
    assert stripe_proxy.sent("POST", "/v1/credit_notes") == []


async def test_credit_notes_in_separate_tasks_never_credit_more_than_the_invoice_between_them(stripe_proxy: RecordingProxy) -> None:
    # money9 F2: five notes of 499 USD on a 1,260 USD invoice, each in its own task, each checked against the total alone.
    # Two are on it already (Stripe counts them in post_payment_credit_notes_amount): 262 USD is left to credit.
    invoice = {"id": "in_9001", "total": 126000, "customer": "cus_1001", "currency": "usd", "post_payment_credit_notes_amount": 99800}
    stripe_proxy.fixtures["/v1/invoices/in_9001"] = invoice
    third = call_context(base_url=stripe_proxy.url, action_id="act-credit-3")
    args = {"invoice_id": "in_9001", "amount_usd": 499, "payee_id": "cus_1001"}
    with pytest.raises(ToolError) as refused:
        await stripe_tools.create_credit_note(third, args)
    assert refused.value.type == "amount_exceeds_charge"
    assert "499.00 USD is more than the 262.00 USD left to credit on invoice in_9001" in refused.value.message
    assert stripe_proxy.sent("POST", "/v1/credit_notes") == []
    stripe_proxy.fixtures["/v1/invoices/in_9001"] = {**invoice, "pre_payment_credit_notes_amount": 6200}  # 200 USD left
    with pytest.raises(ToolError):
        await stripe_tools.create_credit_note(third, {**args, "amount_usd": 200.01})
    await stripe_tools.create_credit_note(third, {**args, "amount_usd": 200})
    [post] = stripe_proxy.sent("POST", "/v1/credit_notes")
    assert b"amount=20000" in post.body

    # A repeat attempt may follow one Stripe applied without confirming it (counted on the invoice now): bounded by the total.
    repeat = replace(call_context(base_url=stripe_proxy.url, action_id="act-credit-4"), attempt=2)
    await stripe_tools.create_credit_note(repeat, {**args, "amount_usd": 499})
    with pytest.raises(ToolError) as over:
        await stripe_tools.create_credit_note(repeat, {**args, "amount_usd": 1260.01})
    assert over.value.type == "amount_exceeds_charge"
    assert len(stripe_proxy.sent("POST", "/v1/credit_notes")) == 2


async def test_stripe_error_shapes_map_to_retry_semantics_without_echoing_the_key(stripe_proxy: RecordingProxy) -> None:
    # stripe-mock's own answer to a key that is not a test key: 401 with Stripe's error body.
    with pytest.raises(ToolError) as rejected:
        await stripe_tools.get_charge(call_context(base_url=stripe_proxy.url, credential="not-a-key-CANARY"), {"charge_id": "ch_1"})
    assert rejected.value.type == "credential_rejected"
    assert "CANARY" not in rejected.value.message
    cases = [
        (429, {"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many requests"}}, "rate_limited", True),
        (500, {"error": {"type": "api_error", "message": "Something went wrong"}}, "http_500", True),
        (404, {"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such"}}, "stripe_not_found", False),
        (402, {"error": {"type": "card_error", "code": "expired_card", "message": "Your card has expired."}}, "stripe_expired_card", False),
    ]  # fmt: skip
    for status, body, kind, retryable in cases:
        stripe_proxy.inject(status, body, method="GET")
        with pytest.raises(ToolError) as failed:
            await stripe_tools.get_charge(call_context(base_url=stripe_proxy.url), {"charge_id": "ch_123"})
        assert (failed.value.type, failed.value.retryable) == (kind, retryable), body


async def test_a_429s_and_a_503s_retry_after_is_handed_to_the_executor(stripe_proxy: RecordingProxy) -> None:
    """A rate-limited tenant's refund was retried 0.5 s after Stripe asked for 3 s, and gave up in ~3.5 s (connectors probe F2)."""
    limited = {"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many requests"}}
    stripe_proxy.inject(429, limited, method="GET", headers={"Retry-After": "3"})
    with pytest.raises(ToolError) as failed:
        await stripe_tools.get_charge(call_context(base_url=stripe_proxy.url), {"charge_id": "ch_123"})
    assert (failed.value.type, failed.value.retryable, failed.value.retry_after_s) == ("rate_limited", True, 3.0)
    assert "Retry-After: 3 s" in failed.value.message
    stripe_proxy.inject(503, {"error": {"type": "api_error", "message": "down"}}, method="GET", headers={"Retry-After": "7"})
    with pytest.raises(ToolError) as unavailable:
        await stripe_tools.get_charge(call_context(base_url=stripe_proxy.url), {"charge_id": "ch_123"})
    assert (unavailable.value.type, unavailable.value.retry_after_s) == ("http_503", 7.0)
    stripe_proxy.inject(429, limited, method="GET")  # none asked: the executor's own backoff
    with pytest.raises(ToolError) as unsaid:
        await stripe_tools.get_charge(call_context(base_url=stripe_proxy.url), {"charge_id": "ch_123"})
    assert unsaid.value.retry_after_s is None


async def test_a_repeat_attempt_does_not_count_our_own_earlier_refund_and_reaches_stripe_with_the_key(stripe_proxy: RecordingProxy) -> None:
    # Attempt 1 refunded all 42.50 and Stripe's answer was lost (a 500, a reset): the charge now shows it refunded.
    ours = {"id": "ch_O5001", "amount": 4250, "amount_refunded": 4250, "customer": "cus_1001", "currency": "usd"}
    stripe_proxy.fixtures["/v1/charges/ch_O5001"] = ours
    stripe_proxy.fixtures["/v1/charges/ch_EUR"] = {**ours, "id": "ch_EUR", "currency": "eur"}
    args = {"charge_id": "ch_O5001", "amount_usd": 42.5, "payee_id": "cus_1001"}
    first = call_context(base_url=stripe_proxy.url, action_id="act-refund-3")
    with pytest.raises(ToolError) as refused:
        await stripe_tools.issue_refund(first, args)
    assert refused.value.type == "amount_exceeds_charge"
    assert stripe_proxy.sent("POST", "/v1/refunds") == []

    repeat = replace(first, attempt=2)
    refund = await stripe_tools.issue_refund(repeat, args)  # Stripe answers the keyed repeat with the first refund
    assert refund["refund_id"].startswith("re_")
    [post] = stripe_proxy.sent("POST", "/v1/refunds")
    assert post.headers["idempotency-key"] == "act-refund-3"
    assert b"amount=4250" in post.body

    # A repeat is still bounded by what the charge took, its currency and who paid it: refused unsent.
    for wrong, kind in [
        ({**args, "amount_usd": 42.51}, "amount_exceeds_charge"),
        ({**args, "charge_id": "ch_EUR"}, "currency_mismatch"),
        ({**args, "payee_id": "acct_attacker"}, "payee_mismatch"),
    ]:
        with pytest.raises(ToolError) as other:
            await stripe_tools.issue_refund(repeat, wrong)
        assert other.value.type == kind
    assert len(stripe_proxy.sent("POST", "/v1/refunds")) == 1


async def test_a_403_names_no_key_and_keeps_what_stripe_said(stripe_proxy: RecordingProxy) -> None:
    said = (
        "The provided key 'rk_live_*********************************9xQ2' does not have the required permissions for this endpoint "
        f"on account 'acct_1Nv0FG'. Having the 'rak_charge_read' permission would allow this request to continue. (key {CANARY})"
    )
    stripe_proxy.inject(403, {"error": {"type": "invalid_request_error", "message": said}}, method="GET")
    with pytest.raises(ToolError) as denied:
        await stripe_tools.get_charge(call_context(base_url=stripe_proxy.url), {"charge_id": "ch_123"})
    assert (denied.value.type, denied.value.retryable) == ("permission_denied", False)
    assert "9xQ2" not in denied.value.message
    assert CANARY not in denied.value.message
    assert "does not have the required permissions for this endpoint" in denied.value.message
    assert "rak_charge_read" in denied.value.message


IN_PROGRESS = {
    "error": {
        "type": "idempotency_error",
        "message": "There is currently another in-progress request using this Idempotent Key (that probably means you submitted "
        "twice, and the other request is still going through): act-refund-5. Please try again later.",
    }
}


async def test_a_409_for_the_same_key_in_progress_is_retried_with_the_key(stripe_proxy: RecordingProxy, executed: Executed) -> None:
    stripe_proxy.fixtures["/v1/charges/ch_123"] = {"customer": "cus_1001"}  # who paid it (stripe-mock's charge names no customer)
    stripe_proxy.inject(409, IN_PROGRESS)
    with pytest.raises(ToolError) as busy:
        await stripe_tools.issue_refund(
            call_context(base_url=stripe_proxy.url, action_id="act-refund-5"),
            {"charge_id": "ch_123", "amount_usd": 0.4, "payee_id": "cus_1001"},
        )
    assert (busy.value.type, busy.value.retryable, busy.value.maybe_applied) == ("idempotency_in_progress", True, True)
    assert "still processing" in busy.value.message

    await executed.connect("acme", "stripe", tools=["stripe_refund"], base_url=stripe_proxy.url)
    stripe_proxy.inject(409, IN_PROGRESS)  # attempt 1 meets the other request still running; attempt 2 gets its refund
    event = executed.authorize("acme", "stripe_refund", {"charge_id": "ch_123", "amount_usd": 0.4, "payee_id": "cus_1001"})
    result = await executed.run(event)
    assert isinstance(result, s.ActionSucceeded)
    assert result.data.attempts == 2
    assert [p.headers["idempotency-key"] for p in stripe_proxy.sent("POST", "/v1/refunds")[1:]] == [event.data.action_id] * 2


async def test_a_retried_and_replayed_refund_reaches_stripe_with_one_idempotency_key_and_runs_once(
    stripe_proxy: RecordingProxy, executed: Executed
) -> None:
    await executed.connect("acme", "stripe", tools=["stripe_refund"], base_url=stripe_proxy.url)
    stripe_proxy.fixtures["/v1/charges/ch_123"] = {"customer": "cus_1001"}  # who paid it (stripe-mock's charge names no customer)
    stripe_proxy.inject(500, {"error": {"type": "api_error", "message": "Something went wrong"}})  # the first POST fails (applied or not)
    event = executed.authorize("acme", "stripe_refund", {"charge_id": "ch_123", "amount_usd": 0.4, "payee_id": "cus_1001"})

    result = await executed.run(event)
    assert isinstance(result, s.ActionSucceeded)
    assert result.data.attempts == 2
    posts = stripe_proxy.sent("POST", "/v1/refunds")
    assert [p.headers["idempotency-key"] for p in posts] == [event.data.action_id] * 2  # Stripe answers the 2nd with the 1st refund

    # A redelivery, and a copy of the authorization with a new event id, are answered from the claim: Stripe sees nothing new.
    assert (await executed.run(event)).data.result == result.data.result
    with pytest.raises(Reject):
        await executed.executor.handle(event.model_copy(update={"id": "another-event-id"}))
    assert len(stripe_proxy.sent("POST", "/v1/refunds")) == 2


async def test_missing_or_revoked_credential_and_a_tool_not_enabled_fail_clearly_unsent(
    stripe_proxy: RecordingProxy, executed: Executed
) -> None:
    args = {"charge_id": "ch_123", "amount_usd": 0.4, "payee_id": "cus_1001"}
    missing = await executed.run(executed.authorize("globex", "stripe_refund", args))
    assert isinstance(missing, s.ActionFailed)
    assert missing.data.error is not None
    assert missing.data.error.type == "credential_missing"

    await executed.connect("acme", "stripe", tools=[], base_url=stripe_proxy.url)  # read-only by default
    scoped = await executed.run(executed.authorize("acme", "stripe_refund", args))
    assert scoped.data.error is not None
    assert scoped.data.error.type == "tool_not_enabled"
    assert isinstance(await executed.run(executed.authorize("acme", "stripe_get_charge", {"charge_id": "ch_123"})), s.ActionSucceeded)

    from connectors import disable

    await disable(executed.operator, "acme", "stripe")
    revoked = await executed.run(executed.authorize("acme", "stripe_get_charge", {"charge_id": "ch_123"}))
    assert revoked.data.error is not None
    assert revoked.data.error.type == "credential_missing"
    assert stripe_proxy.sent("POST", "/v1/refunds") == []
    assert len(stripe_proxy.requests) == 1  # only the enabled read reached Stripe
    assert all(CANARY not in r.model_dump_json() for r in executed.results)


async def test_the_policy_bounds_a_refund_by_what_stripe_says_is_left_on_the_charge(stripe_proxy: RecordingProxy, tmp_path: Path) -> None:
    # 42.50 charged, 30.00 refunded already: 12.50 left, whatever the agent's proposal says.
    stripe_proxy.fixtures["/v1/charges/ch_O5001"] = {"id": "ch_O5001", "amount": 4250, "amount_refunded": 3000, "currency": "usd"}
    charge = await stripe_tools.get_charge(call_context(base_url=stripe_proxy.url), {"charge_id": "ch_O5001"})
    assert (charge["amount_refundable_usd"], charge["currency"]) == (12.5, "usd")
    catalog = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
    policy = in_process(compile_pack(PackSource.from_dir(REPO_ROOT / "policies" / "default"), catalog), catalog, keys_dir=tmp_path)
    read = s.ActionResultData(
        action_id="read-1", task_id="t-1", tenant_id="acme", tool="stripe_get_charge", status="succeeded", result=charge, attempts=1,
        duration_ms=1,
    )  # fmt: skip
    await policy.on_result(s.ActionSucceeded.build(read, source="tidegate/executor"))

    async def refund(action_id: str, amount: float) -> tuple[str, list[str]]:
        args = {"charge_id": "ch_O5001", "amount_usd": amount, "payee_id": "cus_1001"}
        data = s.ActionProposedData(
            action_id=action_id,
            task_id="t-1",
            tenant_id="acme",
            step=2,
            tool="stripe_refund",
            args=args,
            proposer="agent",
            mode="autonomous",
        )
        decided = (await policy.on_proposed(s.ActionProposed.build(data, source="agent"))).decided
        assert decided is not None
        return decided.data.outcome, [r.code.value for r in decided.data.reasons]

    assert await refund("a-1", 12.5) == ("allow", ["within_threshold"])
    assert await refund("a-2", 42.5) == ("deny", ["exceeds_system_of_record"])
