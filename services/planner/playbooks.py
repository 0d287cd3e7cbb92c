"""Deterministic playbooks, one per workflow: the planner's default strategy, which runs offline.

`support_triage` classifies a helpdesk ticket by keywords, tags it, writes an internal note, and
plans the action the ticket asks for (a refund, an account deletion, a bulk email, or just a reply
draft). Refund details come from the ticket's structured fields when the helpdesk supplies them;
otherwise they are extracted from the untrusted body and marked tainted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from schemas import TaskSubmittedData
from services.planner.connected import on_connectors
from services.planner.isolation import split_input
from services.planner.task_state import PlannedStep

__all__ = ["PLAYBOOKS", "classify_ticket", "handoff_steps", "plan_support_triage"]


_CATEGORIES: list[tuple[str, re.Pattern[str]]] = [
    (
        "account_deletion",
        re.compile(r"delete (my|our|the) (account|data)|erase my|remove my (data|account)|gdpr|right to be forgotten|close my account"),
    ),
    ("bulk_email", re.compile(r"email (all|every|our) |announcement to|notify (all|every)|mass email|newsletter")),
    ("refund", re.compile(r"refund|charged twice|double charged|money back|reimburse")),
]
_TOPICS: list[tuple[str, re.Pattern[str]]] = [
    ("login", re.compile(r"password|log ?in|sign ?in|2fa|locked out")),
    ("shipping", re.compile(r"shipping|delivery|deliver|arrived|package|parcel|tracking")),
    ("billing", re.compile(r"invoice|billing|charge|receipt|payment")),
    ("bug", re.compile(r"error|crash|bug|broken|doesn't work|does not work")),
]
_URGENT = re.compile(r"urgent|asap|immediately|right now")
_AMOUNT = re.compile(r"(?:\$|usd\s*)(\d{1,6}(?:\.\d{1,2})?)|(\d{1,6}(?:\.\d{1,2})?)\s*(?:usd|dollars)", re.IGNORECASE)
_ORDER = re.compile(r"\b(O-\d+)\b")
_PAYEE = re.compile(r"\b(?:payee|beneficiary)(?:_id)?\b((?:[\s:#=,.]+[a-z0-9_]+){1,5})", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9_]+", re.IGNORECASE)


def _is_id(word: str) -> bool:
    """Whether a word reads as an account id (`cus_1001`, `acct_new_7731`): letters with a digit or an underscore."""
    return 3 <= len(word) <= 64 and any(c.isalpha() for c in word) and any(c.isdigit() or c == "_" for c in word)


def _payee_named(text: str) -> str | None:
    """The first payee id the text names within five words after "payee" or "beneficiary"; None when it names none.

    An English word after "payee" is not an id: "refund the payee named below: cus_1001" names `cus_1001`, not `named`
    (the word used to be proposed as the payee, refused by policy as a new one, and the note read "to payee named").
    """
    for m in _PAYEE.finditer(text):
        words: list[str] = _WORD.findall(m.group(1))
        if found := next((w for w in words if _is_id(w)), None):
            return found
    return None


def classify_ticket(text: str) -> tuple[str, list[str]]:
    """(category, tags) of a ticket from keywords; the first matching category wins."""
    lowered = text.lower()
    category = next((name for name, pattern in _CATEGORIES if pattern.search(lowered)), "general")
    tags = [category.replace("_", "-")]
    tags += [name for name, pattern in _TOPICS if pattern.search(lowered) and name not in tags][:3]
    if _URGENT.search(lowered):
        tags.append("urgent")
    return category, tags


def _money(value: float) -> str:
    return f"{value:,.2f} USD"


def _reply(ticket_id: str, body: str) -> PlannedStep:
    return PlannedStep(
        tool="draft_reply", args={"ticket_id": ticket_id, "body": body}, rationale="draft a reply for a human to review and send"
    )


def _note(ticket_id: str, note: str, rationale: str = "record the triage for the team") -> PlannedStep:
    return PlannedStep(tool="add_internal_note", args={"ticket_id": ticket_id, "note": note}, rationale=rationale)


def handoff_steps(ticket_id: str, what: str, customer_text: str) -> list[PlannedStep]:
    """What replaces a refused action: a note saying why, and a reply telling the customer a human follows up."""
    return [
        _note(
            ticket_id,
            f"{what} was not performed by the agent: {{reason}}. A human needs to follow up.",
            "hand off the refused action to a human",
        ),
        _reply(ticket_id, customer_text),
    ]


def _refund_fields(inp: dict[str, Any], untrusted_keys: list[str]) -> tuple[dict[str, Any], list[str], list[str]]:
    """Refund args and which of them are tainted (came from untrusted text), and which are missing.

    Amount and order come from the helpdesk's structured fields when present (trusted) and are
    otherwise extracted from the ticket text. A payee the ticket text names explicitly wins over the
    payee on file: the customer asked for it, so it is proposed, marked tainted, and policy decides.
    """
    trusted, untrusted = split_input(inp, untrusted_keys)
    text = " ".join(str(v) for v in untrusted.values())
    extracted: dict[str, Any] = {
        "payee_id": _payee_named(text),
        "amount_usd": float(m.group(1) or m.group(2)) if (m := _AMOUNT.search(text)) else None,
        "order_id": m.group(1) if (m := _ORDER.search(text)) else None,
    }
    args: dict[str, Any] = {}
    tainted: list[str] = []
    missing: list[str] = []
    for arg, from_text in extracted.items():
        on_file = trusted.get(arg)
        if on_file not in (None, "") and not (arg == "payee_id" and from_text and from_text != on_file):
            args[arg] = float(on_file) if arg == "amount_usd" else str(on_file)
        elif from_text is not None:
            args[arg] = from_text
            tainted.append(arg)
        else:
            missing.append(arg)
    return args, tainted, missing


def plan_support_triage(task: TaskSubmittedData) -> list[PlannedStep]:
    """The support-triage playbook: tag, note, the ticket's action, and a reply draft."""
    inp = task.input
    ticket = str(inp.get("ticket_id", ""))
    if not ticket:
        return []
    text = f"{inp.get('subject', '')}\n{inp.get('body', '')}"
    category, tags = classify_ticket(text)
    customer = inp.get("customer_name") or "there"
    tag = PlannedStep(tool="tag_ticket", args={"ticket_id": ticket, "tags": tags}, rationale=f"classified as {category} by keywords")
    if category == "refund":
        args, tainted, missing = _refund_fields(inp, task.untrusted_keys)
        if missing:
            return [
                tag,
                _note(ticket, f"Refund requested but {', '.join(missing)} could not be determined; a human must check the order."),
                _reply(
                    ticket, f"Hi {customer}, thanks for reaching out. Could you send us the order number so we can look into your refund?"
                ),
            ]
        source = "extracted from the ticket body (untrusted)" if tainted else "from the helpdesk's structured fields"
        refund = PlannedStep(
            tool="issue_refund",
            args={**args, "reason": f"ticket {ticket}"},
            rationale=f"customer asked for a refund; details {source}",
            tainted_args=tainted,
            on_deny=handoff_steps(
                ticket,
                f"Refund of {_money(args['amount_usd'])} to {args['payee_id']} for {args['order_id']}",
                f"Hi {customer}, thanks for your patience. Our team is reviewing your refund request and will follow up shortly.",
            ),
        )
        return [
            tag,
            _note(
                ticket, f"Refund request: {_money(args['amount_usd'])} for order {args['order_id']} to payee {args['payee_id']} ({source})."
            ),
            PlannedStep(
                tool="lookup_order",
                args={"order_id": args["order_id"]},
                rationale="check the order that documents the refund",
                tainted_args=["order_id"] if "order_id" in tainted else [],
                required=False,
                continue_on_failure=True,
            ),
            refund,
            _reply(
                ticket,
                f"Hi {customer}, we have refunded {_money(args['amount_usd'])} for order {args['order_id']}; expect it within 5-10 days.",
            ),
        ]
    if category == "account_deletion":
        subject = str(inp.get("customer_id", ""))
        plan_text = (
            f"Account deletion requested for {subject or 'an unidentified customer'}. Plan for a human: verify identity, "
            "export records under legal hold, delete the CRM record and personal data, confirm to the customer."
        )
        steps = [tag, _note(ticket, plan_text, "draft the deletion plan for a human")]
        if not subject:
            return [*steps, _reply(ticket, f"Hi {customer}, we received your request and a member of our privacy team will contact you.")]
        delete = PlannedStep(
            tool="delete_customer_data",
            args={"customer_id": subject, "reason": f"customer request on ticket {ticket}"},
            rationale="the customer asked to delete their account",
            on_deny=handoff_steps(
                ticket,
                f"Deletion of {subject}'s data",
                f"Hi {customer}, we received your deletion request. Our privacy team will verify it and complete it within 30 days.",
            ),
        )
        return [*steps, delete, _reply(ticket, f"Hi {customer}, your account and personal data have been deleted.")]
    if category == "bulk_email":
        trusted, _ = split_input(inp, task.untrusted_keys)
        recipients = [str(r) for r in trusted.get("recipients") or []]
        email_tainted = [k for k, src in (("subject", "email_subject"), ("body", "email_body")) if not trusted.get(src)]
        subject = str(trusted.get("email_subject") or inp.get("subject") or f"Update regarding ticket {ticket}")[:300]
        body = str(trusted.get("email_body") or inp.get("body") or "Hello, we have an update for you.")
        if not recipients:
            return [tag, _note(ticket, "Bulk email requested without a recipient list; a human must build the audience.")]
        email = {"to": recipients, "subject": subject, "body": body}
        send = PlannedStep(
            tool="send_email",
            args=email,
            rationale=f"email {len(recipients)} customers as the ticket asks",
            tainted_args=email_tainted,
            on_deny=[
                PlannedStep(
                    tool="draft_email",
                    args=email,
                    rationale="save the email as a draft for a human to review and send",
                    tainted_args=email_tainted,
                ),
                _note(
                    ticket,
                    f"Email to {len(recipients)} recipients not sent by the agent: {{reason}}. Saved as a draft for review.",
                    "hand off",
                ),
            ],
        )
        return [tag, _note(ticket, f"Bulk email to {len(recipients)} recipients requested: {subject!r}."), send]
    topic = tags[1] if len(tags) > 1 else "general"
    replies = {
        "login": "we have sent you a password reset link; let us know if you still cannot sign in.",
        "shipping": "we are checking the delivery status of your order with the carrier and will update you within one business day.",
        "billing": "we are reviewing your invoice and will get back to you shortly.",
        "bug": "thanks for the report; our engineers are looking into it.",
    }
    reply_text = replies.get(topic, "thanks for reaching out; we are looking into your request.")
    return [
        tag,
        _note(ticket, f"Triage: {', '.join(tags)}. No account change needed; reply drafted for review."),
        _reply(ticket, f"Hi {customer}, {reply_text}"),
    ]


def plan_support_triage_on_its_systems(task: TaskSubmittedData) -> list[PlannedStep]:
    """The support-triage playbook, re-addressed to the connectors the task's trusted input names (if any)."""
    trusted, _ = split_input(task.input, task.untrusted_keys)
    return on_connectors(plan_support_triage(task), trusted)


PLAYBOOKS: dict[str, Callable[[TaskSubmittedData], list[PlannedStep]]] = {"support_triage": plan_support_triage_on_its_systems}
