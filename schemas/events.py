"""The events of the governed work: a task to its outcome, tool calls, dead letters and audit checkpoints; model and envelope per type.

The control plane's events (`control`, `directory`) are `schemas.control_events`'s; `schemas` exports both.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from schemas.common import (
    ActionCounts,
    Contract,
    Decision,
    ErrorInfo,
    JsonObject,
    Mode,
    ProposalCost,
    Reason,
    ResultCost,
    RiskClass,
    TaskCost,
)
from schemas.envelope import Envelope

__all__ = [
    "WORKFLOW_UNTRUSTED",
    "ActionAuthorized",
    "ActionAuthorizedData",
    "ActionDecided",
    "ActionDecidedData",
    "ActionFailed",
    "ActionProposed",
    "ActionProposedData",
    "ActionResultData",
    "ActionSucceeded",
    "ActionUnknown",
    "ApprovalCredential",
    "ApprovalData",
    "ApprovalExpired",
    "ApprovalGranted",
    "ApprovalRejected",
    "ApprovalRequested",
    "ApprovalResolved",
    "ApprovalVote",
    "AuditCheckpoint",
    "AuditCheckpointData",
    "Authorization",
    "EventRejected",
    "EventRejectedData",
    "TaskCompleted",
    "TaskFailed",
    "TaskOutcomeData",
    "TaskSubmitted",
    "TaskSubmittedData",
    "ToolInvocation",
    "ToolInvocationData",
    "ToolReply",
    "ToolReplyData",
    "UndoPlan",
]

TASK_ID = Field(min_length=1, max_length=200, description="Task this belongs to; also the Kafka key.", examples=["t-42"])
TENANT_ID = Field(min_length=1, max_length=100, description="Tenant.", examples=["acme"])
ACTION_ID = Field(
    min_length=1,
    max_length=256,
    description=(
        "Unique id of the proposed action; the idempotency key of its execution. The planner's are"
        " `<task_id>:<step>.<tag>`, the tag a keyed hash only the planner can compute; choose ids a stranger cannot guess."
    ),
    examples=["t-42:1.9f3c2a7b51d04e68a1c2", "act-5b0e1c9a7d3f4e2a8c6b0d1e2f3a4b5c"],
)
TOOL = Field(min_length=1, max_length=100, pattern=r"^[a-z][a-z0-9_]*$", description="Catalogued tool name.", examples=["issue_refund"])
ARGS = Field(description="Tool arguments, validated against the tool's JSON Schema.", examples=[{"payee_id": "cus_1", "amount_usd": 40.0}])


# --- tasks -------------------------------------------------------------------------------------

WORKFLOW_UNTRUSTED: dict[str, frozenset[str]] = {"support_triage": frozenset({"subject", "body"})}
"""Input keys a workflow knows hold outside content (a ticket's subject and body, as the customer wrote them): untrusted
whatever the client marks, so a client that forgets `untrusted` does not make a customer's text the tenant's own word."""


class TaskSubmittedData(Contract):
    """A unit of work for an agent, as a client submits it."""

    task_id: str = TASK_ID
    tenant_id: str = TENANT_ID
    workflow: str = Field(min_length=1, description="Workflow name; picks the playbook.", examples=["support_triage"])
    input: JsonObject = Field(description="Workflow input.", examples=[{"ticket_id": "T-1001", "body": "Please refund order 1234"}])
    untrusted: list[str] = Field(
        default_factory=list,
        description="Keys of `input` whose values are untrusted content (ticket bodies, emails): never instructions.",
        examples=[["body", "subject"]],
    )
    requested_by: str = Field(min_length=1, description="Person or system on whose behalf the task runs.", examples=["alice@acme.example"])
    budget_usd: float | None = Field(default=None, ge=0, description="Spend cap for the task, USD.", examples=[5.0])
    mode: Mode = Field(default="draft", description="`draft`: every write needs a human; `autonomous`: policy decides.")
    planner: str = Field(
        default="tidegate",
        description="Who plans the task: `tidegate` (our planner) or an outside agent's name, which our planner ignores.",
        examples=["tidegate", "external:langgraph"],
    )

    @property
    def untrusted_keys(self) -> list[str]:
        """The keys of `input` read as untrusted: those the client marked, and those its workflow knows (`WORKFLOW_UNTRUSTED`)."""
        return list(dict.fromkeys([*self.untrusted, *sorted(WORKFLOW_UNTRUSTED.get(self.workflow, frozenset()) - set(self.untrusted))]))


class TaskSubmitted(Envelope):
    """`tidegate.task.submitted` on `tasks`."""

    type: Literal["tidegate.task.submitted"] = "tidegate.task.submitted"
    data: TaskSubmittedData


# --- actions.proposed --------------------------------------------------------------------------


class ActionProposedData(Contract):
    """One tool call an agent proposes; nothing runs until policy decides."""

    action_id: str = ACTION_ID
    task_id: str = TASK_ID
    tenant_id: str = TENANT_ID
    step: int = Field(ge=0, description="Position of the action in the task.", examples=[1])
    tool: str = TOOL
    args: JsonObject = ARGS
    rationale: str = Field(
        default="",
        max_length=4000,
        description="Why the agent proposes this.",
        examples=["customer asked for a refund of a duplicate charge"],
    )
    proposer: str = Field(
        min_length=1,
        description="Who proposed it: `tidegate/planner/<strategy>` or the outside agent.",
        examples=["tidegate/planner/playbook"],
    )
    tainted_args: list[str] = Field(
        default_factory=list,
        description="Arg paths (dot-separated) whose values came from untrusted content.",
        examples=[["payee_id"]],
    )
    cost: ProposalCost = Field(default_factory=ProposalCost, description="What producing the proposal cost.")
    mode: Mode = Field(default="draft", description="Task mode as requested; a tenant that does not allow autonomy is treated as draft.")
    requested_by: str | None = Field(
        default=None, description="Requester of the task (for four-eyes approval).", examples=["alice@acme.example"]
    )
    budget_usd: float | None = Field(default=None, ge=0, description="Task budget as submitted, USD.")
    confidence: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="How sure the proposer is that this is the right call (0–1): a planner's playbook says 1, a model-driven "
        "strategy derives it; the default pack escalates low-risk writes under the tenant's `min_confidence`. Null: not given.",
        examples=[0.92],
    )
    undoes: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="The action this call undoes (`tidegate undo`); the audit links the two.",
        examples=["a-42-1"],
    )
    repeats: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="The action this proposal makes again because the executor refused its authorization as expired before "
        "making any call (`authorization_expired`, 0 attempts): policy decides afresh (a human-approved call is asked again); "
        "the audit links the two.",
        examples=["t-42:2.9f3c2a7b51d04e68a1c2"],
    )


class ActionProposed(Envelope):
    """`tidegate.action.proposed` on `actions.proposed`."""

    type: Literal["tidegate.action.proposed"] = "tidegate.action.proposed"
    data: ActionProposedData


# --- actions.decided ---------------------------------------------------------------------------


class ActionDecidedData(Contract):
    """The policy service's decision on one proposal, with everything needed to explain it."""

    action_id: str = ACTION_ID
    task_id: str = TASK_ID
    tenant_id: str = TENANT_ID
    step: int = Field(default=0, ge=0, description="Position of the action in the task.")
    tool: str = Field(description="Tool of the proposal (as proposed, even if unknown).", examples=["issue_refund"])
    args: JsonObject = ARGS
    action_digest: str = Field(description="SHA-256 (hex) of the canonical tool call; approvals bind to it.", examples=["9f2c…"])
    outcome: Decision = Field(description="`allow`, `deny` or `escalate`.")
    reasons: list[Reason] = Field(description="Every policy that determined the outcome.")
    policy_version: str = Field(description="Hash of the policy set that decided.", examples=["sha256:1c9e…"])
    risk: RiskClass | None = Field(default=None, description="Risk class of the tool; null for an unknown tool.")
    latency_ms: float = Field(ge=0, description="Time to decide, milliseconds.")
    facts: JsonObject = Field(
        default_factory=dict, description="Facts computed before evaluation (payee_is_new, recipient_count, spend, taint…)."
    )
    via: Literal["policy", "approval"] = Field(default="policy", description="`approval` when re-evaluated after a human grant.")
    approval_id: str | None = Field(default=None, description="The grant that was re-evaluated, when `via` is `approval`.")
    mode: Mode = Field(default="draft", description="Effective task mode.")
    requested_by: str | None = Field(default=None, description="Requester of the task as the proposal names it (its signer's principal).")
    task_requested_by: str | None = Field(
        default=None,
        description="Requester of the task as its signed `task.submitted` names it, when the policy service learned the task (null: "
        "not learned). An outside agent's proposal names the agent as `requested_by`: four eyes binds both.",
        examples=["bob@acme.example"],
    )
    proposer: str | None = Field(default=None, description="Who proposed the action.")
    rationale: str = Field(
        default="",
        max_length=4000,
        description="Why the agent proposed it: the proposal's rationale as the agent wrote it (untrusted text, shown to the approver "
        "as text). Empty when the proposal gave none.",
        examples=["customer asked for a refund of a duplicate charge"],
    )
    estimated_cost_usd: float = Field(default=0.0, ge=0, description="Projected cost of the call, reserved against the budget on allow.")


class ActionDecided(Envelope):
    """`tidegate.action.decided` on `actions.decided`."""

    type: Literal["tidegate.action.decided"] = "tidegate.action.decided"
    data: ActionDecidedData


# --- approvals ---------------------------------------------------------------------------------


class ApprovalCredential(Contract):
    """The credential that proved who a vote's approver is, by its id: never the secret, nor a hash of it."""

    kind: Literal["api_token", "link", "callback"] = Field(
        description="`api_token`: the approver's own API token (the approval page signs in with it too); `link`: a one-time link a "
        "webhook message carried; `callback`: a decision a chat tool posted back, signed with a webhook endpoint's secret."
    )
    id: str = Field(
        min_length=1,
        description="`api_token`: the token's id (`tidegate approvals token list`); `link`: the link's id (its claims' `link_id`, "
        "spent once in `approval.spent_links`); `callback`: the webhook endpoint's id.",
        examples=["tok_c7acc6ca9114"],
    )
    issued_by: str | None = Field(
        default=None,
        description="Who issued it, by the key that signed it: `api_token`, the key that signed the token's row (an operator's for "
        "`tidegate approvals token create` or `rotate`, the approval service's for a rotation its holder made over the API); "
        "`link`, the approval service key that signed the link. Null for `callback` (the endpoint's secret is the tenant's).",
        examples=["operator-3f2a9c1d7e4b"],
    )
    issued_at: datetime | None = Field(default=None, description="`api_token`: when the token was made (null for the others).")
    operator: bool = Field(default=False, description="`api_token`: an operator token (every tenant), not an approver's own.")
    message_id: str | None = Field(
        default=None, description="`callback`: the Standard Webhooks message id the chat tool posted (each is taken once)."
    )


class ApprovalVote(Contract):
    """One approver's vote on a request, as the approval service recorded it: who, what, why, when, and whether it still counts."""

    approver: str = Field(description="Who voted.", examples=["bob@acme.example"])
    decision: Literal["approve", "reject"] = Field(description="What they decided.")
    via: Literal["token", "link", "callback"] = Field(
        default="token", description="How the vote came: the approver's own token, a one-time link, or a chat callback."
    )
    at: datetime = Field(description="When the vote was recorded.")
    comment: str | None = Field(default=None, max_length=4000, description="The approver's comment.")
    review_reason: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9_]{0,62}$",
        description="Why they rejected or edited (the tenant's taxonomy), or `should_not_need_approval` on an unchanged approval.",
        examples=["wrong_amount"],
    )
    edited_args: JsonObject | None = Field(
        default=None, description="The args this vote approved instead of the call (an edit, or a concurrence with one); null: the call."
    )
    counted: bool = Field(
        default=True,
        description="Whether the vote counts towards the decision: false once a later vote for another call replaced it, or once "
        "its approver voted again.",
    )
    replaced_by: str | None = Field(
        default=None,
        description="Who replaced this vote by approving another call (their vote says why); null while it counts.",
        examples=["carol@acme.example"],
    )
    credential: ApprovalCredential | None = Field(
        default=None,
        description="Which credential proved the approver (signed with the vote); null in votes recorded before Tidegate recorded it.",
    )


class ApprovalData(Contract):
    """A human decision on an escalated action, bound to the exact tool call by its digest."""

    approval_id: str = Field(min_length=1, description="Id of the approval request.", examples=["ap-7"])
    action_id: str = ACTION_ID
    task_id: str = TASK_ID
    tenant_id: str = TENANT_ID
    tool: str = Field(description="Tool of the escalated call.", examples=["issue_refund"])
    args: JsonObject = ARGS
    action_digest: str = Field(description="Digest of the exact call the request (and any grant) binds to.")
    reasons: list[Reason] = Field(default_factory=list, description="Why it was escalated.")
    policy_version: str = Field(default="", description="Policy version that escalated.")
    approver: str | None = Field(default=None, description="Who decided (null for requested and expired).", examples=["bob@acme.example"])
    approvers: list[str] = Field(
        default_factory=list,
        description="`approval.granted`: every distinct approver counted toward the grant. `approval.rejected` and `approval.resolved`: "
        "the one who decided (as `approver`); approvals given before a reject are in `votes`. `approval.expired`: the approvals "
        "counted before it expired (fewer than it needed). Empty in `approval.requested`.",
    )
    approver_groups: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Approver → the groups their credential held when they voted; the policy service counts toward a grant's "
        "quorum only approvers in a group the tenant's settings require for the risk class.",
        examples=[{"bob@acme.example": ["finance"]}],
    )
    comment: str | None = Field(default=None, max_length=4000, description="Approver's comment.")
    edited_args: JsonObject | None = Field(default=None, description="Args as the approver edited them; policy re-evaluates these.")
    expires_at: datetime = Field(description="After this the request expires (fail closed).")
    decided_at: datetime | None = Field(default=None, description="When the decision was taken.")
    requested_by: str | None = Field(
        default=None, description="Requester of the task as the proposal names it; may not approve (four eyes)."
    )
    task_requested_by: str | None = Field(
        default=None,
        description="Requester of the task as its signed `task.submitted` names it (null: the policy service had not learned the "
        "task); may not approve either (four eyes).",
        examples=["bob@acme.example"],
    )
    key_id: str | None = Field(default=None, description="Approval-service key that signed a decision.")
    signature: str | None = Field(
        default=None, description="Ed25519 signature (base64url) by the approval service over the decision's digest."
    )
    review_reason: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9_]{0,62}$",
        description="Why the approver rejected or edited the call: a code of the tenant's taxonomy (`wrong_recipient`, "
        "`wrong_amount`, `policy_should_have_denied`, `should_not_need_approval`, `tone_content`, `missing_context`, `other`, "
        "or one the tenant added); on a grant of the call unchanged only `should_not_need_approval` (the escalation was needless).",
        examples=["wrong_amount"],
    )
    resolution: Literal["confirmed_done", "confirmed_not_done"] | None = Field(
        default=None,
        description="`approval.resolved` only: what a human found in the system of record after an `action.unknown`.",
        examples=["confirmed_done"],
    )
    votes: list[ApprovalVote] = Field(
        default_factory=list,
        description="Decisions: every vote on the request in order, each with its approver's comment and reason (an edit's reason "
        "is its editor's), including votes a later vote for another call replaced (`counted` false). Empty in events before it.",
    )


class ApprovalRequested(Envelope):
    """`tidegate.approval.requested` on `approvals`."""

    type: Literal["tidegate.approval.requested"] = "tidegate.approval.requested"
    data: ApprovalData


class ApprovalGranted(Envelope):
    """`tidegate.approval.granted` on `approvals`; signed."""

    type: Literal["tidegate.approval.granted"] = "tidegate.approval.granted"
    data: ApprovalData


class ApprovalRejected(Envelope):
    """`tidegate.approval.rejected` on `approvals`; signed."""

    type: Literal["tidegate.approval.rejected"] = "tidegate.approval.rejected"
    data: ApprovalData


class ApprovalExpired(Envelope):
    """`tidegate.approval.expired` on `approvals`; signed."""

    type: Literal["tidegate.approval.expired"] = "tidegate.approval.expired"
    data: ApprovalData


class ApprovalResolved(Envelope):
    """`tidegate.approval.resolved` on `approvals`; signed. A human's finding on a follow-up of an `action.unknown`.

    `resolution` says whether the call's side effect happened (`confirmed_done`) or not
    (`confirmed_not_done`). It records a fact; it never makes anything run again.
    """

    type: Literal["tidegate.approval.resolved"] = "tidegate.approval.resolved"
    data: ApprovalData


# --- actions.authorized ------------------------------------------------------------------------


class Authorization(Contract):
    """The policy service's signed permission to run exactly this call, briefly."""

    via: Literal["policy", "approval"] = Field(description="Allowed by policy alone, or after a human grant.")
    policy_version: str = Field(description="Policy version that allowed it.")
    action_digest: str = Field(description="SHA-256 of the canonical tool call (tenant, tool, args).")
    issued_at: datetime = Field(description="Signing time.")
    expires_at: datetime = Field(description="The executor refuses it after this.")
    key_id: str = Field(description="Id of the policy signing key.", examples=["policy-2026-11-3f9a"])
    signature: str = Field(description="Ed25519 signature (base64url) over the authorization digest.")
    approval_id: str | None = Field(default=None, description="The grant, when `via` is `approval`.")


class ActionAuthorizedData(Contract):
    """A call the executor may perform once."""

    action_id: str = ACTION_ID
    task_id: str = TASK_ID
    tenant_id: str = TENANT_ID
    step: int = Field(default=0, ge=0)
    tool: str = TOOL
    args: JsonObject = ARGS
    authorization: Authorization
    estimated_cost_usd: float = Field(default=0.0, ge=0, description="Budget reserved for the call.")


class ActionAuthorized(Envelope):
    """`tidegate.action.authorized` on `actions.authorized`; only the policy service produces it."""

    type: Literal["tidegate.action.authorized"] = "tidegate.action.authorized"
    data: ActionAuthorizedData


# --- actions.results ---------------------------------------------------------------------------


class UndoPlan(Contract):
    """What undoing a succeeded call takes, as the executor computed it from the catalog when the call succeeded."""

    status: Literal["ready", "irreversible", "nothing_to_undo", "unavailable"] = Field(
        description="`ready`: propose `tool` with `args`; `irreversible`: no tool can undo it (`message` says what a person must "
        "do); `nothing_to_undo`: the call changed nothing the undo would restore; `unavailable`: the plan could not be computed."
    )
    tool: str | None = Field(default=None, description="The tool that undoes the call.", examples=["untag_ticket"])
    args: dict[str, Any] | None = Field(default=None, description="Its args.", examples=[{"ticket_id": "T-1001", "tags": ["refund"]}])
    message: str = Field(default="", max_length=2000, description="Why, for a person.")


class ActionResultData(Contract):
    """What happened when the executor performed an authorized call."""

    action_id: str = ACTION_ID
    task_id: str = TASK_ID
    tenant_id: str = TENANT_ID
    step: int = Field(default=0, ge=0)
    tool: str = TOOL
    status: Literal["succeeded", "failed", "unknown"] = Field(description="Outcome of the call.")
    result: JsonObject | None = Field(
        default=None,
        description="Tool result on success. A result that would make the event larger than the executor's bound "
        "(`TIDEGATE_EXECUTOR_MAX_RESULT_BYTES`) is a stand-in: `{truncated: true, bytes, sha256, preview, kept_in, message}`, "
        "the whole kept in `executor.actions` (docs/executor.md).",
    )
    error: ErrorInfo | None = Field(default=None, description="Why it failed or is unknown.")
    attempts: int = Field(ge=0, description="Calls made (0 when refused before calling).")
    duration_ms: float = Field(
        ge=0,
        description="Wall time of the attempts the executor that ended the action measured: an attempt a crash interrupted "
        "left no duration behind (its `attempts` still count it; docs/executor.md).",
    )
    cost: ResultCost = Field(default_factory=ResultCost)
    idempotency_key: str | None = Field(default=None, description="Key passed to the tool (the action id).")
    undo: UndoPlan | None = Field(
        default=None, description="On success of a tool whose catalog entry declares `undo`: how to undo this call."
    )

    @property
    def refusal(self) -> str | None:
        """The reason code when the executor refused the authorization before making any call (`failed` with 0 attempts), else None.

        No call was made: certain (the executor counts an attempt before it starts one). Not a tool's failure.
        """
        if self.status != "failed" or self.attempts:
            return None
        return self.error.type if self.error is not None else "refused"


class ActionSucceeded(Envelope):
    """`tidegate.action.succeeded` on `actions.results`."""

    type: Literal["tidegate.action.succeeded"] = "tidegate.action.succeeded"
    data: ActionResultData


class ActionFailed(Envelope):
    """`tidegate.action.failed` on `actions.results`."""

    type: Literal["tidegate.action.failed"] = "tidegate.action.failed"
    data: ActionResultData


class ActionUnknown(Envelope):
    """`tidegate.action.unknown` on `actions.results`: the side effect may or may not have happened."""

    type: Literal["tidegate.action.unknown"] = "tidegate.action.unknown"
    data: ActionResultData


# --- tasks.outcomes ----------------------------------------------------------------------------


class TaskOutcomeData(Contract):
    """How a task ended, what it did and what it cost."""

    task_id: str = TASK_ID
    tenant_id: str = TENANT_ID
    workflow: str = Field(description="Workflow of the task.")
    status: Literal["completed", "failed"]
    summary: str = Field(description="One paragraph a person can read.")
    reason: str | None = Field(default=None, description="Reason code when the task failed.")
    counts: ActionCounts = Field(default_factory=ActionCounts, description="Actions by outcome.")
    cost: TaskCost = Field(default_factory=TaskCost)
    duration_ms: float = Field(ge=0)
    human_touches: int = Field(default=0, ge=0, description="Human decisions the task needed.")


class TaskCompleted(Envelope):
    """`tidegate.task.completed` on `tasks.outcomes`."""

    type: Literal["tidegate.task.completed"] = "tidegate.task.completed"
    data: TaskOutcomeData


class TaskFailed(Envelope):
    """`tidegate.task.failed` on `tasks.outcomes`."""

    type: Literal["tidegate.task.failed"] = "tidegate.task.failed"
    data: TaskOutcomeData


# --- deadletter --------------------------------------------------------------------------------


class EventRejectedData(Contract):
    """A message a service could not accept, kept with the reason so nothing is lost silently."""

    tenant_id: str = Field(default="unknown", description="Tenant if it could be read, else `unknown`.")
    task_id: str | None = Field(default=None, description="Task if it could be read.")
    topic: str = Field(description="Topic the message came from.")
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    key: str | None = Field(default=None, description="Kafka key (UTF-8, replaced errors).")
    raw_value: str = Field(description="The raw value, decoded with replacement, truncated to 64 KiB.")
    truncated: bool = Field(default=False)
    size: int | None = Field(default=None, ge=0, description="Size of the whole raw value in bytes (it may be truncated above).")
    sha256: str | None = Field(default=None, description="SHA-256 (hex) of the whole raw value, so a truncated one can still be matched.")
    code: str = Field(description="Reason code.", examples=["invalid_event", "too_deep", "signature_invalid"])
    error: str = Field(description="What was wrong, for a person.")
    service: str = Field(description="Service that rejected it.", examples=["policy"])


class EventRejected(Envelope):
    """`tidegate.event.rejected` on `deadletter`."""

    type: Literal["tidegate.event.rejected"] = "tidegate.event.rejected"
    data: EventRejectedData


# --- tools.<tool>.requests / .replies ----------------------------------------------------------


class ToolInvocationData(Contract):
    """A request to an outside tool service; `idempotency_key` must be honoured."""

    action_id: str = ACTION_ID
    task_id: str = TASK_ID
    tenant_id: str = TENANT_ID
    tool: str = TOOL
    args: JsonObject = ARGS
    idempotency_key: str = Field(description="The action id: the same key must never cause a second side effect.")
    attempt: int = Field(default=1, ge=1)
    deadline: datetime = Field(description="The executor stops waiting at this time.")
    reply_topic: str = Field(description="Where to publish the `tool.reply`.")
    authorized: ActionAuthorizedData | None = Field(
        default=None,
        description="The policy service's signed `action.authorized` data this call carries out, as the executor verified it: "
        "a tool service verifies the policy signature again and that it names exactly this call (a governed function's "
        "client runs nothing without it).",
    )


class ToolInvocation(Envelope):
    """`tidegate.tool.invocation` on `tools.<tool>.requests`."""

    type: Literal["tidegate.tool.invocation"] = "tidegate.tool.invocation"
    data: ToolInvocationData


class ToolReplyData(Contract):
    """The answer of an outside tool service."""

    action_id: str = ACTION_ID
    task_id: str = TASK_ID
    tenant_id: str = TENANT_ID
    tool: str = TOOL
    attempt: int = Field(default=1, ge=1)
    ok: bool
    result: JsonObject | None = None
    error: ErrorInfo | None = None
    cost_usd: float = Field(default=0.0, ge=0)


class ToolReply(Envelope):
    """`tidegate.tool.reply` on `tools.<tool>.replies`."""

    type: Literal["tidegate.tool.reply"] = "tidegate.tool.reply"
    data: ToolReplyData


# --- audit.checkpoints -------------------------------------------------------------------------


class AuditCheckpointData(Contract):
    """Signed heads of every audit hash chain: a truncated tail no longer matches a checkpoint."""

    tenant_id: str = Field(default="*", description="Always `*`.")
    checkpoint_id: int = Field(ge=1)
    heads: dict[str, dict[str, Any]] = Field(description="`topic:partition` → {seq, hash, offset}.")
    rows: int = Field(ge=0, description="Rows in the log when taken.")
    key_id: str
    signature: str
    taken_at: datetime | None = Field(
        default=None,
        description="When it was taken, as signed (v2: the signature covers it and the scope, the topic prefix); null in "
        "checkpoints published before Tidegate 21, whose v1 signature covers neither (the envelope's `time` stands in).",
    )


class AuditCheckpoint(Envelope):
    """`tidegate.audit.checkpoint` on `audit.checkpoints`."""

    type: Literal["tidegate.audit.checkpoint"] = "tidegate.audit.checkpoint"
    data: AuditCheckpointData
