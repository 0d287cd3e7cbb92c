"""The events a decision produces: `action.decided`, and for an allow a signed `action.authorized`."""

from __future__ import annotations

from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, Literal, cast

from schemas import (
    ActionAuthorized,
    ActionAuthorizedData,
    ActionDecided,
    ActionDecidedData,
    ActionProposedData,
    Authorization,
    Reason,
    ReasonCode,
    canonical_json,
)
from servicekit import SigningKey, action_digest, authorization_message, encode_signed
from services.policy.engine import Verdict
from services.policy.facts import Call
from services.policy.repository import DecisionRecord, Reservation
from services.policy.settings import DEFAULT_MAX_DECISION_BYTES

__all__ = ["SOURCE", "build_record", "sign_authorization"]

SOURCE = "tidegate/policy"


def sign_authorization(
    key: SigningKey,
    *,
    call: Call,
    action_id: str,
    step: int,
    via: Literal["policy", "approval"],
    policy_version: str,
    approval_id: str | None,
    issued_at: datetime,
    ttl_s: float,
    estimated_cost_usd: float,
    digest: str | None = None,
) -> ActionAuthorizedData:
    """Sign permission to run exactly `call` once, until `issued_at + ttl_s`.

    The message (`servicekit.authorization_message`) excludes the signature: it is read from the
    fields as they are, no data built without one (it would never be published: `authorization_message` reads
    attributes only, the same values a `model_construct` would carry), then the data is
    built, and validated, once with the signature. `digest` is the call's `action_digest` when the caller has it.
    """
    grant: dict[str, Any] = {
        "via": via,
        "policy_version": policy_version,
        "action_digest": digest or action_digest(call.tenant_id, call.tool, call.args),
        "issued_at": issued_at,
        "expires_at": issued_at + timedelta(seconds=ttl_s),
        "key_id": key.key_id,
        "approval_id": approval_id,
    }
    call_fields: dict[str, Any] = {
        "action_id": action_id,
        "task_id": call.task_id,
        "tenant_id": call.tenant_id,
        "step": step,
        "tool": call.tool,
        "args": call.args,
        "estimated_cost_usd": estimated_cost_usd,
    }
    unsigned = SimpleNamespace(**call_fields, authorization=SimpleNamespace(**grant))  # what the message reads, as given
    signature = key.sign(authorization_message(cast(ActionAuthorizedData, unsigned)))
    return ActionAuthorizedData(**call_fields, authorization=Authorization(**grant, signature=signature))


def build_record(
    *,
    key: str,
    verdict: Verdict,
    call: Call,
    proposal: ActionProposedData,
    action_id: str,
    step: int,
    requested_by: str | None,
    via: Literal["policy", "approval"],
    approval_id: str | None,
    signer: SigningKey,
    now: datetime,
    ttl_s: float,
    latency_ms: float,
    traceparent: str | None,
    max_bytes: int = DEFAULT_MAX_DECISION_BYTES,
    task_requested_by: str | None = None,
) -> DecisionRecord:
    """The decision as events ready to publish (and to republish on redelivery), with its reservation.

    An event larger than `max_bytes` (`TIDEGATE_POLICY_MAX_DECISION_BYTES`) would be refused by the broker, and the
    proposer would wait for ever: such a call is denied `too_large` instead, by a decision that carries its digest
    and sizes but not its args (`_too_large`). `requested_by` is the proposal's, `task_requested_by` the learned task's (four eyes).
    """
    digest = action_digest(call.tenant_id, call.tool, call.args)

    def made(v: Verdict, args: dict[str, Any]) -> tuple[ActionDecided, bytes]:
        """The `action.decided` of `v`, carrying `args`, and its signed JSON (what is stored and published)."""
        data = ActionDecidedData(
            action_id=action_id,
            task_id=call.task_id,
            tenant_id=call.tenant_id,
            step=step,
            tool=call.tool,
            args=args,
            action_digest=digest,
            outcome=v.outcome,
            reasons=list(v.reasons),
            policy_version=v.policy_version,
            risk=v.risk,
            latency_ms=round(latency_ms, 3),
            facts=v.facts,
            via=via,
            approval_id=approval_id,
            mode="autonomous" if v.mode == "autonomous" else "draft",
            requested_by=requested_by,
            task_requested_by=task_requested_by,
            proposer=call.proposer,
            rationale=call.rationale,
            estimated_cost_usd=v.estimated_cost_usd,
        )
        event = ActionDecided.build(data, source=SOURCE, traceparent=traceparent)
        # Signed and encoded at once, before it is stored: the recorded bytes are what is published (and republished).
        return event, encode_signed(event, signer)

    decided, decided_json = made(verdict, call.args)
    authorized_json: bytes | None = None
    authorized: ActionAuthorized | None = None
    reservation: Reservation | None = None
    if verdict.outcome == "allow" and len(decided_json) <= max_bytes:
        data = sign_authorization(
            signer,
            call=call,
            action_id=action_id,
            step=step,
            via=via,
            policy_version=verdict.policy_version,
            approval_id=approval_id,
            issued_at=now,
            ttl_s=ttl_s,
            estimated_cost_usd=verdict.estimated_cost_usd,
            digest=digest,
        )
        authorized = ActionAuthorized.build(data, source=SOURCE, traceparent=traceparent)
        authorized_json = encode_signed(authorized, signer)
        reservation = Reservation(action_id, call.tenant_id, call.task_id, call.tool, call.args, verdict.estimated_cost_usd)
    largest = max(len(decided_json), len(authorized_json or b""))
    if largest > max_bytes:
        denied = _too_large(verdict, call, largest, max_bytes)
        decided, decided_json = made(denied, {})
        authorized = authorized_json = reservation = None
    return DecisionRecord(
        key=key,
        action_id=action_id,
        tenant_id=call.tenant_id,
        task_id=call.task_id,
        outcome=decided.data.outcome,
        action_digest=digest,
        proposal=proposal,
        decided_event=decided_json.decode(),
        authorized_event=authorized_json.decode() if authorized_json is not None else None,
        reservation=reservation,
        decided=decided,
        authorized=authorized,
    )


def _too_large(verdict: Verdict, call: Call, largest: int, max_bytes: int) -> Verdict:
    """A deny `too_large` in place of `verdict`, whose event of `largest` bytes would not fit `max_bytes`.

    Its decision carries the call's digest and sizes, no copy of its args: the proposer reads why, and the
    proposal (kept whole in `policy.decisions`) is never published again.
    """
    args_bytes = len(canonical_json(call.args))
    message = (
        f"the decision on this call would be {largest} bytes, over the {max_bytes} a decision may be "
        f"(TIDEGATE_POLICY_MAX_DECISION_BYTES; its args are {args_bytes} bytes): it is denied, and carries no args"
    )
    reason = Reason(code=ReasonCode.TOO_LARGE, policy_id="builtin:decision-size", message=message)
    facts = {"mode": verdict.facts.get("mode", call.requested_mode), "task_mode": call.task_mode}
    facts |= {"args_bytes": args_bytes, "decision_bytes": largest}
    return Verdict("deny", (reason,), verdict.policy_version, verdict.risk, facts | {"max_decision_bytes": max_bytes}, mode=verdict.mode)
