"""The tenant admin's controls in the approval service's API: remove an endpoint, resend a failed message, cut off a token.

Every route needs an `admin` token of the tenant (or an operator token) and acts in the caller's own tenant:
another tenant's endpoint, message or token answers `404` exactly as a missing one. Each of them narrows
what reaches or acts for the tenant, so they fit "the API never widens": making a token stays with the
operator's CLI (`tidegate approvals token create`).
"""

# No `from __future__ import annotations`: FastAPI resolves the dependency aliases at runtime.

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from servicekit.people import same_person
from services.approval._http import error
from services.approval.domain import Refusal
from services.approval.repository import Delivery, TokenInfo
from services.approval.service import ApprovalService, Session
from services.approval.tenants import ADMIN_GROUP

__all__ = ["TokenView", "admin_routes", "delivery_view", "require_admin"]

REMOVED = "endpoint removed by {who}: never sent"


class TokenView(BaseModel):
    """An approver token of the tenant, without its secret (only its hash is kept anyway)."""

    token_id: str
    approver: str
    tenant_id: str
    groups: list[str]
    operator: bool
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = Field(description="When it last authenticated a call.")
    revoked_at: datetime | None
    live: bool = Field(description="Neither revoked nor expired, and its row proven: it authenticates now.")
    refused: str | None = Field(
        default=None,
        description="Why the service refuses the token's row (its signature fails; `rolled_back: …`: a revocation its row no "
        "longer shows): it authenticates nothing, whatever `revoked_at` says.",
    )


class RevokedToken(TokenView):
    """A token just revoked, and what the same person still holds."""

    still_live: list[str] = Field(
        description="The person's other live tokens in the tenant: while any is live, their one-time links and callbacks still "
        "act for them; revoke those too to cut them off."
    )
    operator_token_live: bool = Field(
        default=False,
        description="The person also holds a live operator token (across tenants, which only the operator's CLI revokes): "
        "their links and callbacks in this tenant still act until it is revoked too.",
    )


def require_admin(session: Session) -> None:
    """Refuse anyone but an `admin` token of the tenant or an operator token (a one-time link is neither)."""
    who = session.approver
    if session.link is not None or not (who.operator or ADMIN_GROUP in who.groups):
        raise HTTPException(
            403,
            detail={"code": "not_admin", "message": f"managing webhooks needs a token in group {ADMIN_GROUP!r} (or an operator token)"},
        )


def delivery_view(d: Delivery) -> dict[str, Any]:
    """A message of the delivery log as the API shows it (its body, which holds the request, is not shown)."""
    return {
        "delivery_id": d.delivery_id,
        "endpoint_id": d.endpoint_id,
        "tenant_id": d.tenant_id,
        "approval_id": d.approval_id,
        "event_type": d.event_type,
        "status": d.status,
        "attempts": d.attempts,
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
    }


def _token_view(info: TokenInfo, now: datetime) -> dict[str, Any]:
    live = info.unproven is None and info.revoked_at is None and (info.expires_at is None or info.expires_at > now)
    return {**asdict(info), "groups": list(info.groups), "live": live, "refused": info.unproven}


def _unknown(kind: str, ident: str) -> HTTPException:
    return error(Refusal(code="not_found", status=404, message=f"no {kind} {ident}"))


def admin_routes(router: APIRouter, get_service: Callable[[], ApprovalService], get_session: Callable[..., Awaitable[Session]]) -> None:
    """Add the admin's routes to `router`, authenticated as the other routes are."""
    Svc = Annotated[ApprovalService, Depends(get_service)]
    Auth = Annotated[Session, Depends(get_session)]

    async def tenant_token(service: ApprovalService, session: Session, token_id: str) -> TokenInfo:
        found = next((t for t in await service.repo.tokens() if t.token_id == token_id), None)
        if found is None or not session.approver.may_see(found.tenant_id):
            raise _unknown("token", token_id)
        return found

    @router.delete(
        "/webhooks/endpoints/{endpoint_id}",
        tags=["webhooks"],
        summary="Remove an endpoint (admin)",
        responses={401: {}, 403: {}, 404: {}, 409: {}},
    )
    async def remove_endpoint(
        endpoint_id: str,
        service: Svc,
        session: Auth,
        tenant_id: Annotated[str | None, Query(description="An operator: whose endpoint (default `*`). Others: only their own.")] = None,
    ) -> dict[str, Any]:
        """Stop sending to one of your tenant's endpoints at once: its pending messages fail, never sent.

        No link is minted for it again, and its callbacks are refused. The endpoint stays listed as `enabled: false` with
        its delivery log; registering the id again (`POST /api/v1/webhooks/endpoints`) makes it live, with nobody enrolled.
        An endpoint of the operator's settings file is refused (`409 operator_endpoint`): it would come back at the next
        start; the operator removes it there.
        """
        require_admin(session)
        who = session.approver
        tenant = who.tenant_id if tenant_id is None else tenant_id
        found = await service.repo.endpoint(tenant, endpoint_id) if who.may_see(tenant) else None
        if found is None:
            raise _unknown("endpoint", endpoint_id)
        if found.source == "file":
            message = f"endpoint {endpoint_id} comes from the operator's webhooks file; the operator removes it there"
            raise error(Refusal(code="operator_endpoint", status=409, message=message))
        removed = await service.repo.remove_endpoint(tenant, endpoint_id, REMOVED.format(who=who.approver))
        if removed is None:
            raise _unknown("endpoint", endpoint_id)
        return {"endpoint_id": removed.endpoint_id, "tenant_id": removed.tenant_id, "enabled": removed.enabled}

    @router.post(
        "/webhooks/deliveries/{delivery_id}/retry",
        tags=["webhooks"],
        summary="Send a failed message again (admin)",
        responses={401: {}, 403: {}, 404: {}, 409: {}},
    )
    async def retry_delivery(delivery_id: str, service: Svc, session: Auth) -> dict[str, Any]:
        """Make a `failed` message of your tenant `pending` again, due now, with its attempts counted from zero.

        `409 not_failed` for one pending or delivered, `409 endpoint_removed` once its endpoint was removed. The message is
        written afresh at each attempt: a request decided or expired since goes out without one-time links.
        """
        require_admin(session)
        result = await service.requeue(session.approver, delivery_id)
        if isinstance(result, Refusal):
            raise error(result)
        return delivery_view(result)

    @router.get(
        "/webhooks/deliveries/{delivery_id}/attempts",
        tags=["webhooks"],
        summary="The attempts of one message (admin)",
        responses={401: {}, 403: {}, 404: {}},
    )
    async def delivery_attempts(delivery_id: str, service: Svc, session: Auth) -> list[dict[str, Any]]:
        """Each attempt at sending one of your tenant's messages, in order: when, the HTTP status or the error, how long it took."""
        require_admin(session)
        found = await service.repo.delivery(delivery_id)
        if found is None or not session.approver.may_see(found.tenant_id):
            raise _unknown("delivery", delivery_id)
        return [
            {"attempt": a.attempt, "at": a.at, "status_code": a.status_code, "error": a.error, "duration_ms": a.duration_ms}
            for a in await service.repo.attempts_of(delivery_id)
        ]

    @router.get("/tokens", response_model=list[TokenView], tags=["tokens"], summary="Your tenant's approver tokens (admin)")
    async def list_tokens(service: Svc, session: Auth) -> list[dict[str, Any]]:
        """Every approver token of your tenant (an operator: every token), live or not, oldest first, without secrets."""
        require_admin(session)
        now = service.clock()
        return [_token_view(t, now) for t in await service.repo.tokens() if session.approver.may_see(t.tenant_id)]

    @router.post(
        "/tokens/{token_id}/revoke",
        response_model=RevokedToken,
        tags=["tokens"],
        summary="Revoke an approver token (admin)",
        responses={401: {}, 403: {}, 404: {}, 409: {}},
    )
    async def revoke_token(token_id: str, service: Svc, session: Auth) -> dict[str, Any]:
        """Revoke a token of your tenant at once (`409 already_revoked` a second time); nothing can make it live again.

        A one-time link acts only while its person holds a live token in the tenant, and the links each webhook message
        carries are minted for such people only: once the person's last live token is revoked, their links and the
        callbacks in their name decide nothing. `still_live` lists the person's other live tokens.
        """
        require_admin(session)
        found = await tenant_token(service, session, token_id)
        if not await service.repo.revoke_token(token_id):
            raise error(Refusal(code="already_revoked", status=409, message=f"token {token_id} was already revoked"))
        now = service.clock()
        tokens = await service.repo.tokens()
        revoked = next(t for t in tokens if t.token_id == token_id)
        theirs = [_token_view(t, now) for t in tokens if same_person(t.approver, found.approver) and t.token_id != token_id]
        live = [t for t in theirs if t["live"]]
        return {
            **_token_view(revoked, now),
            "still_live": [t["token_id"] for t in live if t["tenant_id"] == found.tenant_id],
            "operator_token_live": found.tenant_id != "*" and any(t["tenant_id"] == "*" for t in live),
        }
