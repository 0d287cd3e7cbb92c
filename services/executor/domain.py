"""The executor's decisions, as pure functions: is an authorization genuine, may the call run, what next.

Nothing here does I/O; `executor.py` and `attempts.py` apply these decisions with the claim store, the tools and the bus.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from schemas import ActionAuthorizedData, ReasonCode, RetryPolicy, ToolSpec
from servicekit import Keyring, action_digest, authorization_message

__all__ = [
    "TERMINAL",
    "Call",
    "CallError",
    "ClaimRecord",
    "Finish",
    "Refusal",
    "Status",
    "backoff_s",
    "check_authenticity",
    "decide",
    "end_of_interrupted",
    "final_status",
    "safe_to_repeat",
]

Status = Literal["claimed", "running", "waiting", "succeeded", "failed", "unknown"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "unknown"})


@dataclass(frozen=True)
class CallError:
    """Why an action ended without success, kept with its claim (as JSON) and published in its result."""

    type: str
    message: str
    retryable: bool = False
    refusal: ReasonCode | None = None  # the authorization itself was refused: its event is dead-lettered with this code too
    maybe_applied: bool = False  # kept while `waiting`: a failed attempt may have taken effect (the next process needs to know)

    def to_json(self) -> dict[str, Any]:
        """The stored form (the `dead_letter` key names the refusal, as rows written before this type read)."""
        doc: dict[str, Any] = {"type": self.type, "message": self.message, "retryable": self.retryable}
        if self.refusal is not None:
            doc["dead_letter"] = str(self.refusal)
        if self.maybe_applied:
            doc["maybe_applied"] = True
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CallError:
        """Read the stored form back."""
        refusal = doc.get("dead_letter")
        return cls(
            str(doc["type"]),
            str(doc["message"]),
            bool(doc.get("retryable", False)),
            ReasonCode(refusal) if refusal else None,
            bool(doc.get("maybe_applied", False)),
        )


@dataclass(frozen=True)
class ClaimRecord:
    """The executor's record of one action id: who claimed it, where it got to, and how it ended."""

    action_id: str
    event_id: str
    tenant_id: str
    task_id: str
    step: int
    tool: str
    args: dict[str, Any]
    action_digest: str
    status: Status
    result: dict[str, Any] | None = None
    error: CallError | None = None
    attempts: int = 0
    duration_ms: float = 0.0
    cost_usd: float = 0.0
    result_event: str | None = None  # the result event's JSON as first published; re-sent as is
    retry_at: datetime | None = None  # `waiting`: when the next attempt may be made (the backoff after `error`)

    @property
    def terminal(self) -> bool:
        """Whether the action has its one outcome already."""
        return self.status in TERMINAL


@dataclass(frozen=True)
class Refusal:
    """Why an authorization is not genuine; the event is dead-lettered with `code` and never executes."""

    code: ReasonCode
    message: str


@dataclass(frozen=True)
class Finish:
    """End the action without calling the tool (again)."""

    status: Literal["failed", "unknown"]
    error_type: str
    message: str
    dead_letter: ReasonCode | None = None


@dataclass(frozen=True)
class Call:
    """Call the tool (for the first time, or again with the same idempotency key after a crash)."""

    recovering: bool = False


def check_authenticity(data: ActionAuthorizedData, keyring: Keyring) -> Refusal | None:
    """Whether the policy service really signed exactly this call: key, signature, then digest."""
    auth = data.authorization
    if not keyring.knows(auth.key_id):
        return Refusal(ReasonCode.UNKNOWN_KEY, f"authorization signed with unknown key {auth.key_id!r}")
    if not keyring.verify(auth.key_id, authorization_message(data), auth.signature):
        return Refusal(
            ReasonCode.SIGNATURE_INVALID, f"signature of authorization for action {data.action_id} does not verify with {auth.key_id}"
        )
    expected = action_digest(data.tenant_id, data.tool, data.args)
    if auth.action_digest != expected:
        return Refusal(
            ReasonCode.DIGEST_MISMATCH, f"authorization digest {auth.action_digest[:16]}… is not the digest of the call ({expected[:16]}…)"
        )
    return None


def safe_to_repeat(spec: ToolSpec) -> bool:
    """A second call cannot cause a second side effect: the tool is idempotent or deduplicates on our key."""
    return spec.idempotent or spec.accepts_idempotency_key or not spec.writes


def decide(
    record: ClaimRecord,
    spec: ToolSpec | None,
    *,
    now: datetime,
    expires_at: datetime,
    killed: str | None,
    arg_errors: Sequence[str] = (),
) -> Finish | Call:
    """What to do with a claimed, not yet finished action, right before calling its tool.

    Args:
        record: The claim (status `claimed`; `running` when a previous process died mid-call; `waiting` when it
            stopped between two attempts, with no call in flight: the next attempt is made, none is taken as cut off).
        spec: The catalogued tool, or None when the executor does not know it.
        now: The current time.
        expires_at: When the authorization stops being valid.
        killed: The reason of the kill switch that stops this tool for this tenant, if one is set.
        arg_errors: How the signed args break the executor's own copy of the tool's schema (the policy
            service checked them too; a signed call the executor's catalog refuses is not made).
    """
    if spec is None:
        return Finish("failed", ReasonCode.UNKNOWN_TOOL, f"tool {record.tool!r} is not in the executor's catalog", ReasonCode.UNKNOWN_TOOL)
    interrupted = record.status == "running"
    if interrupted:
        ended = end_of_interrupted(record, spec)
        if ended is not None:
            return ended
    refused = _refusal(spec, now=now, expires_at=expires_at, killed=killed, arg_errors=arg_errors)
    if refused is None:
        return Call(recovering=interrupted)
    return _stopped_after_interruption(record, spec, refused) if interrupted else refused


def _refusal(spec: ToolSpec, *, now: datetime, expires_at: datetime, killed: str | None, arg_errors: Sequence[str]) -> Finish | None:
    """Why an authorization of `spec` may not be called now (expired, kill switch, args the catalog refuses), or None."""
    if now >= expires_at:
        return Finish(
            "failed",
            ReasonCode.AUTHORIZATION_EXPIRED,
            f"authorization expired at {expires_at.isoformat()}",
            ReasonCode.AUTHORIZATION_EXPIRED,
        )
    if killed is not None:
        return Finish("failed", ReasonCode.KILL_SWITCH, f"kill switch set for {spec.name}: {killed}")
    if arg_errors:
        message = f"args break {spec.name}'s schema in the executor's catalog: " + "; ".join(arg_errors)[:1000]
        return Finish("failed", ReasonCode.INVALID_ARGS, message, ReasonCode.INVALID_ARGS)
    return None


def _stopped_after_interruption(record: ClaimRecord, spec: ToolSpec, refused: Finish) -> Finish:
    """How an interrupted call that may not be called again now ends (`refused` says why not): as an interrupted call.

    The interrupted attempt may have taken effect, so the authorization was used: the outcome of a write is
    unknown (a person checks it), and the authorization is not dead-lettered as if it had been refused before any call.
    """
    return Finish(
        final_status(spec, maybe_applied=True),
        "interrupted",
        f"the executor stopped during attempt {record.attempts} of a call to {spec.name}; since then: {refused.message}; "
        "it is not called again, and the call may or may not have taken effect" + ("; a person must check" if spec.writes else ""),
    )


def end_of_interrupted(record: ClaimRecord, spec: ToolSpec | None) -> Finish | None:
    """How a call a dead process left `running` ends without calling again, or None when it may be called again.

    It is called again (same idempotency key) only when that is safe and `retry.max_attempts` leaves an
    attempt: the interrupted attempts count, so a call that kills the process is not repeated after every restart.
    """
    if spec is None or not safe_to_repeat(spec):
        name = spec.name if spec is not None else record.tool
        return Finish(
            "unknown",
            "interrupted",
            f"the executor stopped during a call to {name}, which is not idempotent and takes no idempotency key: "
            "the call may or may not have taken effect, so it is not repeated; a person must check",
        )
    if record.attempts >= spec.retry.max_attempts:
        return Finish(
            final_status(spec, maybe_applied=True),
            "interrupted",
            f"the executor stopped during attempt {record.attempts} of a call to {spec.name}, the last its retry.max_attempts "
            f"({spec.retry.max_attempts}) allows: it is not called again; the call may or may not have taken effect"
            + ("; a person must check" if spec.writes else ""),
        )
    return None


def final_status(spec: ToolSpec, *, maybe_applied: bool) -> Literal["failed", "unknown"]:
    """How a call that did not succeed ends: `unknown` when a write may have happened anyway."""
    return "unknown" if maybe_applied and spec.writes else "failed"


def backoff_s(policy: RetryPolicy, retry: int, retry_after_s: float | None = None) -> float:
    """Wait before retry number `retry` (1 = the second attempt).

    Exponential, at least what the tool was told to wait (`Retry-After`), capped by the policy's longest wait.
    """
    wait = policy.backoff_initial_s * policy.backoff_multiplier ** (retry - 1)
    return float(min(max(wait, retry_after_s or 0.0), policy.backoff_max_s))
