"""Stripe: look up a charge or a payment intent, refund, credit note; through the official `stripe` package.

Every write sends the action id as Stripe's `Idempotency-Key`, so a retried or replayed call returns
the first refund instead of making a second. The SDK's own retries are off (`max_network_retries=0`):
the executor is the one layer that retries. Money the policy reasons about is in USD; amounts go to
Stripe in cents, and a refund or credit is checked against what the system of record says was charged.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import stripe

from connectors._http import NEVER_SENT
from servicekit.toolcontract import ToolContext, ToolError, retry_after_s

__all__ = ["create_credit_note", "get_charge", "get_payment_intent", "issue_refund"]

DEFAULT_BASE_URL = "https://api.stripe.com"

# A Stripe key, whole or masked ("rk_live_****abc"): secret (sk_), restricted (rk_) or publishable (pk_).
_KEY_LIKE = re.compile(r"\b[spr]k_[^\s'\"]+")


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


def _said(exc: stripe.StripeError) -> str:
    """What Stripe said, for a result that lands on a topic: any key in it (a 403 names the restricted key) redacted."""
    return _KEY_LIKE.sub("<key redacted>", str(exc.user_message or exc))[:500]


async def _call(fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run one Stripe request, mapping Stripe's errors onto the executor's retry semantics."""
    try:
        return await fn()
    except stripe.AuthenticationError as exc:
        # Stripe's message echoes part of the key: keep it out of the result, which lands on a topic.
        raise ToolError(
            "credential_rejected",
            f"Stripe refused the tenant's API key (HTTP {exc.http_status}): set the right one with "
            "`tidegate connectors set-credential stripe --tenant <tenant>`",
        ) from exc
    except stripe.PermissionError as exc:
        raise ToolError("permission_denied", f"the tenant's Stripe key may not do this: {_said(exc)}") from exc
    except stripe.RateLimitError as exc:
        wait = _retry_after(exc)
        shown = "none" if wait is None else f"{wait:g} s"
        message = f"Stripe answered 429 (Retry-After: {shown}): {_said(exc)}"
        raise ToolError("rate_limited", message, retryable=True, retry_after_s=wait) from exc
    except stripe.IdempotencyError as exc:
        raise ToolError("idempotency_conflict", f"Stripe saw this action id with other arguments: {_said(exc)}") from exc
    except stripe.CardError as exc:
        raise ToolError(f"stripe_{exc.code or 'card_error'}", _said(exc)) from exc
    except stripe.InvalidRequestError as exc:
        kind = "not_found" if exc.http_status == 404 else (exc.code or "invalid_request")
        raise ToolError(f"stripe_{kind}", _said(exc)) from exc
    except stripe.APIConnectionError as exc:
        # The SDK chains httpx's error: a refused (or timed-out) connect never reached Stripe. After that, sent or not,
        # we cannot tell; Stripe deduplicates writes on the idempotency key, so a retry is safe either way.
        sent = not isinstance(exc.__cause__, NEVER_SENT)
        raise ToolError("unreachable", f"Stripe: {_said(exc)}", retryable=True, maybe_applied=sent) from exc
    except stripe.APIError as exc:
        if exc.http_status == 409:
            # Another request with the same Idempotency-Key (an earlier attempt of this action) is still running at Stripe:
            # it may yet complete, and the key makes a later retry return its result instead of acting twice.
            message = f"Stripe is still processing this same action (HTTP 409), try again later: {_said(exc)}"
            raise ToolError("idempotency_in_progress", message, retryable=True, maybe_applied=True) from exc
        status = exc.http_status or 500
        wait = _retry_after(exc) if status == 503 else None
        raise ToolError(f"http_{status}", f"Stripe: {_said(exc)}", retryable=status >= 500, maybe_applied=True, retry_after_s=wait) from exc


def _retry_after(exc: stripe.StripeError) -> float | None:
    """The seconds Stripe's `Retry-After` asks for (the executor waits at least that long, within the tool's `backoff_max_s`)."""
    said = next((value for name, value in (exc.headers or {}).items() if name.lower() == "retry-after"), None)
    return retry_after_s(said)


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


def _refusal_if_over(what: str, currency: str, amount_usd: float, bound_cents: int, bound: str) -> None:
    """Refuse, before anything is sent, an amount not in USD or above `bound_cents` (`bound` names that bound for the message)."""
    if currency != "usd":
        raise ToolError("currency_mismatch", f"{what} is in {currency.upper()}; this tool refunds USD amounts only")
    if _cents(amount_usd) > bound_cents:
        raise ToolError("amount_exceeds_charge", f"{amount_usd:.2f} USD is more than the {_usd(bound_cents):.2f} USD {bound} {what}")


def _refund_bound(ctx: ToolContext, ch: Any) -> tuple[int, str]:
    """What a refund may take from the charge, in cents, and its name: what is left on it; on a repeat attempt, all it charged.

    A repeat may follow an attempt that Stripe applied but did not confirm (a 5xx, a dropped connection): the charge then
    counts our own refund, and refusing here would keep back the keyed POST that Stripe answers with that first refund.
    Stripe itself refuses a refund above what is left, and deduplicates on the key.
    """
    if ctx.attempt > 1:
        return ch.amount, "charged on"
    return ch.amount - ch.amount_refunded, "left on"


def _refusal_unless_payee(payee_id: str | None, customer: str | None, whose: str, what: str) -> None:
    """Refuse, before anything is sent, a call whose `payee_id` is not the customer Stripe records (`whose` names the record).

    The policy bounds what one payee receives a day by the `payee_id` the call names (the catalog requires it): money
    sent to a customer the call does not name would count toward someone else's bound, or toward none.
    """
    if payee_id is None or payee_id != customer:
        named = f"not {payee_id}" if payee_id is not None else "and the call names no payee"
        raise ToolError("payee_mismatch", f"{whose} {customer}, {named}: nothing {what}")


def _credit_bound(ctx: ToolContext, inv: Any) -> tuple[int, str]:
    """What a credit note may credit on the invoice, in cents, and its name: what earlier credit notes left; on a repeat attempt, its total.

    Each credit note on an invoice lowers what is left to credit (Stripe counts them in `pre_payment_credit_notes_amount`
    before the invoice is paid and `post_payment_credit_notes_amount` after), so notes in separate tasks cannot credit
    more than the invoice between them. A repeat may follow an attempt Stripe applied but did not confirm, which the
    invoice then counts: it is bounded by the total, and Stripe answers the keyed POST with that first note.
    """
    if ctx.attempt > 1:
        return inv.total, "total of"
    credited = (getattr(inv, "pre_payment_credit_notes_amount", None) or 0) + (getattr(inv, "post_payment_credit_notes_amount", None) or 0)
    return inv.total - credited, "left to credit on"


async def issue_refund(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Refund part or all of a charge, never more than what is left on it, only to the customer who paid it.

    Idempotency-Key = the action id.
    """
    async with _client(ctx) as client:
        charge_id = args["charge_id"]
        ch = await _call(lambda: client.v1.charges.retrieve_async(charge_id))
        _refusal_if_over(f"charge {charge_id}", ch.currency, args["amount_usd"], *_refund_bound(ctx, ch))
        _refusal_unless_payee(args.get("payee_id"), ch.customer, f"charge {charge_id} was paid by", "refunded")
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
    """Credit part of an invoice to the customer it bills, no more than earlier credit notes left; Idempotency-Key = the action id."""
    async with _client(ctx) as client:
        invoice_id = args["invoice_id"]
        inv = await _call(lambda: client.v1.invoices.retrieve_async(invoice_id))
        _refusal_if_over(f"invoice {invoice_id}", inv.currency, args["amount_usd"], *_credit_bound(ctx, inv))
        _refusal_unless_payee(args.get("payee_id"), inv.customer, f"invoice {invoice_id} bills", "credited")
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
