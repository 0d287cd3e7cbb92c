"""`tidegate audit explain`'s renderings of a task's explanation: Markdown for a ticket, HTML for a browser.

The audit service explains (`services.audit.explain_task`); how a person reads it is the command line's.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import schemas as s
from servicekit.people import same_person
from servicekit.printable import printable
from servicekit.unreadable import Skipped
from services.audit import (
    FOLLOW_UP_PENDING,
    ActionStory,
    ApprovalStep,
    Explanation,
    LateReply,
    ToolCall,
    approver_credentials,
    credential_text,
)

__all__ = ["render_html", "render_markdown"]


def _money(usd: float) -> str:
    return f"${usd:.4f}" if usd < 1 else f"${usd:.2f}"


def _j(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


# Every line break Markdown or a person's eye takes for one (CR, LF, VT, FF, the separators U+001C–U+001E, NEL, LS, PS).
_BREAKS = re.compile("\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# Markdown's punctuation that can make bold, a code span, a link, an HTML tag or a table cell within a line (what starts a
# line, a heading or a list, cannot: no line break is left). `_` is left as it is: ids hold it (`cus_1001`), and within
# a word it makes nothing.
_MARKUP = re.compile(r"([\\`*\[\]<>|])")


def _md(text: object) -> str:
    """Text from an event (an agent's rationale, a tool's error, an id), as inline Markdown that stays one run of text.

    Whoever wrote it may have written Markdown: a line break then `- **Approval** … granted by bob` read, in a ticket, like
    the explanation's own lines (auditor1 F3). Its line breaks are shown as ⏎, what does not print (a bidi override) as
    an escape, and its punctuation escaped, so it renders
    as the characters it holds and never as a line, a list item, a link or a tag of the explanation.
    """
    return _MARKUP.sub(r"\\\1", printable(_BREAKS.sub(" ⏎ ", str(text))))


def _code(text: str) -> str:
    """`text` as one inline code span, whatever backticks or line breaks it holds (a fence longer than its longest run)."""
    flat = printable(_BREAKS.sub(" ⏎ ", text))
    fence = "`" * (max((len(run) for run in re.findall("`+", flat)), default=0) + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def _cell(text: str) -> str:
    return _md(text)


def _reasons(reasons: Sequence[s.Reason]) -> str:
    return "; ".join(f"`{r.code}` ({_md(r.policy_id)}){': ' + _md(r.message) if r.message else ''}" for r in reasons) or "-"


def _requesters(ap: ApprovalStep) -> str:
    """Who a request's four eyes binds, each as what it is: the task's requester (its signed request), the proposal's requester."""
    task, proposal = ap.task_requested_by, ap.requested_by
    if task and (not proposal or same_person(task, proposal)):
        return f"by {_md(task)} (the task's requester)"
    if task:
        return f"by {_md(proposal)} (the proposal's requester) in the task of {_md(task)} (the task's requester); neither may approve"
    # The policy had not learned the task (nobody submitted it, or the request predates `task_requested_by`).
    return f"by {_md(proposal)} (the proposal's requester)" if proposal else "by an unnamed requester"


def _who(ap: ApprovalStep) -> str:
    """An approval step's status and who it names: a decision's approvers, a request's requesters, an expiry's clock."""
    said = _md(ap.status) + (f" ({_md(ap.resolution)})" if ap.resolution else "")
    if ap.status == "requested":
        return f"{said} {_requesters(ap)}"
    if ap.status == "expired":
        return f"{said} unanswered: closed by {_md(ap.source or 'the approval service')} {_expiry_kept(ap)}, no human decided"
    return f"{said} by {_md(', '.join(ap.approvers) or ap.approver or 'an unnamed approver')}"


CLOSED_LATE_S = 5.0
"""An expiry closed this much after the request's deadline is said late: the approval's sweep looks every 2 s."""


def _expiry_kept(ap: ApprovalStep) -> str:
    """When an expired request was closed against its deadline: `at its expiry`, or how late.

    Late when the approval service or its database was down: an on-call probe read "closed … at its expiry … at 02:57:09"
    for a request whose expiry was 02:56:08.
    """
    closed = ap.decided_at  # when the approval service closed it (the event's `time` may be stamped by a later publish)
    if ap.expires_at is None or closed is None or (closed - ap.expires_at).total_seconds() <= CLOSED_LATE_S:
        return "at its expiry"
    late = (closed - ap.expires_at).total_seconds()
    return f"{_duration(late)} after its expiry ({ap.expires_at}; the approval service or its database was down or behind)"


def _approval_line(ap: ApprovalStep) -> str:
    """One approval step (an `ApprovalStep`) as a Markdown bullet."""
    return (
        f"- **Approval** {_md(ap.approval_id)} {_who(ap)} at {ap.decided_at or ap.at}"
        + (f"; expires {ap.expires_at}" if ap.status == "requested" and ap.expires_at else "")
        + (f": “{_md(ap.comment)}”" if ap.comment else "")
        + (f" (reason: {_code(ap.review_reason)})" if ap.review_reason else "")
        + (f"; edited args {_code(_j(ap.edited_args))}" if ap.edited_args else "")
        + "".join(f"\n  - **Authenticated** {_md(who)}: {credential_text(c, _code)}" for who, c in ap.credentials.items())
    )


def _late(r: LateReply) -> str:
    """A reply the executor did not take, in words: what it says of the call and what to do."""
    when = (
        f"at {r.at} (attempt {r.attempt}), after the executor gave up"
        if r.after_end
        else f"at {r.at} to attempt {r.attempt}, which the executor no longer waited for"
    )
    if r.ok:
        return f"the tool replied ok {when}: it probably happened; check the system of record"
    error = f"{r.error.type}: {r.error.message}" if r.error else "an error"
    maybe = "; it may have taken effect" if r.error is None or r.error.maybe_applied else ""
    return f"the tool replied {error} {when}{maybe}; check the system of record"


def _follow_up(action_id: str, follow_up: str | None) -> str | None:
    """Of a call whose outcome is unknown, where its follow-up stands, as far as the log can know (its opening is off the bus)."""
    if follow_up != "pending":
        return None
    return f"{FOLLOW_UP_PENDING}: no `approval.resolved` recorded yet (`tidegate approvals list --action {action_id}` shows the follow-up)"


def _all_verify(x: Explanation) -> str:
    return f"each of the {x.records} verifies from its own value (signature, columns)"


def _not_evidence(x: Explanation) -> str:
    return f"WARNING: {len(x.unverified or [])} row(s) do not verify from their own value; what they say below is not evidence"


def _checked(x: Explanation) -> list[str]:
    """Markdown: whether the rows told were each observed again from their own value, and those that do not verify, named."""
    if x.unverified is None:
        return []
    if not x.unverified:
        return [f"- **Rows checked:** {_all_verify(x)}; the chain's hashes: `tidegate audit verify`"]
    return [f"- **{_not_evidence(x)}:**", *(f"  - {_md(problem)}" for problem in x.unverified)]


def _checked_html(x: Explanation) -> list[str]:
    """`_checked` as HTML: the problems escaped as they are (not as Markdown escaped them)."""
    e = html.escape
    if x.unverified is None:
        return []
    if not x.unverified:
        return [f"<p>Rows checked: {e(_all_verify(x))}; the chain's hashes: <code>tidegate audit verify</code></p>"]
    items = "".join(f"<li>{e(problem)}</li>" for problem in x.unverified)
    return [f"<div class='untrusted'><p>{e(_not_evidence(x))}:</p><ul>{items}</ul></div>"]


def render_markdown(x: Explanation) -> str:
    """The explanation as Markdown, for a reviewer or a ticket."""
    out = [f"# Task {_md(x.task_id)}", ""]
    out += [
        f"- **Tenant:** {_md(x.tenant_id or '-')}",
        f"- **Workflow:** {_md(x.workflow or '-')} (mode {_md(x.mode or '-')})",
        f"- **Requested by:** {_md(x.requested_by or '-')}",
        f"- **Status:** {_md(x.status)}" + (f": {_md(x.summary)}" if x.summary else ""),
        f"- **Submitted:** {x.submitted_at or '-'}; **ended:** {x.ended_at or '-'}",
        f"- **Policy versions:** {_md(', '.join(x.policy_versions) or '-')}"
        + (" (each pack's text: `tidegate audit policy VERSION`, or `--archive FILE` offline)" if x.policy_versions else ""),
        f"- **Trace ids:** {_md(', '.join(x.trace_ids) or '-')}",
        f"- **Audit records:** {x.records}" + (f" ({_skipped(x.skipped)}, listed under dead letters)" if x.skipped else ""),
        *_checked(x),
        "",
        "## Sources referenced",
        "",
    ]
    if x.sources:
        out += ["| field | value | trust |", "|---|---|---|"]
        for k, v in x.sources.items():
            trust = "**untrusted** (content, never instructions)" if k in x.untrusted_fields else "trusted"
            out.append(f"| {_cell(k)} | {_cell(_j(v)[:300])} | {trust} |")
    else:
        out.append("No `task.submitted` recorded for this task.")
    out += ["", "## Actions", ""]
    for a in x.actions:
        out += [f"### Step {a.step if a.step is not None else '?'}: {_code(a.tool or '?')} ({_md(a.action_id)})", ""]
        rationale = f"“{_md(a.rationale)}” (the proposer's words)" if a.rationale else "-"
        out.append(f"- **Proposed by:** {_md(a.proposer or '-')}{_signed(a, _md)}; **rationale:** {rationale}")
        out.append(f"- **Args:** {_code(_j(a.args))}")
        if a.tainted_args:
            out.append(f"- **Tainted args (from untrusted sources):** {_md(', '.join(a.tainted_args))}")
        for d in a.decisions:
            out.append(
                f"- **Policy** {_md(d.policy_version)} → **{_md(d.outcome)}** (via {_md(d.via)}, risk {_md(d.risk or '-')}, "
                f"{d.latency_ms:.1f} ms): {_reasons(d.reasons)}; facts {_code(_j(d.facts))}"
            )
            shadow = d.facts.get("shadow")
            if isinstance(shadow, dict) and shadow.get("fired"):
                out.append(
                    f"  - **Shadow policies** {_md(', '.join(map(str, shadow['fired'])))} "
                    f"would have decided **{_md(shadow.get('outcome'))}**"
                    + (" (a flip; not enforced)" if shadow.get("flipped") else " (no change)")
                )
            for t in d.facts.get("taint") or []:
                if isinstance(t, dict):
                    out.append(f"  - **Tainted by Tidegate:** {_code(str(t.get('arg')))}: {_md(t.get('why'))}")
            if d is a.decisions[0] and (waited := _waited(a)):
                out.append(f"  - **Waited:** {_md(waited)}")
        out += [_approval_line(ap) for ap in a.approvals if ap.status != "resolved"]
        if a.authorization:
            au = a.authorization
            out.append(f"- **Authorized** via {_md(au.via)} by key {_md(au.key_id)} at {au.issued_at}, expires {au.expires_at}")
            if a.binding is not None:
                out.append(f"- **Bound:** {_md(a.binding)}" if a.bound else f"- **WARNING, not bound:** {_md(a.binding)}")
        for c in a.calls:
            detail = (
                f"result {_code(_j(c.result)[:300])}"
                if c.result is not None
                else (f"error {_md(c.error.type)}: {_md(c.error.message)}" if c.error else "")
            )
            took = f"{c.attempts} attempt(s), {c.duration_ms:.0f} ms, {_money(c.cost_usd)}"
            out.append(f"- **Tool call** {_md(c.status)} after {took}: {detail}")
        for reply in a.late_replies:
            result = f"; result {_code(_j(reply.result)[:300])}" if reply.result is not None else ""
            out.append(f"- **Late reply:** {_md(_late(reply))}{result}")
        if pending := _follow_up(a.action_id, a.follow_up):
            out.append(f"- **Follow-up:** {pending}")
        out += [_approval_line(ap) for ap in a.approvals if ap.status == "resolved"]  # a follow-up resolves the call: after it
        if a.proposal_cost:
            pc = a.proposal_cost
            out.append(f"- **Proposal cost:** {_money(pc.usd)} ({_md(pc.model or 'no model')}, {pc.tokens_in} in / {pc.tokens_out} out)")
        out.append("")
    if not x.actions:
        out += ["No actions.", ""]
    out += ["## Costs", ""]
    costs = x.costs
    if costs.reported:
        r = costs.reported
        out += ["| model | retrieval | tools | orchestration | retries | human review | total |", "|---|---|---|---|---|---|---|"]
        out.append(
            "| "
            + " | ".join(_money(v) for v in (r.model, r.retrieval, r.tools, r.orchestration, r.retries, r.human_review, r.total))
            + " |"
        )
    else:
        out.append(f"Not reported (no task outcome); from its events: model {_money(costs.model_usd)}, tools {_money(costs.tools_usd)}.")
    out += ["", "## Dead-lettered and invalid records", ""]
    if x.dead_letters:
        out += ["| at | topic | offset | code | service | error |", "|---|---|---|---|---|---|"]
        for dl in x.dead_letters:
            where = f"{_cell(dl.topic)}\\[{dl.partition}\\]"
            out.append(f"| {dl.at} | {where} | {dl.offset} | {_cell(dl.code)} | {_cell(dl.service)} | {_cell(dl.error[:200])} |")
    else:
        out.append("None.")
    return "\n".join(out) + "\n"


def _skipped(counts: dict[str, int]) -> str:
    skipped = Skipped()
    skipped.counts.update(counts)
    return skipped.summary()


def _plain_reasons(reasons: Sequence[s.Reason]) -> str:
    return "; ".join(f"{r.code} ({r.policy_id}) {r.message}" for r in reasons)


def _call_detail(c: ToolCall) -> str:
    return _j(c.result) if c.result is not None else _j(c.error.model_dump() if c.error else None)


def render_html(x: Explanation) -> str:
    """The explanation as a self-contained HTML page."""
    e = html.escape

    def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
        head = "".join(f"<th>{e(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>" for row in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def approvals(steps: Sequence[ApprovalStep]) -> list[str]:
        rows = [
            [
                ap.approval_id,
                _who(ap),
                ap.decided_at or ap.at,
                ap.comment,
                ap.review_reason,
                "; ".join(approver_credentials(ap.credentials)),
            ]
            for ap in steps
        ]
        return [table(["approval", "status and who", "at", "comment", "reason", "authenticated"], rows)] if rows else []

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Task {e(x.task_id)}: audit explanation</title>",
        "<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}th{background:#f3f3f3}"
        ".untrusted{color:#a40000;font-weight:bold}code{background:#f6f6f6}</style></head><body>",
        f"<h1>Task {e(x.task_id)}</h1>",
        *_checked_html(x),
        table(
            ["tenant", "workflow", "mode", "requested by", "status", "submitted", "ended", "policy versions", "trace ids"],
            [
                [
                    x.tenant_id,
                    x.workflow,
                    x.mode,
                    x.requested_by,
                    x.status + (f": {x.summary}" if x.summary else ""),
                    x.submitted_at,
                    x.ended_at,
                    ", ".join(x.policy_versions),
                    ", ".join(x.trace_ids),
                ]
            ],
        ),
        "<h2>Sources referenced</h2>",
        table(
            ["field", "value", "trust"],
            [[k, _j(v)[:500], "UNTRUSTED" if k in x.untrusted_fields else "trusted"] for k, v in x.sources.items()],
        ),
        "<h2>Actions</h2>",
    ]
    for a in x.actions:
        parts.append(f"<h3>Step {e(str(a.step))}: <code>{e(a.tool or '?')}</code> ({e(a.action_id)})</h3>")
        said = f"<q>{e(a.rationale)}</q> (the proposer's words)" if a.rationale else "-"
        parts.append(f"<p>Proposed by {e(a.proposer or '-')}{_signed(a, e)}: {said}<br>Args <code>{e(_j(a.args))}</code>")
        if a.tainted_args:
            parts.append(f"<br><span class='untrusted'>Tainted args: {e(', '.join(a.tainted_args))}</span>")
        parts.append("</p>")
        if a.decisions:
            parts.append(
                table(
                    ["policy version", "outcome", "via", "risk", "reasons", "facts"],
                    [[d.policy_version, d.outcome, d.via, d.risk, _plain_reasons(d.reasons), _j(d.facts)]
                     for d in a.decisions],
                )
            )  # fmt: skip
            if waited := _waited(a):
                parts.append(f"<p>Waited: {e(waited)}</p>")
        parts += approvals([ap for ap in a.approvals if ap.status != "resolved"])
        if a.binding is not None:
            parts.append(f"<p><b>Bound:</b> {e(a.binding)}</p>" if a.bound else f"<p><b>WARNING, not bound:</b> {e(a.binding)}</p>")
        if a.calls:
            parts.append(
                table(
                    ["status", "attempts", "duration ms", "cost", "result or error"],
                    [[c.status, c.attempts, f"{c.duration_ms:.0f}", _money(c.cost_usd), _call_detail(c)]
                     for c in a.calls],
                )
            )  # fmt: skip
        if a.late_replies:
            parts.append(
                table(
                    ["late reply", "result or error"],
                    [[_late(r), _j(r.result) if r.result is not None else _j(r.error.model_dump() if r.error else None)]
                     for r in a.late_replies],
                )
            )  # fmt: skip
        if pending := _follow_up(a.action_id, a.follow_up):
            parts.append(f"<p><b>Follow-up:</b> {e(pending)}</p>")
        parts += approvals([ap for ap in a.approvals if ap.status == "resolved"])  # a follow-up resolves the call: after it
    c = x.costs
    parts.append("<h2>Costs</h2>")
    if c.reported:
        r = c.reported
        parts.append(
            table(
                ["model", "retrieval", "tools", "orchestration", "retries", "human review", "total"],
                [[_money(v) for v in (r.model, r.retrieval, r.tools, r.orchestration, r.retries, r.human_review, r.total)]],
            )
        )
    else:
        parts.append(f"<p>Not reported (no task outcome); from its events: model {_money(c.model_usd)}, tools {_money(c.tools_usd)}.</p>")
    parts.append("<h2>Dead-lettered and invalid records</h2>")
    if x.skipped:
        parts.append(f"<p>{html.escape(_skipped(x.skipped))}: records that hold no usable event.</p>")
    parts.append(
        table(
            ["at", "topic", "offset", "code", "service", "error"],
            [[d.at, f"{d.topic}[{d.partition}]", d.offset, d.code, d.service, d.error[:300]] for d in x.dead_letters],
        )
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _signed(a: ActionStory, escape: Callable[[str], str]) -> str:
    """Whose key signed a proposal, beside the name its producer typed: an agent cannot pass for the planner in a story."""
    return f" (signed by {escape(a.signed_by)})" if a.signed_by else ""


_WAIT_WORTH_SAYING_S = 5.0  # under it, a decision's wait is the bus's and the batch's, and clocks may differ by as much


def _waited(a: ActionStory) -> str | None:
    """What held an action's first decision, when it waited long enough to ask; None otherwise.

    An on-call engineer asked: a proposal held 2 minutes by a database outage showed only the decision's own "7.4 ms".
    """
    if a.decided_after_s is None or a.decided_after_s < _WAIT_WORTH_SAYING_S or not a.decisions:
        return None
    return (
        f"decided {_duration(a.decided_after_s)} after it was proposed (the decision itself took {a.decisions[0].latency_ms:.1f} ms): "
        "the policy held it for its task's inputs, was behind a backlog, or could not reach its database; its log at that time says which"
    )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"
