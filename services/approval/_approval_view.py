"""A request as an approver sees it: the response models of the API, and the view of a record for one caller."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas import ApprovalVote
from services.approval import domain
from services.approval._decision_proofs import as_signed, unproven_refusal
from services.approval._outcome import outcome_of
from services.approval._summary import decision_summary
from services.approval._view_args import key_args
from services.approval._votes_counted import NotCounted, votes_counted
from services.approval.domain import ApprovalRecord, Refusal, Vote
from services.approval.service import LINK_USED, ApprovalService, Session

__all__ = ["ApprovalDetail", "ApprovalView", "is_overdue", "view"]


class ReasonView(BaseModel):
    """One reason behind the escalation."""

    code: str
    policy_id: str
    message: str


class RecordSeen(BaseModel):
    """The system-of-record entry the call acts on, and what a trusted read of it said earlier in the task."""

    arg: str | None = Field(description="The arg that names it (the catalog's `facts.record`).")
    id: str
    read: dict[str, Any] | None = Field(description="`amount_usd`, `currency`, `source` of the read; null: the task never read it.")


class UntrustedQuote(BaseModel):
    """What the untrusted text said around the value (the policy's `facts.taint[].excerpt`): the attacker's words, as text."""

    source: str = Field(description="Where the task read it, as the policy says.", examples=["the task input's untrusted field 'body'"])
    field: str = Field(description="The field of that content the value stands in (`body`, `comments.body (2)`).")
    before: str = Field(description="Up to 160 characters before the value, as written (markup, bidi and zero-width characters included).")
    match: str = Field(description="The value as written in the text.", examples=["cus_1001"])
    after: str = Field(description="Up to 160 characters after it.")
    at: int | None = Field(description="Where the value stands in the field (characters from its start).")
    length: int | None = Field(description="The field's length as the policy kept it (256 KiB at most).")


class UntrustedArg(BaseModel):
    """An arg whose value came from content outside the tenant (a ticket, an email), as the policy found it."""

    arg: str
    why: str
    excerpt: UntrustedQuote | None = Field(
        default=None,
        exclude_if=lambda v: v is None,  # absent, not null: an item without a quote reads as it always did
        description="The text around the value where the task read it, quoted by the policy in the decision it signed (null: "
        "declared by the agent, or the policy did not find the value written in the text it kept). Untrusted: shown "
        "as text, never markup; in the API and the CLI, never in webhook messages.",
    )


class FlaggedSpan(BaseModel):
    """One instruction-like span the policy flagged in an untrusted text."""

    kind: Literal["override", "role", "marker", "hidden", "invisible"] = Field(
        description="`override` (set aside the agent's instructions or checks), `role` (claims to be, or speaks to, the system or "
        "the agent), `marker` (a chat turn or prompt token), `hidden` (markup a reader does not see), `invisible` "
        "(zero-width, bidi or tag characters)."
    )
    what: str = Field(description="The kind in words, as the page and the CLI show it.")
    at: int = Field(description="Where the span starts in the field (characters from its start).")
    length: int
    hidden_text: str | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="What a run of Unicode tag characters spells in ASCII (text an agent reads and a person never sees).",
    )


class FlaggedPassage(BaseModel):
    """A stretch of the untrusted text around one or more flagged spans, as written."""

    field: str = Field(description="The field of the content it stands in (`body`, `messages.text (2)`).")
    at: int | None = Field(description="Where the passage starts in the field.")
    length: int | None = Field(description="The field's length as the policy kept it (256 KiB at most).")
    text: str = Field(description="The passage as written, up to 320 characters (markup, bidi and zero-width characters included).")
    marks: list[FlaggedSpan]


class UntrustedPassages(BaseModel):
    """The instruction-like passages of one untrusted source a call's value was read in (the policy's `facts.untrusted_passages`)."""

    source: str = Field(
        description="Where the task read it, as in `untrusted_args[].why`.", examples=["the task input's untrusted field 'body'"]
    )
    found: int = Field(
        description="Flagged spans in the whole source (1,000 of one pattern at most); the first passages around them are shown "
        "(six at most)."
    )
    passages: list[FlaggedPassage]


class PendingEdit(BaseModel):
    """Another approver's edit of a pending request: the summary is of the edited call (what Approve approves)."""

    by: str = Field(description="Who edited the call (the first approver of the edited call).")
    changed: list[str] = Field(description="The top-level args the edit changed.")
    said: str = Field(description="In words, with what the changed parts were.", examples=["edited by bob@acme.example from 899.00 USD"])
    original_subject: str = Field(description="The subject of the call as proposed.")


class DecisionSummary(BaseModel):
    """What a person needs to decide: the request at a glance, the money, the record, what approving does, what deciding costs."""

    subject: str = Field(
        description="One line that tells requests apart in a queue: amount, payee, record, the other key args (cut with …, one line).",
        examples=["899.00 USD · to cus_1002 · charge_id ch_O5002"],
    )
    amount_usd: float | None = Field(description="The amount the call moves (the policy's fact, else the catalog's amount arg).")
    payee: str | None = Field(description="Who receives it (the catalog's payee arg).")
    payee_is_new: bool | None = Field(description="The tenant never paid this payee before (the policy's fact).")
    record: RecordSeen | None
    tool_does: str | None = Field(description="What the tool does, from the catalog (trusted text, not the agent's).")
    on_approve: str = Field(description="What happens when the request is approved.")
    untrusted_passages: list[UntrustedPassages] = Field(
        default_factory=list,
        description="The passages of the untrusted text the call's values were read in that read as instructions to an agent "
        '("ignore all previous instructions", `system:`, an HTML comment, zero-width characters), flagged and signed by the '
        "policy beside `untrusted_args[].excerpt`: the email's injection 2 KB above the payee. A flag is a reason to read "
        "the passage, not a verdict. Untrusted: shown as text, never markup; in the API and the CLI, never in webhook messages.",
    )
    edit: PendingEdit | None = Field(
        default=None,
        description="A pending request another approver edited: who, and from what; `subject`, `amount_usd`, `payee`, `record` and "
        "`on_approve` are then of the edited call (what Approve approves), the call as proposed in `original_subject`.",
    )
    untrusted_args: list[UntrustedArg] = Field(
        description="Args whose values came from untrusted content: check them. Every important arg the policy counted as tainted "
        "(`facts.tainted_important_args`) is among them, with where it was read, or that the agent declared it so."
    )
    proposer: str | None = Field(description="Who proposed the call (the planner's strategy or the outside agent).")
    rationale: str = Field(
        default="", description="Why the agent proposed it, as the agent wrote it: untrusted text (it may carry an injected instruction)."
    )
    human_review_usd: float = Field(
        description="The price of one human decision, as `tidegate costs` and the planner price it (`servicekit.costs.ReviewPrice`: "
        "`TIDEGATE_HUMAN_REVIEW_MINUTES` × `TIDEGATE_HUMAN_HOURLY_RATE_USD`)."
    )


class RecordRead(BaseModel):
    """One trusted read of the entry the call acts on, earlier in the task (`lookup_order` of the refund's order)."""

    tool: str
    action_id: str
    status: str = Field(description="The read's outcome (`succeeded`, `failed`…), or `no result yet`.")
    at: str
    returned: dict[str, Any] | None = Field(description="What the read returned, where the service kept it (null: not kept here).")
    compared: list[dict[str, Any]] = Field(
        description="The call's key args the read also returned: `arg`, `call`, `read`, `same` (the order's payee beside the refund's)."
    )


class RecordReads(BaseModel):
    """The entry the call acts on (its `facts.record`, else `facts.documentation` arg) as the task's trusted reads said it."""

    arg: str
    id: str
    checked: bool = Field(description='False: the task made no trusted read of it ("not checked": the figures are the agent\'s).')
    reads: list[RecordRead]
    said: str = Field(description="In words: not checked, agrees, or which key args differ from the read.")


class ApprovalView(BaseModel):
    """A request as an approver sees it."""

    model_config = ConfigDict(frozen=True)

    approval_id: str = Field(description="Id of the request.", examples=["ap-1f2e3d4c5b6a7980"])
    kind: Literal["approval", "follow_up"] = Field(description="`approval`: an escalated call; `follow_up`: an unknown outcome to resolve.")
    status: str = Field(
        description="`pending`, `granted`, `rejected`, `expired` (also a pending one past its expiry, before the sweep closes it) "
        "or `resolved` (follow-ups)."
    )
    tenant_id: str
    task_id: str
    action_id: str
    tool: str
    args: dict[str, Any] = Field(description="The exact call the request is about.")
    action_digest: str = Field(description="SHA-256 of the call; send it back when deciding, so a changed call is refused.")
    reasons: list[ReasonView]
    facts: dict[str, Any] = Field(description="Facts policy computed (payee is new, amounts, taint…).")
    risk: str
    policy_version: str
    requested_by: str | None = Field(
        description="Requester of the task as the proposal names it (an outside agent's proposal: the agent); may not approve (four eyes)."
    )
    task_requested_by: str | None = Field(
        default=None,
        description="Requester of the task as its signed request names it (null: the policy service had not learned the task); "
        "may not approve either (four eyes).",
    )
    required_approvals: int = Field(description="Distinct approvals needed before the grant is published.")
    estimated_cost_usd: float = Field(default=0.0, description="What the call itself is expected to cost (the tool's price), beside it.")
    approvers: list[str] = Field(
        description="Who approved: of a pending request, the approvals the service counts; of a rejected one, the approvals given "
        "before the reject (its rejecter is `rejected_by`, never here); of a resolved follow-up, who resolved it."
    )
    not_counted: list[NotCounted] = Field(
        default_factory=list,
        description="A pending request's approvals the service does not count (no valid signature of the service: given before "
        "approvals were signed, or written into the database), each with why and what to do (the approver votes again).",
    )
    not_as_signed: str | None = Field(
        default=None,
        description="Why what this request shows is not proven to be the policy's signed escalation (null: it is). The service "
        "keeps the policy's `action.decided` and checks the row against it each time it shows it: where the row was rewritten "
        "in the database, the reasons, facts, rationale, args and cost shown are the signed ones, and this says which "
        "fields the row had changed; where there is no signed event to check (a request opened before release 23, or one the "
        "database login wrote), the row is shown as it is. Either way approving is refused (`request_unproven`); reject it.",
    )
    edited_args: dict[str, Any] | None
    votes: list[ApprovalVote] = Field(
        default_factory=list,
        description="Every vote so far, in order, with its comment and reason; one a later vote for another call replaced has "
        "`counted` false and `replaced_by` (an editor whose edit was replaced reads who replaced it, and why, in the next vote).",
    )
    rejected_by: str | None = Field(default=None, description="Who rejected it (a rejected request).")
    comment: str | None
    review_reason: str | None = Field(
        default=None,
        description="Why the approver rejected or edited (the tenant's taxonomy), or `should_not_need_approval` on an unchanged approval.",
    )
    decided_by: str | None
    decided_at: str | None
    resolution: str | None = Field(description="Follow-ups: `confirmed_done` or `confirmed_not_done`.")
    result_error: dict[str, Any] | None = Field(description="Follow-ups: the error the executor reported.")
    created_at: str
    expires_at: str
    escalated: bool
    can_decide: bool = Field(
        description="Whether the caller may decide it now (approve or reject); false under a kill switch on the tool, "
        "where approving would end in a final deny."
    )
    can_reject: bool = Field(
        default=False,
        description="Whether the caller may reject it now (also when approving is held: a kill switch, the caller's approval counted, "
        "an operator and a request whose requester is unknown).",
    )
    cannot_decide_because: str | None = Field(description="Why not, in words.")
    cannot_decide_code: str | None = Field(
        default=None, description="Why not, as the code a vote would be refused with (`link_used`, `not_pending`, `four_eyes`…)."
    )
    key_args: list[str] = Field(
        default_factory=list,
        description="Args the tool's catalog facts name (amount, payee, recipients…), in that order: what to read first.",
    )
    killswitch: dict[str, Any] | None = Field(description="An active kill switch on this tool and tenant, if any.")
    outcome: dict[str, Any] | None = Field(
        default=None,
        description="A granted request: what became of the call once its result arrived (`status`: `executed`, `failed`, `unknown`, "
        "`expired_unused`: the authorization expired before the executor ran it and nothing was done, `refused`, "
        "`denied_by_policy`: the policy service denied the grant on re-evaluation, such as `approval_quorum_not_met`, and nothing ran; "
        "with `reason`, `message`, `attempts`, `at`); null while neither a result nor a deny has arrived.",
    )
    summary: DecisionSummary = Field(description="What a person needs to decide it, at a glance (`subject`) and in full.")


class ApprovalDetail(ApprovalView):
    """A request with the task's context."""

    context: list[dict[str, Any]] = Field(
        description="The task's decisions and results this service has seen, oldest first; a decision with the args of its call."
    )
    cost: dict[str, Any] = Field(description="Cost so far: `spent_usd` (results), `reserved_usd` (allowed, no result yet), event counts.")
    earlier: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Earlier grants of this same call in the task that could not be carried out (their authorization expired before "
        "the executor ran it, so the agent proposed the call again): `approval_id`, `action_id`, `approvers`, `decided_at`, `why`.",
    )
    same_payee: list[dict[str, Any]] = Field(
        default_factory=list,
        description="The tenant's other requests of the last 24 hours whose call names the same payee (the tool's `facts.payee`), "
        "newest first: `approval_id`, `action_id`, `task_id`, `tool`, `payee`, `amount_usd`, `status`, `decided_by`, `created_at`, "
        "`not_as_signed` (each as signed: as in a request's own `not_as_signed`). "
        "A split refund's pieces side by side: the facts' `paid_payee_usd` is what the payee had been paid when policy decided "
        "this proposal, and counts no grant since.",
    )
    record_reads: RecordReads | None = Field(
        default=None, description="The entry the call acts on, beside what the task's trusted reads of it said (null: the call names none)."
    )


def is_overdue(service: ApprovalService, record: ApprovalRecord) -> bool:
    """Pending, but past its expiry: a vote is refused (`409 expired`) and the next sweep closes it."""
    return record.is_pending and service.clock() >= record.expires_at


async def view(service: ApprovalService, record: ApprovalRecord, session: Session) -> dict[str, Any]:
    """A request as the caller sees it, with whether they may decide it now (approve or reject) and reject it now.

    The access checks come first (as for a vote), then the state: settled (by whom, when), past its expiry,
    the caller's one-time link spent (read from the store: whichever replica spent it). Then what holds an approve
    only: the caller's approval already counts, or a kill switch is set on the tool, under which a grant ends in
    the policy's final deny. Its approvals are those the service counts, as a vote does (`_votes_counted`), the others said apart.
    """
    who = session.approver
    record, not_counted = votes_counted(service.seals.ballots if service.seals else None, record)
    shown = as_signed(record, service.authority, service.seals)  # what the policy signed, never the login's text
    overdue = is_overdue(service, record)
    state: Refusal | None = None
    if not record.is_pending or not shown.record.is_pending:  # settled as the service signed it, whatever the row says now
        state = Refusal(code="not_pending", status=409, message=domain.already_settled(shown.record))
    elif overdue:
        state = Refusal(
            code="expired",
            status=409,
            message=f"expired at {record.expires_at.isoformat(timespec='seconds')}; nobody may decide it any more",
        )
    elif await service.link_spent(session):
        state = Refusal(code="link_used", status=401, message=LINK_USED)
    rejecting = service.access(record, who, rejecting=True) or state or unproven_refusal(shown, rejecting=True)
    refusal = service.access(record, who) or state
    if refusal is None and domain.has_approved(record, who.approver):
        refusal = Refusal(code="already_approved", status=409, message="you already approved; waiting for another approver")
    refusal = refusal or domain.second_vote_without_token(record, who, Vote(decision="approve", edited_args=record.edited_args))
    refusal = refusal or service.approval_held(record) or unproven_refusal(shown)
    record = shown.record
    return {
        **record.model_dump(mode="json", exclude={"version", "proposer", "step", "escalated_at", "decision", "settled_event"}),
        "status": "expired" if overdue else record.status,
        "approvers": domain.approvals_of(record),  # who approved: of a rejected request never its rejecter (`rejected_by`)
        "rejected_by": record.decided_by if record.status == "rejected" else None,
        "escalated": record.escalated_at is not None,
        "can_decide": refusal is None,
        "can_reject": rejecting is None,
        "cannot_decide_because": refusal.message if refusal else None,
        "cannot_decide_code": refusal.code if refusal else None,
        "key_args": key_args(service.catalog, record.tool),
        "killswitch": service.killswitch(record.tenant_id, record.tool),
        "outcome": await outcome_of(service.repo, record),
        "not_counted": not_counted,
        "not_as_signed": shown.not_as_signed,
        "summary": decision_summary(record, service.catalog, service.review_price),
    }
