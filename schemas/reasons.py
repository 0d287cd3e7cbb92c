"""Stable reason codes: the vocabulary of every decision, refusal and dead letter."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["APPROVE_REASONS", "REVIEW_REASONS", "ReasonCode"]


class ReasonCode(StrEnum):
    """A stable string that explains why something was decided, refused or rejected.

    Integrators match on these; never rename one, only add.
    """

    # Decisions (DESIGN.md, "Reason codes").
    NEEDS_HUMAN_APPROVAL = "needs_human_approval"
    NEW_PAYEE_BLOCKED = "new_payee_blocked"
    BULK_EMAIL_BLOCKED = "bulk_email_blocked"
    HUMAN_ONLY = "human_only"
    KILL_SWITCH = "kill_switch"
    BUDGET_EXCEEDED = "budget_exceeded"
    TAINTED_ARGUMENT = "tainted_argument"
    NO_PERMIT = "no_permit"
    INVALID_ARGS = "invalid_args"
    APPROVAL_REJECTED = "approval_rejected"
    APPROVAL_EXPIRED = "approval_expired"
    # Decisions added by the default policy pack.
    DRAFT_MODE = "draft_mode"
    EXTERNAL_RECIPIENT = "external_recipient"
    SENSITIVE_CODE_PATH = "sensitive_code_path"
    PULL_REQUEST_ONLY = "pull_request_only"
    MISSING_DOCUMENTATION = "missing_documentation"
    POLICY_ERROR = "policy_error"
    READ_ALLOWED = "read_allowed"
    DRAFT_ALLOWED = "draft_allowed"
    LOW_RISK_WRITE_ALLOWED = "low_risk_write_allowed"
    WITHIN_THRESHOLD = "within_threshold"
    APPROVED_BY_HUMAN = "approved_by_human"
    APPROVAL_QUORUM_NOT_MET = "approval_quorum_not_met"
    NEW_PAYEE_REVIEW = "new_payee_review"
    PERMISSION_CHANGE_REVIEW = "permission_change_review"
    TENANT_NOT_ONBOARDED = "tenant_not_onboarded"
    CLASS_ESCALATION_DENIED = "class_escalation_denied"
    SEND_AFTER_UNTRUSTED_READ = "send_after_untrusted_read"
    AUTOMATION_TAG = "automation_tag"
    EXCEEDS_SYSTEM_OF_RECORD = "exceeds_system_of_record"
    RECORD_NOT_READ = "record_not_read"
    TASK_EXPIRED = "task_expired"
    # The rubric's escalation triggers and rollback path (docs/autonomy.md).
    LOW_CONFIDENCE = "low_confidence"
    REPEATED_TOOL_ERRORS = "repeated_tool_errors"
    IRREVERSIBLE_WRITE = "irreversible_write"
    NO_ROLLBACK_PATH = "no_rollback_path"
    UNDO_IRREVERSIBLE = "undo_irreversible"
    # Refusals by the executor and dead letters.
    INVALID_EVENT = "invalid_event"
    SIGNATURE_INVALID = "signature_invalid"
    UNKNOWN_KEY = "unknown_key"
    DIGEST_MISMATCH = "digest_mismatch"
    AUTHORIZATION_EXPIRED = "authorization_expired"
    AUTHORIZATION_REPLAYED = "authorization_replayed"
    # A finished action whose kept result event is not the executor's own signed one (its database login wrote it).
    KEPT_RESULT_REFUSED = "kept_result_refused"
    ACTION_ID_REUSED = "action_id_reused"
    # A task submission under an id its tenant already runs for another requester or another request (the planner).
    TASK_ID_REUSED = "task_id_reused"
    APPROVAL_UNAUTHENTICATED = "approval_unauthenticated"
    UNKNOWN_TOOL = "unknown_tool"
    HANDLER_ERROR = "handler_error"
    # Dead letters of values refused before parsing (KitSettings bounds) or at the contract.
    TOO_LARGE = "too_large"
    TOO_DEEP = "too_deep"
    NOT_FINITE = "not_finite"
    TOOL_REPLY_MISMATCH = "tool_reply_mismatch"
    # Dead letters of an input whose handling published an event Kafka refuses for good (servicekit.refusals).
    OUTPUT_TOO_LARGE = "output_too_large"
    OUTPUT_REFUSED = "output_refused"
    # Envelope signatures (docs/security/signatures.md).
    SIGNATURE_MISSING = "signature_missing"
    SIGNER_NOT_ALLOWED = "signer_not_allowed"
    CONTROL_REPLAYED = "control_replayed"
    SIGNER_RETIRED = "signer_retired"
    # Follow-ups opened by the approval service.
    OUTCOME_UNKNOWN = "outcome_unknown"
    # Closing a task whose action never got an answer (the planner).
    STEP_TIMEOUT = "step_timeout"
    # Decisions added by the default policy pack: a human-granted financial call over the threshold, and a call on an
    # entry of the system of record whose read the task tried and that failed.
    OVER_THRESHOLD_APPROVED = "over_threshold_approved"
    # A financial call whose amount policy cannot read (its tool's catalog entry names no `facts.amount`, or the call gave
    # none): never under a threshold, a human approves it.
    AMOUNT_UNKNOWN = "amount_unknown"
    RECORD_READ_FAILED = "record_read_failed"
    # A financial call under the threshold that, with what its task already
    # had allowed, reaches it: split refunds escalate at the call that reaches the threshold.
    CUMULATIVE_THRESHOLD = "cumulative_threshold"
    # A financial call under every other bound that would take what the tenant's calls paid out over 24 hours without a
    # human (any task, any payee) over its `tenant_daily_payout_usd`: an agent fanning out across payees stops there.
    DAILY_PAYOUT_BOUND = "daily_payout_bound"
    # A call of a tool whose catalog entry does not name the call's tenant (`tenants`), or names no tenant at all for a tool
    # served outside the deployment (kinds topic, mcp, http): another tenant's code never runs for it.
    TOOL_NOT_GRANTED = "tool_not_granted"
    # A proposal an outside agent signed into a task another requester's signed request opened: an agent acts in its own
    # tasks only (it would be decided in that task's mode, counted in its figures, and read as one of its steps).
    TASK_OF_ANOTHER_REQUESTER = "task_of_another_requester"


REVIEW_REASONS: dict[str, str] = {
    "wrong_recipient": "the call would reach the wrong person or place",
    "wrong_amount": "the amount or quantity is wrong",
    "policy_should_have_denied": "the agent should never be allowed this: tighten the policy",
    "should_not_need_approval": "a human should not have been asked: the policy could allow it",
    "tone_content": "the wording or content is wrong",
    "missing_context": "the agent lacked information it needed",
    "other": "anything else (say what in the comment)",
}
"""The default taxonomy of why an approver rejects or edits a call; a tenant adds its own codes (`tidegate tenant set`)."""

APPROVE_REASONS: tuple[str, ...] = ("should_not_need_approval",)
"""The reasons an approver may give when approving the call unchanged: the escalation was needless (the autonomy signal).

Every other code says the call is wrong, which an unchanged approval contradicts: those go with an edit or a reject."""
