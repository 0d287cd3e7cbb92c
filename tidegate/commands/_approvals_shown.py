"""How the approvals commands show a request to a person, and whether one is at the terminal to confirm it.

Every value is `shown` (its markup and line breaks made inert). Each function returns the lines (rich markup) for
the command to print; none prints or calls the service.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

from tidegate.commands._common import TEXT_MAX, shown

__all__ = ["decision_did", "interactive", "outcome_line", "queue_lines", "request_lines", "watched", "why_not"]

CONTEXT_ARGS_MAX = 300  # characters of an earlier call's args in `show` (cut with …; `--json` has them all)


def interactive() -> bool:
    """Whether a person at a terminal can confirm what is shown (not a script, not a pipe)."""
    return sys.stdin.isatty()


def watched() -> bool:
    """Whether a person reads the output as it comes (a terminal, not a pipe or a script's capture)."""
    return sys.stdout.isatty()


def minute(iso: str) -> str:
    """A time of the API as a person reads it in a queue: `2026-12-05 05:40 UTC` (as given when it is not ISO 8601)."""
    try:
        return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return iso


def until(iso: str, now: datetime | None = None) -> str:
    """A pending request's expiry as the page says it: `2026-12-05 05:40 UTC (in 12 min; … nothing runs)`.

    Counted from now in whole minutes rounded down: a deadline is never said later than it is.
    """
    try:
        left = datetime.fromisoformat(iso).astimezone(UTC) - (now or datetime.now(UTC))
    except ValueError:
        return iso
    whole = int(abs(left.total_seconds()) // 60)
    if left.total_seconds() >= 0:
        return f"{minute(iso)} (in {f'{whole} min' if whole else 'under a minute'}; undecided by then, it expires and nothing runs)"
    return f"{minute(iso)} ({f'{whole} min' if whole else 'under a minute'} ago, undecided: nothing ran)"


def deciders(item: dict[str, Any]) -> list[str]:
    """Who decided a settled request: every approver of a grant (a quorum of two names both), else whoever decided it."""
    if item["status"] == "pending":
        return []
    names = list(item.get("approvers") or []) if item["status"] == "granted" else []
    if item.get("decided_by") and item["decided_by"] not in names:
        names.append(item["decided_by"])
    return names


def decided(item: dict[str, Any]) -> str | None:
    """Who settled a request and when (`granted by bob@…, carol@… at …`); None while it is open or when nobody decided it."""
    if not (names := deciders(item)):
        return None
    found = f" ({item['resolution']})" if item.get("resolution") else ""
    at = f" at {item['decided_at']}" if item.get("decided_at") else ""
    return f"{item['status']}{found} by {', '.join(names)}{at}"


def second(iso: str) -> str:
    """A time of the API to the second, as the page shows it: `2026-12-05 05:40:12 UTC` (as given when it is not ISO 8601)."""
    try:
        return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return iso


def outcome_said(outcome: dict[str, Any] | None) -> str:
    """What became of a granted call, in words (the API's `outcome`; the page says the same)."""
    if outcome is None:
        return "no result yet"
    if outcome["status"] in ("denied_by_policy", "expired_unused"):
        return str(outcome.get("message") or outcome["status"])
    reason = f" ({outcome['reason']}: {outcome.get('message')})" if outcome.get("reason") else ""
    return f"{outcome['status']}{reason} at {second(str(outcome.get('at')))}"


def decision_did(item: dict[str, Any]) -> str | None:
    """What the decision just recorded does next, in words: the line under `approve`'s and `reject`'s answer.

    The answer said `ap-…: granted` and no more: whether the refund then ran was `show`'s to tell, and nothing said so.
    """
    if item.get("kind", "approval") == "follow_up":
        return "recorded what happened; nothing is retried" if item["status"] == "resolved" else None
    if item["status"] == "rejected":
        return "nothing runs: the call is not made, and the agent is told it was rejected"
    if item["status"] != "granted":
        return None
    if item.get("outcome") is not None:
        return "what became of it: " + outcome_said(item["outcome"])
    return (
        f"what became of it: no result yet: the policy service checks the call again, then the executor calls {item['tool']} "
        f"once; `tidegate approvals show {item['approval_id']}` says what became of it"
    )


def quote_lines(quote: dict[str, Any] | None) -> list[str]:
    """What the untrusted text said around the value, as the policy quoted it: on one line, every character printable, `>>…<<` the value."""
    if not quote:
        return []
    at, length = quote.get("at"), quote.get("length")
    before, match, after = (str(quote.get(k) or "") for k in ("before", "match", "after"))
    where = head = tail = ""
    if isinstance(at, int) and isinstance(length, int):
        where = f", character {at:,} of {length:,}"
        head = "…" if at > len(before) else ""
        tail = "…" if at + len(match) + len(after) < length else ""
    said = f"{head}{shown(before, None)}>>{shown(match, None)}<<{shown(after, None)}{tail}"
    return [
        f"  [red]it says (UNTRUSTED text the task read, never instructions; {shown(quote.get('field'))}{where}):[/]",
        f"    {said}",
    ]


def passage_lines(source: dict[str, Any]) -> list[str]:
    """The instruction-like passages the policy flagged in an untrusted text: one line each, printable, `>>…<<` the flagged spans."""
    passages = source.get("passages") or []
    marks = sum(len(p.get("marks") or []) for p in passages)  # the flags shown; `found` counts those of the whole text
    more = f"; {source['found']:,} flagged, the first {marks} shown" if source.get("found", 0) > marks else ""
    lines = [
        f"  [red]it also says, instruction-like (UNTRUSTED, flagged by the policy as written to steer an AI agent; never "
        f"instructions; {shown(source.get('source'))}{more}):[/]"
    ]
    for p in passages:
        text, at, length = str(p.get("text") or ""), int(p.get("at") or 0), p.get("length")
        cuts = sorted((max(0, m["at"] - at), min(len(text), m["at"] - at + m["length"])) for m in p.get("marks") or [])
        said, last = "", 0
        for a, b in cuts:
            if b <= last or a >= len(text):
                continue
            a = max(a, last)
            said += f"{shown(text[last:a], None)}>>{shown(text[a:b], None)}<<"
            last = b
        said += shown(text[last:], None)
        head = "…" if at > 0 else ""
        tail = "…" if isinstance(length, int) and at + len(text) < length else ""
        kinds = ", ".join(dict.fromkeys(str(m.get("kind")) for m in p.get("marks") or []))
        where = f"{shown(p.get('field'))}, character {at:,}" + (f" of {length:,}" if isinstance(length, int) else "")
        lines.append(f"    ({where}; {shown(kinds)}) {head}{said}{tail}")
        lines.extend(
            f"      invisible tag characters spell: {shown(m['hidden_text'], None)}" for m in p.get("marks") or [] if m.get("hidden_text")
        )
    return lines


def record_lines(found: dict[str, Any] | None) -> list[str]:
    """The entry the call acts on beside the task's trusted reads of it (`record_reads`): "not checked", or each read and its figures."""
    if not found:
        return []
    warn = not found["checked"] or any(not c["same"] for r in found["reads"] for c in r["compared"])
    said = f"{shown(found['arg'])} {shown(found['id'])} as the task read it: {shown(found['said'], TEXT_MAX)}"
    lines = [f"[yellow]{said}[/]" if warn else said]
    for read in found["reads"]:
        figures = json.dumps(read["returned"], sort_keys=True) if read.get("returned") else "what it returned is not kept here"
        lines.append(f"  {shown(read['tool'])} (action {shown(read['action_id'])}) {shown(read['status'])}: {shown(figures, TEXT_MAX)}")
    return lines


def why_not(item: dict[str, Any]) -> str:
    """Why the caller cannot decide it: `already …` for a settled request (the service's reason may name a group instead)."""
    settled = decided(item)
    return f"already {settled}" if settled else str(item["cannot_decide_because"])


def not_counted(item: dict[str, Any]) -> list[str]:
    """A line for each approval the request's row holds that the service does not count: who, why, and what to do."""
    return [
        f"[yellow]not counted: {shown(n['approver'])}: {shown(n['why'], TEXT_MAX)}; {shown(n['fix'], TEXT_MAX)}[/]"
        for n in item.get("not_counted") or []
    ]


def unproven(item: dict[str, Any]) -> list[str]:
    """The line saying the request's row is not the policy's signed escalation (`not_as_signed`), whatever else holds it.

    A settled request whose row was rewritten since, or one the caller may not decide anyway, is refused for another reason
    first: that reason alone said nothing of the rewrite to the on-call reading it the morning after (review62).
    """
    said = item.get("not_as_signed")
    signer = "the executor" if item.get("kind") == "follow_up" else "the policy"  # a follow-up keeps the executor's unknown outcome
    return [f"[yellow]not as {signer} signed: {shown(said, TEXT_MAX)}[/]"] if said else []


def _approvals(item: dict[str, Any]) -> str:
    """How far the approvals got; of a rejected request, who rejected it (`rejected_by`; its `approvers` are approvals before it)."""
    if item.get("rejected_by"):
        return "rejected by " + str(item["rejected_by"])
    return f"{len(item['approvers'])}/{item['required_approvals']} approvals"


def untrusted_said(summary: dict[str, Any]) -> str | None:
    """The queue's word that a request's args came from untrusted content, and how many flags the policy raised in it.

    The approver scanning the queue at 2 a.m. saw `tainted_argument` as a code only (the quote probe F6); the page says the same.
    """
    args = list(dict.fromkeys(str(u.get("arg")) for u in summary.get("untrusted_args") or []))
    if not args:
        return None
    flags = sum(int(s.get("found") or 0) for s in summary.get("untrusted_passages") or [])
    more = f" · {flags:,} instruction-like passage{'s' if flags != 1 else ''} flagged in it" if flags else ""
    return f"⚠ from untrusted content: {', '.join(args)}{more}"


def queue_lines(item: dict[str, Any]) -> list[str]:
    """A request in the queue, one block: its id, what tells it apart, and whether you may decide it.

    The id comes first and whole whatever the width (a pipe is 80 columns): it is what `approve` and `show` take.
    The second line tells requests apart: the amount, payee and record (the summary).
    """
    lines: list[str] = []
    uncounted = len(item.get("not_counted") or [])
    approvals_so_far = _approvals(item) + (f" ({uncounted} not counted)" if uncounted else "")
    what = f"{item['tool']} · {item['tenant_id']}"
    head = (item["approval_id"], item["status"], what, approvals_so_far)
    lines.append("[bold]{}[/]  {}  {}  {}".format(*map(shown, head)))
    summary = item.get("summary") or {}
    if summary.get("subject"):
        lines.append("  " + shown(summary["subject"], None))
    if said := untrusted_said(summary):
        lines.append(f"  [yellow]{shown(said, None)}[/]")
    decide = "you may decide: " + ("yes" if item["can_decide"] else "no: " + shown(why_not(item), TEXT_MAX))
    reasons = ", ".join(shown(r["code"]) for r in item["reasons"])
    lines.append(f"  {reasons} · expires {shown(minute(item['expires_at']))} · {decide}")
    for said in [*not_counted(item), *unproven(item)]:
        lines.append("  " + said)
    return lines


def request_lines(item: dict[str, Any]) -> list[str]:
    """One request, each value as it is and on its own line (`shown`): text a proposer wrote cannot fake another line."""
    lines: list[str] = []
    what = (item["approval_id"], item["kind"], item["status"], item["tenant_id"])
    lines.append("[bold]{}[/]  {}  [bold]{}[/]  {}".format(*map(shown, what)) + f"  task {shown(item['task_id'])}")
    lines.append(
        f"tool {shown(item['tool'])} (risk {shown(item['risk'])}, costs ~${item.get('estimated_cost_usd') or 0:.4f}), "
        f"requested by {shown(item.get('requested_by') or '?')}, "
        + (f"expires {shown(until(item['expires_at']))}" if item["status"] == "pending" else f"expiry {shown(minute(item['expires_at']))}")
    )
    summary = item.get("summary") or {}
    if summary.get("subject"):
        lines.append("what: " + shown(summary["subject"], None))
    if summary.get("tool_does"):
        lines.append("the tool: " + shown(summary["tool_does"], TEXT_MAX))
    if summary.get("rationale"):
        lines.append("the agent says (its words, not checked): " + shown(summary["rationale"], TEXT_MAX))
    edit = summary.get("edit")
    if edit and item.get("edited_args") is not None:  # another approver's edit waits for concurrence: approve approves it
        lines.append(f"[yellow]{shown(edit['said'], TEXT_MAX)}: approve approves the edited args[/]")
        lines.append("args (edited): " + shown(json.dumps(item["edited_args"], sort_keys=True), limit=None))
        lines.append("args as proposed: " + shown(json.dumps(item["args"], sort_keys=True), limit=None))
    else:
        lines.append("args: " + shown(json.dumps(item["args"], sort_keys=True), limit=None))
    lines.append(f"digest: {shown(item['action_digest'])}")
    lines.extend(unproven(item))  # beside what it shows: what the policy signed, or the row's own text when nothing proves it
    # The id the audit log knows the call by (it knows no approval id): what the on-call gives `audit explain` the morning after.
    if item.get("action_id"):
        lines.append(f"action {shown(item['action_id'])} (its story in the audit log: tidegate audit explain {shown(item['action_id'])})")
    lines.extend(record_lines(item.get("record_reads")))
    for found in summary.get("untrusted_args") or []:
        lines.append(f"[yellow]untrusted: {shown(found['arg'])}: {shown(found['why'], TEXT_MAX)}[/]")
        lines.extend(quote_lines(found.get("excerpt")))
    for source in summary.get("untrusted_passages") or []:
        lines.extend(passage_lines(source))
    if summary.get("on_approve"):
        lines.append("on approve: " + shown(summary["on_approve"], TEXT_MAX))
    for reason in item["reasons"]:
        lines.append(f"  reason [cyan]{shown(reason['code'])}[/] ({shown(reason['policy_id'])}): " + shown(reason["message"], TEXT_MAX))
    if item.get("facts"):
        lines.append("facts: " + shown(json.dumps(item["facts"], sort_keys=True), limit=None))
    if item["status"] == "granted" and item.get("kind", "approval") == "approval":
        lines.append("what became of it: " + shown(outcome_said(item.get("outcome")), TEXT_MAX))
    if item.get("result_error"):
        error = item["result_error"]
        lines.append(f"executor error: {shown(error.get('type'))}: " + shown(error.get("message"), TEXT_MAX))
    if item.get("rejected_by"):
        lines.append("rejected by " + shown(item["rejected_by"]))
    else:
        lines.append(f"approvals: {len(item['approvers'])}/{item['required_approvals']} " + ", ".join(map(shown, item["approvers"])))
    for said in not_counted(item):
        lines.append("  " + said)
    if item.get("killswitch"):
        ks = item["killswitch"]
        lines.append(f"[yellow]kill switch active on {shown(ks['tool'])}@{shown(ks['tenant_id'])}: {shown(ks['reason'], TEXT_MAX)}[/]")
    if not item["can_decide"]:
        lines.append(f"[yellow]you cannot decide it: {shown(why_not(item), TEXT_MAX)}[/]")
    if item.get("same_payee"):  # a split refund's pieces side by side: the facts' paid figure counts no grant since the decision
        lines.append("[yellow]same payee, last 24 h[/] (the facts' paid figure is as of this proposal's decision):")
        for other in item["same_payee"]:
            amount = "" if other.get("amount_usd") is None else f"{other['amount_usd']} USD"
            by = f"by {other['decided_by']}" if other.get("decided_by") else ""
            parts = (other["approval_id"], other["tool"], amount, other["status"], by, minute(other["created_at"]))
            lines.append("  " + "  ".join(shown(part) for part in parts if part))
            if other.get("not_as_signed"):  # listed as signed; the row says otherwise (the approval login wrote it)
                lines.append(f"    [yellow]not as signed: {shown(other['not_as_signed'], TEXT_MAX)}[/]")
    if "cost" in item:
        cost = item["cost"]
        review = summary.get("human_review_usd")
        lines.append(
            f"task cost so far: spent ${cost['spent_usd']:.4f}, reserved ${cost['reserved_usd']:.4f}"
            + (f"; your decision costs ${review:.2f} of a person's time (as `tidegate costs` prices it)" if review is not None else "")
        )
        for ev in item.get("context", []):
            kind = ev["type"].removeprefix("tidegate.")
            line = (ev["at"], kind, ev["action_id"], ev["tool"], ev.get("outcome") or "")
            called = f"  {shown(json.dumps(ev['args'], sort_keys=True), CONTEXT_ARGS_MAX)}" if ev.get("args") else ""
            lines.append("  " + "  ".join(map(shown, line)) + f"  ${ev['cost_usd']:.4f}" + called)
    return lines


def outcome_line(approval_id: str, item: dict[str, Any]) -> str:
    """What became of the request after your decision: its status, and how it was resolved if it was."""
    resolution = f" ({shown(item['resolution'], TEXT_MAX)})" if item.get("resolution") else ""
    return f"{shown(approval_id)}: [bold]{shown(item['status'])}[/]{resolution}"
