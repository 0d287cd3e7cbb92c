"""A decision an approver took in their chat tool, posted back signed per Standard Webhooks, taken as a vote.

Part of `ApprovalService` (`services.approval.service` composes it): the endpoint and its signature are the webhook
endpoints' (`_webhook_endpoints_admin.callback_endpoint`), the vote is `_voting`'s.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas import ApprovalCredential
from services.approval import domain
from services.approval._people import Session
from services.approval._voting import Voting
from services.approval._webhook_endpoints_admin import WebhookEndpoints
from services.approval.domain import ApprovalRecord, Approver, Refusal, Vote

__all__ = ["CallbackDecision", "Callbacks"]


class CallbackDecision(BaseModel):
    """The `data` of an inbound callback: a decision an approver took in their chat tool."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    approval_id: str
    approver: str = Field(min_length=1)
    decision: str = Field(pattern="^(approve|reject)$")
    action_digest: str
    comment: str | None = Field(default=None, max_length=4000)
    review_reason: str | None = Field(default=None, max_length=63)  # a code of the tenant's taxonomy, checked as over the API
    edited_args: dict[str, Any] | None = None


class Callbacks(Voting, WebhookEndpoints):
    """An inbound callback verified, parsed, checked against its endpoint and taken as the approver's vote."""

    async def callback(self, tenant_id: str | None, endpoint_id: str, headers: Mapping[str, str], body: bytes) -> ApprovalRecord | Refusal:
        """An approver's decision posted back by their chat tool, verified per Standard Webhooks.

        In order: the endpoint exists, the signature is its secret's (`callback_endpoint`), the body
        parses, the message is new, the approver is one of the endpoint's, the request is of the
        endpoint's tenant (else the same 404 as a missing one), then the vote as over the API.
        """
        found = await self.callback_endpoint(tenant_id, endpoint_id, headers, body)
        if isinstance(found, Refusal):
            return found
        endpoint, msg_id = found
        try:
            doc = json.loads(body)
            decision = CallbackDecision.model_validate(doc.get("data") if isinstance(doc, dict) else None)
        except (ValueError, ValidationError) as exc:
            return Refusal(code="invalid_callback", status=422, message=f"callback body: {exc}"[:500])
        if not await self.repo.remember_message(endpoint.tenant_id, endpoint.endpoint_id, msg_id):
            return Refusal(code="replayed", status=409, message=f"message {msg_id} was already received (replay refused)")
        if decision.approver not in endpoint.approvers:
            return Refusal(code="not_endpoint_approver", status=403, message=f"{decision.approver} does not approve through this endpoint")
        record = await self.repo.get(decision.approval_id)
        if record is None or endpoint.tenant_id not in ("*", record.tenant_id):
            return domain.not_found(decision.approval_id)
        groups = await self.repo.groups_of(decision.approver, record.tenant_id)
        credential = ApprovalCredential(kind="callback", id=endpoint.endpoint_id, message_id=msg_id)
        who = Approver(
            approver=decision.approver, tenant_id=record.tenant_id, groups=frozenset(groups), via="callback", credential=credential
        )
        vote = Vote(
            decision="approve" if decision.decision == "approve" else "reject",
            comment=decision.comment,
            review_reason=decision.review_reason,
            seen_digest=decision.action_digest,
            edited_args=decision.edited_args,
        )
        return await self.vote(decision.approval_id, Session(who), vote)
