"""What a person needs to decide a request, in a few fields: the subject line of a queue, the money, the record, what approving does.

Pure: built from the request (its args and the facts the policy computed) and the tool's catalog entry. The page, the
CLI, the API and the webhook messages show the same summary, so two refunds of one amount read apart by their payee
and record. Everything here that an agent wrote (args) is data, shown as text, never markup.
"""

from __future__ import annotations

from typing import Any

from schemas import ToolSpec
from servicekit import ToolCatalog
from servicekit.costs import ReviewPrice
from services.approval._view_args import key_args
from services.approval.domain import ApprovalRecord

__all__ = ["SUBJECT_MAX", "VALUE_MAX", "decision_summary", "summary"]

SUBJECT_MAX = 160  # characters of a queue line's subject; a longer one ends with "…"
VALUE_MAX = 60  # characters of one value inside the subject


def _cut(value: Any, limit: int = VALUE_MAX) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())  # one line: a value an agent wrote cannot break the queue line
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _arg(args: dict[str, Any], path: str | None) -> Any:
    value: Any = args
    for part in (path or "").split("."):
        if not path or not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _amount(record: ApprovalRecord, spec: ToolSpec | None) -> float | None:
    fact = record.facts.get("amount_usd")
    if isinstance(fact, int | float) and not isinstance(fact, bool):
        return float(fact)
    value = _arg(record.args, spec.facts.amount if spec else None)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _on_approve(record: ApprovalRecord, spec: ToolSpec | None) -> str:
    if record.kind == "follow_up":
        return "records that the call took effect (reject: that it did not); nothing is retried or run again"
    then = f"the policy service checks the call again and, if it still holds, the executor calls {record.tool} once with these args"
    if record.required_approvals > 1:
        then = f"once {record.required_approvals} approvers agree, " + then
    if record.facts.get("irreversible"):
        return then + "; it cannot be undone"
    if record.facts.get("reversible"):
        return then + "; it can be undone afterwards (`tidegate undo`)"
    return then


def _untrusted(record: ApprovalRecord) -> list[dict[str, str]]:
    """Args whose values came from content outside the tenant (a ticket, an email), as the policy found them."""
    found = record.facts.get("taint")
    if not isinstance(found, list):
        return []
    return [{"arg": str(t.get("arg", "")), "why": str(t.get("why", ""))} for t in found if isinstance(t, dict)]


def summary(record: ApprovalRecord, spec: ToolSpec | None, *, review_usd: float, key_args: list[str]) -> dict[str, Any]:
    """The request at a glance (`subject`) and what deciding it means (money, payee, record, what approving does, its price)."""
    amount = _amount(record, spec)
    payee = record.facts.get("payee") or _arg(record.args, spec.facts.payee if spec else None)
    record_arg = spec.facts.record if spec else None
    record_id = record.facts.get("record_id") or _arg(record.args, record_arg)
    parts: list[str] = []
    if record.kind == "follow_up":
        error = record.result_error or {}
        parts.append(f"outcome unknown: {_cut(error.get('type', 'no error reported'))}")
    if amount is not None:
        parts.append(f"{amount:,.2f} USD")
    if payee is not None:
        parts.append(f"to {_cut(payee)}" + (" (new payee)" if record.facts.get("payee_is_new") else ""))
    if record_id is not None:
        parts.append(f"{record_arg or 'record'} {_cut(record_id)}")
    shown = {(path or "").split(".")[0] for path in (spec.facts.amount, spec.facts.payee, record_arg)} if spec else set()
    for name in key_args:  # the other args the catalog says matter (recipients, the ticket…), then nothing an agent wrote freely
        if name not in shown and name in record.args:
            parts.append(f"{name} {_cut(record.args[name])}")
    subject = " · ".join(parts) or ", ".join(f"{k} {_cut(v, 30)}" for k, v in list(record.args.items())[:3])
    return {
        "subject": _cut(subject, SUBJECT_MAX),
        "amount_usd": amount,
        "payee": None if payee is None else str(payee),
        "payee_is_new": record.facts.get("payee_is_new") if payee is not None else None,
        "record": None if record_id is None else {"arg": record_arg, "id": str(record_id), "read": record.facts.get("record_read")},
        "tool_does": spec.description if spec else None,
        "on_approve": _on_approve(record, spec),
        "untrusted_args": _untrusted(record),
        "proposer": record.proposer,
        "rationale": record.rationale,
        "human_review_usd": round(review_usd, 2),
    }


def decision_summary(record: ApprovalRecord, catalog: ToolCatalog | None, price: ReviewPrice) -> dict[str, Any]:
    """`summary` of a request with its tool's catalog entry and the price of a human decision (`servicekit.costs`, the one place)."""
    spec = catalog[record.tool] if catalog is not None and record.tool in catalog else None
    return summary(record, spec, review_usd=price.per_decision_usd, key_args=key_args(catalog, record.tool))
