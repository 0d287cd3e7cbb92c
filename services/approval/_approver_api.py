"""The approver's own routes in the approval service's API, beside the requests themselves.

Who the credential is and its rotation, the review reasons and report, the queue's age, and the undo of a call.
A one-time link reads none of the tenant's report or queue (`require_token`): it acts on its one request only.
"""

# No `from __future__ import annotations`: FastAPI resolves the dependency aliases at runtime.

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from services.approval._http import error
from services.approval.domain import Refusal
from services.approval.quality import QueueAge
from services.approval.service import ApprovalService, Session

__all__ = ["MeView", "RotatedToken", "approver_routes", "require_token"]


class MeView(BaseModel):
    """Who the credential authenticates."""

    approver: str
    tenant_id: str
    groups: list[str]
    via: str
    operator: bool = Field(default=False, description="An operator token acts in every tenant (made by the operator CLI only).")
    approval_id: str | None = Field(default=None, description="For a one-time link: the one approval it is for.")


class RotatedToken(BaseModel):
    """A token that replaces the caller's (shown once; the old one is revoked)."""

    token_id: str
    token: str
    expires_at: str


def require_token(session: Session) -> None:
    """Refuse a one-time link: it acts on its one request (see it, decide it once), and reads nothing else of its tenant."""
    if session.link is not None:
        raise HTTPException(
            403, detail={"code": "not_a_token", "message": "a one-time link shows and decides its own request only; use an API token"}
        )


def approver_routes(router: APIRouter, get_service: Callable[[], ApprovalService], get_session: Callable[..., Awaitable[Session]]) -> None:
    """Add the approver's own routes (`/me`, `/review-reasons`, `/report`, an undo, `/queue`, `/tokens/rotate`) to `router`."""
    Svc = Annotated[ApprovalService, Depends(get_service)]
    Auth = Annotated[Session, Depends(get_session)]

    @router.get("/me", response_model=MeView, tags=["approvers"], summary="Who am I")
    async def me(session: Auth) -> MeView:
        """The approver, tenant and groups the credential authenticates."""
        who = session.approver
        return MeView(
            approver=who.approver,
            tenant_id=who.tenant_id,
            groups=sorted(who.groups),
            via=who.via,
            operator=who.operator,
            approval_id=session.link.approval_id if session.link else None,
        )

    @router.get("/review-reasons", tags=["approvers"], summary="Reasons for a reject or an edit")
    async def review_reasons(service: Svc, session: Auth) -> dict[str, str]:
        """The taxonomy an approver picks from when rejecting or editing: code → meaning (the defaults and the tenant's own)."""
        return service.review_reasons(session.approver.tenant_id)

    @router.get("/report", tags=["approvers"], summary="Why calls were rejected or edited; how approvals go", responses={401: {}, 403: {}})
    async def report(
        service: Svc,
        session: Auth,
        since_days: Annotated[float, Query(gt=0, le=3650, description="Requests created in the last N days.")] = 30,
    ) -> dict[str, Any]:
        """Why calls were rejected or edited (by tool, reason, policy; examples), time to decision, rates, rubber stamps.

        Your tenant's requests (an operator: every tenant's); each example names its `tidegate audit explain` command.
        """
        require_token(session)
        who = session.approver
        return await service.review_report(None if who.operator else who.tenant_id, since_days)

    @router.post(
        "/actions/{action_id}/undo",
        tags=["approvers"],
        summary="Propose the undo of a succeeded call",
        responses={401: {}, 404: {}, 422: {}},
    )
    async def undo(action_id: str, service: Svc, session: Auth) -> dict[str, Any]:
        """Propose the call that undoes `action_id` (from the executor's plan) as an ordinary proposal: policy decides it.

        Your tenant's actions only (another's is 404); an irreversible one is 422 `undo_irreversible` with what to do instead.
        """
        proposed = await service.propose_undo(action_id, session)
        if isinstance(proposed, Refusal):
            raise error(proposed)
        return proposed.model_dump(mode="json")

    @router.get("/queue", response_model=QueueAge, tags=["approvers"], summary="How old my queue is", responses={401: {}, 403: {}})
    async def queue(service: Svc, session: Auth) -> QueueAge:
        """Pending requests of your tenant (an operator: every tenant), the oldest one's age, and how many are past the SLO."""
        require_token(session)
        who = session.approver
        return await service.queue(None if who.operator else who.tenant_id)

    @router.post(
        "/tokens/rotate",
        response_model=RotatedToken,
        tags=["approvers"],
        summary="Rotate your token",
        responses={401: {}, 403: {}, 422: {}},
    )
    async def rotate(
        service: Svc,
        session: Auth,
        expires_in_days: Annotated[
            float | None,
            Query(gt=0, le=3650, description="Lifetime of the new token (default: the setting); at most the calling token's own lifetime."),
        ] = None,
    ) -> RotatedToken:
        """A new token with the same approver, tenant and groups, shown once; the token that called is revoked at once.

        It lives no longer than the calling token was made to live (422 `lifetime_too_long` if asked to): rotation never widens a token.
        """
        rotated = await service.rotate_token(session, expires_in_days)
        if isinstance(rotated, Refusal):
            raise error(rotated)
        if rotated is None:
            raise HTTPException(403, detail={"code": "not_a_token", "message": "only an API token can be rotated (not a one-time link)"})
        token, info = rotated
        assert info.expires_at is not None
        return RotatedToken(token_id=info.token_id, token=token, expires_at=info.expires_at.isoformat())
