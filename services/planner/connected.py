"""The support-triage playbook on a tenant's real systems: its helpdesk steps go to Zendesk, its refunds to Stripe.

A task says which systems hold its records in the trusted input field `systems`
(`{"helpdesk": "zendesk", "payments": "stripe"}`), as a helpdesk integration would; the playbook's steps
are then re-addressed to the connector tools with the same meaning, and what stays (mail, CRM, code)
keeps its built-in tools. Ticket `T-1001` is Zendesk ticket 1001; an order `O-5001` was paid by Stripe
charge `ch_O5001` unless the input maps it (`charges: {order_id: charge_id}`).
"""

from __future__ import annotations

import re
from typing import Any

from services.planner.task_state import PlannedStep

__all__ = ["on_connectors"]

_HELPDESK = {"tag_ticket": "zendesk_tag_ticket", "add_internal_note": "zendesk_add_internal_note", "draft_reply": "zendesk_draft_reply",
             "get_ticket": "zendesk_get_ticket"}  # fmt: skip
_PAYMENTS = {"issue_refund": "stripe_refund", "lookup_order": "stripe_get_charge"}


def _ticket_number(value: Any) -> Any:
    m = re.fullmatch(r"T-(\d+)", str(value))
    return int(m.group(1)) if m else value


def _charge(order_id: Any, charges: dict[str, str]) -> str:
    return charges.get(str(order_id)) or "ch_" + re.sub(r"[^A-Za-z0-9]", "", str(order_id))


def _step(step: PlannedStep, helpdesk: bool, payments: bool, charges: dict[str, str]) -> PlannedStep:
    args, tainted, tool = dict(step.args), list(step.tainted_args), step.tool
    if helpdesk and tool in _HELPDESK:
        tool = _HELPDESK[tool]
        args["ticket_id"] = _ticket_number(args["ticket_id"])
        if "note" in args:
            args["body"] = args.pop("note")
            tainted = ["body" if t == "note" else t for t in tainted]
    elif payments and tool in _PAYMENTS:
        tool = _PAYMENTS[tool]
        args["charge_id"] = _charge(args.pop("order_id"), charges)
        tainted = ["charge_id" if t == "order_id" else t for t in tainted]
        if tool == "stripe_refund":
            args["reason"] = "requested_by_customer"  # Stripe's reasons are an enum; the ticket is in the note
    alternatives = [_step(s, helpdesk, payments, charges) for s in step.on_deny]
    return step.model_copy(update={"tool": tool, "args": args, "tainted_args": tainted, "on_deny": alternatives})


def on_connectors(steps: list[PlannedStep], trusted: dict[str, Any]) -> list[PlannedStep]:
    """The same plan on the systems the trusted input names; unchanged when it names none."""
    systems = trusted.get("systems") or {}
    if not isinstance(systems, dict):
        return steps
    helpdesk, payments = systems.get("helpdesk") == "zendesk", systems.get("payments") == "stripe"
    if not (helpdesk or payments):
        return steps
    charges = {str(k): str(v) for k, v in (trusted.get("charges") or {}).items()}
    return [_step(s, helpdesk, payments, charges) for s in steps]
