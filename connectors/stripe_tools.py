"""Stripe: look up a charge or a payment intent, refund, credit note; through the official `stripe` package.

Every write sends the action id as Stripe's `Idempotency-Key`, so a retried or replayed call returns
the first refund instead of making a second. The SDK's own retries are off (`max_network_retries=0`):
the executor is the one layer that retries. Money the policy reasons about is in USD; amounts go to
Stripe in cents, and a refund or credit is checked against what the system of record says was charged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import stripe

from connectors._http import NEVER_SENT
from servicekit.toolcontract import ToolContext, ToolError

__all__ = ["create_credit_note", "get_charge", "get_payment_intent", "issue_refund"]

DEFAULT_BASE_URL = "https://api.stripe.com"


@asynccontextmanager
async def _client(ctx: ToolContext) -> AsyncIterator[stripe.StripeClient]:
    if not ctx.credential:
        raise ToolError("credential_missing", "no Stripe API key for this call")
    http = stripe.HTTPXClient(timeout=30)
    client = stripe.StripeClient(
        ctx.credential,
        base_addresses={"api": ctx.connection.get("base_url", DEFAULT_BASE_URL)},
        http_client=http,
        max_network_retries=0,  # the executor owns retries: every attempt is counted and priced
    )
    try:
        yield client
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]


async def _call(fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run one Stripe request, mapping Stripe's errors onto the executor's retry semantics."""
    try:
        return await fn()
    except stripe.AuthenticationError as exc:
        # Stripe's message echoes part of the key: keep it out of the result, which lands on a topic.
        raise ToolError("credential_rejected", f"Stripe refused the tenant's API key (HTTP {exc.http_status})") from exc
    except stripe.PermissionError as exc:
        raise ToolError("permission_denied", f"the tenant's Stripe key may not do this: {exc.user_message}") from exc
    except stripe.RateLimitError as exc:
        raise ToolError("rate_limited", f"Stripe answered 429: {exc.user_message}", retryable=True) from exc
    except stripe.IdempotencyError as exc:
        raise ToolError("idempotency_conflict", f"Stripe saw this action id with other arguments: {exc.user_message}") from exc
    except stripe.CardError as exc:
        raise ToolError(f"stripe_{exc.code or 'card_error'}", str(exc.user_message)) from exc
    except stripe.InvalidRequestError as exc:
        kind = "not_found" if exc.http_status == 404 else (exc.code or "invalid_request")
        raise ToolError(f"stripe_{kind}", str(exc.user_message or exc)[:500]) from exc
    except stripe.APIConnectionError as exc:
        # The SDK chains httpx's error: a refused (or timed-out) connect never reached Stripe. After that, sent or not,
        # we cannot tell; Stripe deduplicates writes on the idempotency key, so a retry is safe either way.
        sent = not isinstance(exc.__cause__, NEVER_SENT)
        raise ToolError("unreachable", f"Stripe: {exc.user_message}", retryable=True, maybe_applied=sent) from exc
    except stripe.APIError as exc:
        status = exc.http_status or 500
        raise ToolError(f"http_{status}", f"Stripe: {exc.user_message}", retryable=status >= 500, maybe_applied=True) from exc


def _usd(cents: int) -> float:
    return round(cents / 100, 2)


def _cents(amount_usd: float) -> int:
    return round(amount_usd * 100)


def _charge_view(ch: Any) -> dict[str, Any]:
    return {
        "charge_id": ch.id,
        "amount_usd": _usd(ch.amount),
        "amount_refunded_usd": _usd(ch.amount_refunded),
        "amount_refundable_usd": _usd(ch.amount - ch.amount_refunded),  # what a refund may still take (the policy's bound)
        "currency": ch.currency,
        "status": ch.status,
        "paid": ch.paid,
        "refunded": ch.refunded,
        "customer": ch.customer,
        "payment_intent": ch.payment_intent,
    }


async def get_charge(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """A charge: amount, what was refunded already, currency and status, as Stripe records them."""
    async with _client(ctx) as client:
        ch = await _call(lambda: client.v1.charges.retrieve_async(args["charge_id"]))
    return _charge_view(ch)


async def get_payment_intent(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """A payment intent: amount, amount received, currency, status and its latest charge."""
    async with _client(ctx) as client:
        pi = await _call(lambda: client.v1.payment_intents.retrieve_async(args["payment_intent_id"]))
    return {
        "payment_intent_id": pi.id,
        "amount_usd": _usd(pi.amount),
        "amount_received_usd": _usd(pi.amount_received),
        "currency": pi.currency,
        "status": pi.status,
        "customer": pi.customer,
        "latest_charge": pi.latest_charge,
    }


def _refusal_if_over(what: str, currency: str, available_cents: int, amount_usd: float) -> None:
    if currency != "usd":
        raise ToolError("currency_mismatch", f"{what} is in {currency.upper()}; this tool refunds USD amounts only")
    if _cents(amount_usd) > available_cents:
        raise ToolError("amount_exceeds_charge", f"{amount_usd:.2f} USD is more than the {_usd(available_cents):.2f} USD left on {what}")


async def issue_refund(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Refund part or all of a charge, never more than what is left on it, only to the customer who paid it.

    Idempotency-Key = the action id.
    """
    async with _client(ctx) as client:
        charge_id = args["charge_id"]
        ch = await _call(lambda: client.v1.charges.retrieve_async(charge_id))
        _refusal_if_over(f"charge {charge_id}", ch.currency, ch.amount - ch.amount_refunded, args["amount_usd"])
        if args.get("payee_id") and args["payee_id"] != ch.customer:
            raise ToolError("payee_mismatch", f"charge {charge_id} was paid by {ch.customer}, not {args['payee_id']}: nothing refunded")
        params: dict[str, Any] = {"charge": charge_id, "amount": _cents(args["amount_usd"]), "metadata": {"tidegate_action": ctx.action_id}}
        if args.get("reason"):
            params["reason"] = args["reason"]
        refund = await _call(lambda: client.v1.refunds.create_async(params, {"idempotency_key": ctx.idempotency_key}))  # type: ignore[arg-type]
    return {
        "refund_id": refund.id,
        "charge_id": charge_id,
        "amount_usd": _usd(refund.amount),
        "currency": refund.currency,
        "status": refund.status,
        "charge_amount_usd": _usd(ch.amount),
    }


async def create_credit_note(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Credit part of an invoice, never more than its total; Idempotency-Key = the action id."""
    async with _client(ctx) as client:
        invoice_id = args["invoice_id"]
        inv = await _call(lambda: client.v1.invoices.retrieve_async(invoice_id))
        _refusal_if_over(f"invoice {invoice_id}", inv.currency, inv.total, args["amount_usd"])
        params: dict[str, Any] = {
            "invoice": invoice_id,
            "amount": _cents(args["amount_usd"]),
            "metadata": {"tidegate_action": ctx.action_id},
        }
        for key in ("reason", "memo"):
            if args.get(key):
                params[key] = args[key]
        note = await _call(lambda: client.v1.credit_notes.create_async(params, {"idempotency_key": ctx.idempotency_key}))  # type: ignore[arg-type]
    return {
        "credit_note_id": note.id,
        "invoice_id": invoice_id,
        "amount_usd": _usd(note.amount),
        "currency": note.currency,
        "status": note.status,
        "invoice_total_usd": _usd(inv.total),
    }
