"""The events a decision produces: `action.decided`, and for an allow a signed `action.authorized`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from schemas import (
    ActionAuthorized,
    ActionAuthorizedData,
    ActionDecided,
    ActionDecidedData,
    ActionProposedData,
    Authorization,
)
from servicekit import SigningKey, action_digest, authorization_message, encode_signed
from services.policy.engine import Verdict
from services.policy.facts import Call
from services.policy.repository import DecisionRecord, Reservation

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
    data assembled without one (not validated: it is never published), then the data is built, and
    validated, once with the signature. `digest` is the call's `action_digest` when the caller has it.
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
    unsigned = ActionAuthorizedData.model_construct(**call_fields, authorization=Authorization.model_construct(**grant, signature=""))
    signature = key.sign(authorization_message(unsigned))
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
) -> DecisionRecord:
    """The decision as events ready to publish (and to republish on redelivery), with its reservation."""
    digest = action_digest(call.tenant_id, call.tool, call.args)
    decided = ActionDecided.build(
        ActionDecidedData(
            action_id=action_id,
            task_id=call.task_id,
            tenant_id=call.tenant_id,
            step=step,
            tool=call.tool,
            args=call.args,
            action_digest=digest,
            outcome=verdict.outcome,
            reasons=list(verdict.reasons),
            policy_version=verdict.policy_version,
            risk=verdict.risk,
            latency_ms=round(latency_ms, 3),
            facts=verdict.facts,
            via=via,
            approval_id=approval_id,
            mode="autonomous" if verdict.mode == "autonomous" else "draft",
            requested_by=requested_by,
            proposer=call.proposer,
            estimated_cost_usd=verdict.estimated_cost_usd,
        ),
        source=SOURCE,
        traceparent=traceparent,
    )
    # Signed and encoded at once, before it is stored: the recorded bytes are what is published (and republished).
    decided_json = encode_signed(decided, signer).decode()
    authorized_json: str | None = None
    authorized: ActionAuthorized | None = None
    reservation: Reservation | None = None
    if verdict.outcome == "allow":
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
        authorized_json = encode_signed(authorized, signer).decode()
        reservation = Reservation(action_id, call.tenant_id, call.task_id, call.tool, call.args, verdict.estimated_cost_usd)
    return DecisionRecord(
        key=key,
        action_id=action_id,
        tenant_id=call.tenant_id,
        task_id=call.task_id,
        outcome=verdict.outcome,
        action_digest=digest,
        proposal=proposal,
        decided_event=decided_json,
        authorized_event=authorized_json,
        reservation=reservation,
        decided=decided,
        authorized=authorized,
    )
