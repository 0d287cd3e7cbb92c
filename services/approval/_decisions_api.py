"""The queue and the decisions on it in the approval service's API: list requests, show one, approve it, reject it.

Check order: credential (401), access to the request (another tenant's answers as a missing one, 404; group and
four eyes, 403/409), then the body (422), then the state (409). A request is shown as `_approval_view` builds it
for the caller.
"""

# No `from __future__ import annotations`: FastAPI resolves the dependency aliases at runtime.

import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.approval._approval_view import ApprovalDetail, ApprovalView, is_overdue, view
from services.approval._http import error, json_body, parse
from services.approval._limits import NEXT_CURSOR, listing, next_cursor, read_cursor
from services.approval._outcome import earlier_grants
from services.approval._record_reads import record_reads
from services.approval._refusals import not_read
from services.approval._same_payee import same_payee
from services.approval.domain import ApprovalRecord, Refusal, Vote
from services.approval.service import ApprovalService, Session

__all__ = ["DECISION_BODIES", "ApproveRequest", "RejectRequest", "decision_routes"]


class ApproveRequest(BaseModel):
    """Approve the call you saw, optionally with edited args."""

    model_config = ConfigDict(extra="forbid")

    action_digest: str = Field(description="The `action_digest` you saw; refused with 409 if the call changed since.")
    comment: str | None = Field(default=None, max_length=4000)
    review_reason: str | None = Field(
        default=None,
        description="Why you edited the args: a code of the tenant's taxonomy (`GET /api/v1/review-reasons`), e.g. `wrong_amount`; "
        "approving the call unchanged takes only `should_not_need_approval` (a human should not have been asked), any other is "
        "422 `reason_not_for_approve`.",
    )
    edited_args: dict[str, Any] | None = Field(
        default=None, description="Replacement args; validated against the tool's schema, re-evaluated by policy before anything runs."
    )
    replace_edit: bool = Field(
        default=False,
        description="Approve another call than another approver's pending edit, discarding it and its approvals (with a `comment` "
        "saying why; the editor is told). Without it such an approve is `409 edit_pending`, naming the edit and who made it.",
    )


class RejectRequest(BaseModel):
    """Reject the call."""

    model_config = ConfigDict(extra="forbid")

    action_digest: str | None = Field(default=None, description="The `action_digest` you saw (optional for a reject).")
    comment: str | None = Field(default=None, max_length=4000)
    review_reason: str | None = Field(
        default=None,
        description="Why you rejected: a code of the tenant's taxonomy (`GET /api/v1/review-reasons`), e.g. `wrong_amount`.",
    )


DECISION_BODIES = (ApproveRequest, RejectRequest)


def _as_received(refusal: Refusal, received: str) -> HTTPException:
    """`refusal` as its HTTP error; an unknown id is named as the caller sent it, quoted, so stray whitespace shows."""
    if refusal.code == "not_found":
        refusal = refusal.model_copy(update={"message": f"no approval {json.dumps(received)}"})
    return error(refusal)


async def admitted(service: ApprovalService, received: str, session: Session, decision: Literal["approve", "reject"]) -> str:
    """The id the caller means (stray whitespace of a paste stripped), once they may vote on it."""
    approval_id = received.strip()
    refusal = await service.admission(approval_id, session, decision)
    if refusal is not None:
        raise _as_received(refusal, received)
    return approval_id


def decision_routes(router: APIRouter, get_service: Callable[[], ApprovalService], get_session: Callable[..., Awaitable[Session]]) -> None:
    """Add the queue's routes (`/approvals`, one request, approve, reject) to `router`, authenticated as the other routes are."""
    Svc = Annotated[ApprovalService, Depends(get_service)]
    Auth = Annotated[Session, Depends(get_session)]

    @router.get("/approvals", response_model=list[ApprovalView], tags=["approvers"], summary="List requests")
    async def list_approvals(
        service: Svc,
        session: Auth,
        response: Response,
        tenant: Annotated[str | None, Query(description="Tenant (defaults to the approver's own).")] = None,
        tool: Annotated[str | None, Query(description="Only this tool.")] = None,
        reason: Annotated[str | None, Query(description="Only requests with this reason code.", examples=["needs_human_approval"])] = None,
        action: Annotated[
            str | None, Query(description="Only the requests of this action id (the idempotency key a system of record shows).")
        ] = None,
        status: Annotated[
            Literal["pending", "granted", "rejected", "expired", "resolved", "all"],
            Query(description="`pending` (default; soonest to expire first), `granted`, `rejected`, `expired`, `resolved`, or `all`."),
        ] = "pending",
        limit: Annotated[int, Query(ge=1, le=500)] = 200,
        cursor: Annotated[str | None, Query(description=f"The `{NEXT_CURSOR}` header of the page before: the page after it.")] = None,
    ) -> list[dict[str, Any]]:
        """Requests of the approver's tenant: pending ones soonest to expire first, the others newest first.

        Each says whether the caller may decide it. A full page has an `X-Next-Cursor` header: send it back as `cursor` for the
        next page.
        """
        who = session.approver
        if tenant is not None and not who.may_see(tenant):
            raise HTTPException(403, detail={"code": "wrong_tenant", "message": f"{who.approver} may not see tenant {tenant!r}"})
        scope = tenant or (None if who.operator else who.tenant_id)
        expiring = status == "pending"  # the most urgent first; one at or past its expiry waits for nobody: start after now
        order = listing("expiring" if expiring else "newest", tenant=scope, status=status, tool=tool, reason=reason, action=action)
        now = service.clock() + timedelta(microseconds=1)  # the precision of a timestamptz: every expiry after now, none at it
        after = read_cursor(cursor, order) if cursor else ((now, "") if expiring else None)
        records = await service.repo.search(
            tenant_id=scope,
            status=None if status == "all" else status,
            tool=tool,
            reason=reason,
            limit=limit,
            expiring_first=expiring,
            after=after,
            action_id=action,
        )
        if len(records) == limit:
            last = records[-1]
            response.headers[NEXT_CURSOR] = next_cursor(order, last.expires_at if expiring else last.created_at, last.approval_id)
        if session.link is not None:
            records = [r for r in records if r.approval_id == session.link.approval_id]
        if status == "pending":  # past its expiry it is no longer waiting for anyone, even before the sweep closes it
            records = [r for r in records if not is_overdue(service, r)]
        return [await view(service, r, session) for r in records]

    @router.get("/approvals/{approval_id}", response_model=ApprovalDetail, tags=["approvers"], summary="Show one request")
    async def show(approval_id: str, service: Svc, session: Auth) -> dict[str, Any]:
        """A request with the task's other events known here and its cost so far (another tenant's: 404, as a missing one).

        Whitespace around the id (a paste from a chat message) is stripped; an unknown id is named as sent, quoted.
        """
        received, approval_id = approval_id, approval_id.strip()
        record = await service.repo.lookup(approval_id)
        other_link = session.link is not None and session.link.approval_id != approval_id  # a link shows its own approval only
        if not isinstance(record, ApprovalRecord) or other_link or not session.approver.may_see(record.tenant_id):
            found = None if other_link or isinstance(record, ApprovalRecord) else record  # a refused row is said to its tenant
            raise _as_received(not_read(found, approval_id, session.approver.may_see), received)
        context = await service.context(record)
        earlier = await earlier_grants(service.repo, record, context["events"])
        shown = await view(service, record, session)
        signed = service.shown(record).record  # what the policy signed of it, never the login's args (attacker5)
        reads = await record_reads(service.repo, service.catalog, signed, shown["key_args"])
        payee = await same_payee(service.repo, service.catalog, signed, service.clock(), service.shown)
        return {
            **shown, "context": context["events"], "cost": context["cost"], "earlier": earlier, "record_reads": reads, "same_payee": payee,
        }  # fmt: skip

    @router.post(
        "/approvals/{approval_id}/approve",
        response_model=ApprovalView,
        tags=["approvers"],
        summary="Approve (optionally with edited args)",
        responses={401: {}, 403: {}, 404: {}, 409: {}, 422: {}},
        openapi_extra=json_body(ApproveRequest),
    )
    async def approve(approval_id: str, request: Request, service: Svc, session: Auth) -> dict[str, Any]:
        """Approve the exact call you saw. With several required approvals the grant is published when enough distinct approvers agreed."""
        received, approval_id = approval_id, await admitted(service, approval_id, session, "approve")
        body = parse(ApproveRequest, await request.body())
        result = await service.vote(
            approval_id,
            session,
            Vote(
                decision="approve",
                comment=body.comment,
                review_reason=body.review_reason,
                seen_digest=body.action_digest,
                edited_args=body.edited_args,
                replace_edit=body.replace_edit,
            ),
        )
        if isinstance(result, Refusal):
            raise _as_received(result, received)
        return await view(service, result, session)

    @router.post(
        "/approvals/{approval_id}/reject",
        response_model=ApprovalView,
        tags=["approvers"],
        summary="Reject",
        responses={401: {}, 403: {}, 404: {}, 409: {}, 422: {}},
        openapi_extra=json_body(RejectRequest, required=False),
    )
    async def reject(approval_id: str, request: Request, service: Svc, session: Auth) -> dict[str, Any]:
        """Reject the call; one reject settles the request."""
        received, approval_id = approval_id, await admitted(service, approval_id, session, "reject")
        body = parse(RejectRequest, await request.body(), optional=True)
        vote = Vote(decision="reject", comment=body.comment, review_reason=body.review_reason, seen_digest=body.action_digest)
        result = await service.vote(approval_id, session, vote)
        if isinstance(result, Refusal):
            raise _as_received(result, received)
        return await view(service, result, session)
