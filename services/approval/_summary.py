"""What a person needs to decide a request, in a few fields: the subject line of a queue, the money, the record, what approving does.

Pure: built from the request (its args and the facts the policy computed) and the tool's catalog entry. The page, the
CLI, the API and the webhook messages show the same summary, so two refunds of one amount read apart by their payee
and record. Everything here that an agent wrote (args) is data, shown as text, never markup. While another approver's
edit waits for concurrence, the summary is of the edited call (what Approve approves), saying who edited it and from what.
"""

from __future__ import annotations

import json
from typing import Any

from schemas import ToolSpec
from servicekit import ToolCatalog
from servicekit.costs import ReviewPrice
from servicekit.instruction_passages import KINDS
from servicekit.printable import printable
from services.approval._view_args import key_args
from services.approval.domain import ApprovalRecord

__all__ = ["DECLARED_TAINT", "SUBJECT_MAX", "VALUE_MAX", "decision_summary", "pending_edit", "summary"]

SUBJECT_MAX = 160  # characters of a queue line's subject; a longer one ends with "…"
VALUE_MAX = 60  # characters of one value inside the subject


def _cut(value: Any, limit: int = VALUE_MAX) -> str:
    text = value if isinstance(value, str) else repr(value)
    # One line, and what does not print shown escaped (`\u202e`): a value an agent wrote can neither break the queue line
    # nor reorder or hide itself where a webhook receiver or an API client shows the subject as it is.
    text = printable(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _listed(value: Any) -> str:
    """A key arg as the subject says it: a list of plain values (an email's recipients) one after another, not as Python's repr.

    A list whose items hold a comma (one address that would read as two) or are not plain values is written as JSON.
    """
    if isinstance(value, list) and value and all(isinstance(v, str | int | float) and "," not in str(v) for v in value):
        return ", ".join(str(v) for v in value)
    return json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else value


def _arg(args: dict[str, Any], path: str | None) -> Any:
    value: Any = args
    for part in (path or "").split("."):
        if not path or not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _amount_arg(args: dict[str, Any], spec: ToolSpec | None) -> float | None:
    value = _arg(args, spec.facts.amount if spec else None)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _amount(record: ApprovalRecord, spec: ToolSpec | None) -> float | None:
    fact = record.facts.get("amount_usd")
    if isinstance(fact, int | float) and not isinstance(fact, bool):
        return float(fact)
    return _amount_arg(record.args, spec)


def _on_approve(record: ApprovalRecord, spec: ToolSpec | None, edit: dict[str, Any] | None) -> str:
    if record.kind == "follow_up":
        return "records that the call took effect (reject: that it did not); nothing is retried or run again"
    args = "these args" if edit is None else f"the args as {edit['by']} edited them (the call as proposed is shown as the original)"
    then = f"the policy service checks the call again and, if it still holds, the executor calls {record.tool} once with {args}"
    if record.required_approvals > 1:
        then = f"once {record.required_approvals} approvers agree, " + then
    if record.facts.get("irreversible"):
        return then + "; it cannot be undone"
    if record.facts.get("reversible"):
        return then + "; it can be undone afterwards (`tidegate undo`)"
    return then


DECLARED_TAINT = "the agent says it took the value from content the task read that nobody vouched for (its `tainted_args`)"


def _covers(found: str, arg: str) -> bool:
    return found == arg or found.startswith(arg + ".") or arg.startswith(found + ".")


QUOTE_SIDE = 400  # characters of a quote's side shown at most (the policy quotes 160: a stored row rewritten longer is cut)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _quote(excerpt: Any, source: Any) -> dict[str, Any] | None:
    """What the untrusted text said around the value (`facts.taint[].excerpt`, signed by the policy), bounded, as text."""
    if not isinstance(excerpt, dict):
        return None
    return {
        "source": str(source or ""),
        "field": str(excerpt.get("field", ""))[:QUOTE_SIDE],
        "before": str(excerpt.get("before", ""))[-QUOTE_SIDE:],
        "match": str(excerpt.get("match", ""))[:QUOTE_SIDE],
        "after": str(excerpt.get("after", ""))[:QUOTE_SIDE],
        "at": _count(excerpt.get("at")),
        "length": _count(excerpt.get("length")),
    }


PASSAGE_SHOWN = 400  # characters of a flagged passage shown at most (the policy signs 320)
PASSAGES_SHOWN = 6  # passages of one source shown at most
SOURCES_SHOWN = 4  # sources whose passages are shown at most
MARKS_SHOWN = 12  # flagged spans of one passage at most


def _mark(mark: Any) -> dict[str, Any] | None:
    if not isinstance(mark, dict) or str(mark.get("kind")) not in KINDS:
        return None
    at, length = _count(mark.get("at")), _count(mark.get("length"))
    if at is None or length is None:
        return None
    out = {"kind": str(mark["kind"]), "what": KINDS[str(mark["kind"])], "at": at, "length": length}
    if mark.get("hidden_text"):
        out["hidden_text"] = str(mark["hidden_text"])[:PASSAGE_SHOWN]
    return out


def _passage(passage: Any) -> dict[str, Any] | None:
    if not isinstance(passage, dict) or _count(passage.get("at")) is None:
        return None
    marks = [m for m in map(_mark, passage.get("marks") or []) if m is not None][:MARKS_SHOWN]
    return {
        "field": str(passage.get("field", ""))[:PASSAGE_SHOWN],
        "at": _count(passage.get("at")),
        "length": _count(passage.get("length")),
        "text": str(passage.get("text", ""))[:PASSAGE_SHOWN],
        "marks": marks,
    }


def _passages(record: ApprovalRecord) -> list[dict[str, Any]]:
    """The instruction-like passages of the sources the call's values were read in (`facts.untrusted_passages`).

    Signed by the policy; bounded here, each flag's kind said in words (`what`), as text for the page and the CLI to reveal.
    """
    found = record.facts.get("untrusted_passages")
    out: list[dict[str, Any]] = []
    for source in found if isinstance(found, list) else []:
        if not isinstance(source, dict) or not isinstance(source.get("passages"), list):
            continue
        passages = [p for p in map(_passage, source["passages"][:PASSAGES_SHOWN]) if p is not None]
        if passages:
            found_n = _count(source.get("found"))
            out.append({"source": str(source.get("source", "")), "found": max(found_n or 0, len(passages)), "passages": passages})
    return out[:SOURCES_SHOWN]


def _untrusted(record: ApprovalRecord, *, quotes: bool = True) -> list[dict[str, Any]]:
    """Args whose values came from content outside the tenant (a ticket, an email), as the policy found them.

    Every important arg the policy counted as tainted (`tainted_important_args`, the `tainted_argument` escalation) is
    among them: with where its value was read (`taint`), or, when the policy found no source for it (a value the
    tenant knows, such as a payee it paid before, that only the untrusted text named), that the agent declared it.
    One line per arg and source (`id:cus_1` and `word:cus_1` are one value to a person); with `quotes`, the policy's
    excerpt of the text around the value (`excerpt`), which the page and the CLI show as text, marked untrusted.
    """
    taint = record.facts.get("taint")
    by_source: dict[tuple[str, str], dict[str, Any]] = {}  # the first finding of each, with the first quote of any of them
    for t in taint if isinstance(taint, list) else []:
        if not isinstance(t, dict):
            continue
        entry = by_source.setdefault(
            (str(t.get("arg", "")), str(t.get("source", ""))), {"arg": str(t.get("arg", "")), "why": str(t.get("why", ""))}
        )
        if quotes and "excerpt" not in entry and (quote := _quote(t.get("excerpt"), t.get("source"))) is not None:
            entry["excerpt"] = quote
    found = list(by_source.values())
    important = record.facts.get("tainted_important_args")
    for arg in important if isinstance(important, list) else []:
        if not any(_covers(f["arg"], str(arg)) for f in found):
            found.append({"arg": str(arg), "why": DECLARED_TAINT})
    return found


def _proposed_payee(record: ApprovalRecord, spec: ToolSpec | None) -> Any:
    return record.facts.get("payee") or _arg(record.args, spec.facts.payee if spec else None)


def _figures(record: ApprovalRecord, args: dict[str, Any], spec: ToolSpec | None, *, proposed: bool) -> tuple[float | None, Any, Any]:
    """The amount, payee and record id of a call: as proposed, the policy's facts first; an edited call's, its args alone."""
    if proposed:
        return (
            _amount(record, spec),
            _proposed_payee(record, spec),
            record.facts.get("record_id") or _arg(args, spec.facts.record if spec else None),
        )
    return _amount_arg(args, spec), _arg(args, spec.facts.payee if spec else None), _arg(args, spec.facts.record if spec else None)


def _parts(
    record: ApprovalRecord, args: dict[str, Any], spec: ToolSpec | None, key_args: list[str], *, proposed: bool
) -> list[tuple[str, str]]:
    """The subject's parts of a call, each named: `amount`, `payee`, `record`, then the other key args.

    `proposed`: the call as proposed, which the policy's facts describe; an edited call's figures are its args alone.
    """
    amount, payee, record_id = _figures(record, args, spec, proposed=proposed)
    record_arg = spec.facts.record if spec else None
    parts: list[tuple[str, str]] = []
    if record.kind == "follow_up":
        error = record.result_error or {}
        parts.append(("outcome", f"outcome unknown: {_cut(error.get('type', 'no error reported'))}"))
    if amount is not None:
        parts.append(("amount", f"{amount:,.2f} USD"))
    if payee is not None:
        new = record.facts.get("payee_is_new") and (proposed or payee == _proposed_payee(record, spec))
        parts.append(("payee", f"to {_cut(payee)}" + (" (new payee)" if new else "")))
    if record_id is not None:
        parts.append(("record", f"{record_arg or 'record'} {_cut(record_id)}"))
    shown = {(path or "").split(".")[0] for path in (spec.facts.amount, spec.facts.payee, record_arg)} if spec else set()
    for name in key_args:  # the other args the catalog says matter (recipients, the ticket…), then nothing an agent wrote freely
        if name not in shown and name in args:
            parts.append((name, f"{name} {_cut(_listed(args[name]))}"))
    return parts


def _read(record: ApprovalRecord, record_id: Any) -> Any:
    """What a trusted read said of the entry, as the policy found it: only of the entry the policy saw (an edit may name another)."""
    return record.facts.get("record_read") if str(record_id) == str(record.facts.get("record_id")) else None


def _subject(parts: list[tuple[str, str]], args: dict[str, Any]) -> str:
    return " · ".join(text for _, text in parts) or ", ".join(f"{k} {_cut(v, 30)}" for k, v in list(args.items())[:3])


def pending_edit(record: ApprovalRecord) -> tuple[str, dict[str, Any]] | None:
    """Who edited a pending request's call, and the edited args, while the edit waits for other approvers (None: no edit)."""
    if record.kind != "approval" or not record.is_pending or record.edited_args is None:
        return None
    by = getattr(record, "edited_by", None) or (record.approvers[0] if record.approvers else None)  # the edit's first approver
    return str(by or "an approver"), record.edited_args


def _edit(record: ApprovalRecord, spec: ToolSpec | None, key_args: list[str]) -> dict[str, Any] | None:
    """A pending edit as the approver reads it: by whom, the args it changed, and what the changed parts were (`from`)."""
    edit = pending_edit(record)
    if edit is None:
        return None
    by, edited = edit
    missing = object()
    changed = sorted(k for k in {*record.args, *edited} if record.args.get(k, missing) != edited.get(k, missing))
    was, now = _parts(record, record.args, spec, key_args, proposed=True), dict(_parts(record, edited, spec, key_args, proposed=False))
    before = [text for name, text in was if now.get(name) != text]
    said = f"edited by {by} from {', '.join(before)}" if before else f"edited by {by} ({', '.join(changed) or 'no arg changed'})"
    return {"by": by, "changed": changed, "said": said, "original_subject": _cut(_subject(was, record.args), SUBJECT_MAX)}


def summary(
    record: ApprovalRecord, spec: ToolSpec | None, *, review_usd: float, key_args: list[str], quotes: bool = True
) -> dict[str, Any]:
    """The request at a glance (`subject`) and what deciding it means (money, payee, record, what approving does, its price).

    Of a pending request another approver edited: the edited call (what Approve approves), its subject opening with
    who edited it and from what (`edited by bob@… from 899.00 USD: 450.00 USD · …`), the call as proposed in `edit`.
    """
    edit = _edit(record, spec, key_args)
    args = record.args if edit is None else record.edited_args or {}
    proposed = edit is None
    amount, payee, record_id = _figures(record, args, spec, proposed=proposed)
    record_arg = spec.facts.record if spec else None
    subject = _subject(_parts(record, args, spec, key_args, proposed=proposed), args)
    same_payee = payee is not None and (proposed or payee == _proposed_payee(record, spec))
    return {
        "subject": _cut(subject if edit is None else f"{edit['said']}: {subject}", SUBJECT_MAX),
        "amount_usd": amount,
        "payee": None if payee is None else str(payee),
        "payee_is_new": record.facts.get("payee_is_new") if same_payee else None,  # the policy's fact is of the payee it saw
        "record": None if record_id is None else {"arg": record_arg, "id": str(record_id), "read": _read(record, record_id)},
        "tool_does": spec.description if spec else None,
        "on_approve": _on_approve(record, spec, edit),
        "edit": edit,
        "untrusted_args": _untrusted(record, quotes=quotes),
        **({"untrusted_passages": _passages(record)} if quotes else {}),  # not in a webhook message (`decision_summary`)
        "proposer": record.proposer,
        "rationale": record.rationale,
        "human_review_usd": round(review_usd, 2),
    }


def decision_summary(record: ApprovalRecord, catalog: ToolCatalog | None, price: ReviewPrice, *, quotes: bool = True) -> dict[str, Any]:
    """`summary` of a request with its tool's catalog entry and the price of a human decision (`servicekit.costs`, the one place).

    `quotes=False` (a webhook message) leaves out the untrusted text the policy quoted or flagged (`untrusted_passages`): an
    attacker's words go to the page and the CLI, which show them as text and marked, never to a chat receiver that may
    render them as markup.
    """
    spec = catalog[record.tool] if catalog is not None and record.tool in catalog else None
    return summary(record, spec, review_usd=price.per_decision_usd, key_args=key_args(catalog, record.tool), quotes=quotes)
