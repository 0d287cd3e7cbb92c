"""The webhook routes of the approval service's API: where messages go, and the decisions that come back.

Decisions posted back by chat tools, a tenant's endpoints (admin), an approver's enrolment on one, and the
delivery log (admin).
A callback carries no credential: its Standard Webhooks signature with the endpoint's secret is checked instead
(`refuse_unsigned` before the body is read). The admin's controls over endpoints and messages are `_admin_api`'s.
"""

# No `from __future__ import annotations`: FastAPI resolves the dependency aliases at runtime.

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.approval import webhooks
from services.approval._admin_api import delivery_view, require_admin
from services.approval._approver_api import require_token
from services.approval._http import error, json_body, parse
from services.approval._limits import NEXT_CURSOR, listing, next_cursor, read_cursor, refuse_unsigned
from services.approval._webhook_endpoints_admin import MAX_OVERLAP_S
from services.approval.domain import Refusal, approvals_of
from services.approval.repository import Endpoint
from services.approval.service import ApprovalService, Session

__all__ = ["WEBHOOK_BODIES", "EndpointIn", "EndpointOut", "Enrolment", "SecretRotation", "webhook_routes"]


class EndpointIn(BaseModel):
    """A webhook endpoint to create or replace."""

    model_config = ConfigDict(extra="forbid")

    endpoint_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    url: str = Field(min_length=1, description="https to a public address, or a host the operator allow-listed.")
    tenant_id: str | None = Field(default=None, description="Your tenant (the default); another only for an operator, `*` too.")
    approvers: list[str] = Field(
        default_factory=list,
        description="Registered approvers of the tenant who get a one-time link in each message and may decide through callbacks: "
        "an admin names only themselves and those who enrolled this endpoint (`POST …/{endpoint_id}/enrol`); an operator, anyone.",
    )
    secret: str | None = Field(default=None, description="`whsec_<base64>`; generated when omitted.")


class Enrolment(BaseModel):
    """Enrolment on an endpoint: its URL and its secret's fingerprint, as the approver's chat tool knows them."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, description="The endpoint's URL; refused (409 endpoint_changed) unless it is the endpoint's now.")
    secret_fingerprint: str = Field(
        pattern="^[0-9a-f]{32}$",
        description="The first 32 hex digits of the SHA-256 of the endpoint's secret (`whsec_…`, UTF-8), from the chat tool that "
        "holds it; refused (409 endpoint_changed) unless it is the endpoint's secret now.",
        examples=["3f1a9c2b7d10e4f5a6b7c8d9e0f1a2b3"],
    )


class SecretRotation(BaseModel):
    """A new secret for an endpoint: with an overlap during which the former one still signs and verifies, or at once after a leak."""

    model_config = ConfigDict(extra="forbid")

    overlap_s: float = Field(
        default=86_400.0,
        gt=0,
        le=MAX_OVERLAP_S,
        description="How long the former secret still signs messages (beside the new one) and verifies callbacks: time to give the "
        "chat tool the new secret. Not with `leaked`.",
    )
    leaked: bool = Field(
        default=False, description="The secret may have leaked: the former one signs and verifies nothing from now on (no overlap)."
    )


class EndpointOut(BaseModel):
    """A webhook endpoint (the secret only when just created; its fingerprint always)."""

    endpoint_id: str
    url: str
    tenant_id: str
    approvers: list[str]
    enabled: bool
    source: str
    secret_fingerprint: str = Field(description="The first 32 hex digits of the SHA-256 of the secret: which secret, not the secret.")
    secret: str | None = None
    refused: str | None = Field(
        default=None,
        description="Why the endpoint's stored row is refused (unsigned: registered before secrets were sealed; or changed in the "
        "database): no message goes to it and no callback is accepted until it is registered again. None: it is in force.",
    )
    former_secret_fingerprint: str | None = Field(
        default=None,
        description="During a rotation's overlap, the former secret's fingerprint: messages are signed with it too and callbacks "
        "signed with it are taken, until `former_secret_until`. None: no overlap.",
    )
    former_secret_until: datetime | None = Field(default=None, description="When the former secret stops signing and verifying.")
    former_approvers: list[str] = Field(
        default_factory=list,
        description="During the overlap, those the former secret still acts for and sends links to (listed when it was rotated).",
    )
    approvers_without_token: list[str] | None = Field(
        default=None,
        description="Those of `approvers` who hold no live token in the endpoint's tenant: its messages carry no one-time link "
        "for them (a link dies with its approver's tokens) until one is made (`tidegate approvals token create`); the service "
        "logs a WARNING naming each once. None in an answer that does not say it (a change's) and for an endpoint of `*`, "
        "whose approvers' tokens are of each request's tenant.",
    )


WEBHOOK_BODIES = (EndpointIn, Enrolment, SecretRotation)


async def _read_out(e: Endpoint, service: ApprovalService) -> EndpointOut:
    """The view of an endpoint as its reads show it: with the approvers it lists who get no link, as they hold no token."""
    out = _endpoint_out(e, service.clock())
    if e.tenant_id != "*":
        out.approvers_without_token = [a for a in e.approvers if not await service.repo.groups_of(a, e.tenant_id)]
    return out


def _endpoint_out(e: Endpoint, now: datetime, secret: str | None = None) -> EndpointOut:
    former = e.former_at(now) if e.unproven is None else None
    return EndpointOut(
        endpoint_id=e.endpoint_id,
        url=e.url,
        tenant_id=e.tenant_id,
        approvers=list(e.approvers),
        enabled=e.enabled,
        source=e.source,
        secret_fingerprint=webhooks.secret_fingerprint(e.secret) if e.unproven is None else "",
        secret=secret,
        refused=e.unproven,
        former_secret_fingerprint=webhooks.secret_fingerprint(former) if former is not None else None,
        former_secret_until=e.former_until if former is not None else None,
        former_approvers=list(e.former_approvers) if former is not None else [],
    )


def webhook_routes(router: APIRouter, get_service: Callable[[], ApprovalService], get_session: Callable[..., Awaitable[Session]]) -> None:
    """Add the callback, endpoint, enrolment and delivery-log routes to `router`, authenticated as the other routes are."""
    Svc = Annotated[ApprovalService, Depends(get_service)]
    Auth = Annotated[Session, Depends(get_session)]

    async def answer_callback(tenant_id: str | None, endpoint_id: str, request: Request, service: ApprovalService) -> dict[str, Any]:
        refuse_unsigned(request.headers)  # before the body is read: nobody unsigned makes the service read one
        result = await service.callback(tenant_id, endpoint_id, request.headers, await request.body())
        if isinstance(result, Refusal):
            raise error(result)
        rejected_by = result.decided_by if result.status == "rejected" else None  # never listed under `approvers`
        return {"approval_id": result.approval_id, "status": result.status, "approvers": approvals_of(result), "rejected_by": rejected_by}

    @router.post(
        "/callbacks/{tenant_id}/{endpoint_id}",
        tags=["webhooks"],
        summary="Inbound decision from a chat tool (Standard Webhooks)",
        responses={401: {}, 403: {}, 404: {}, 409: {}, 422: {}},
    )
    async def callback(tenant_id: str, endpoint_id: str, request: Request, service: Svc) -> dict[str, Any]:
        """A decision posted back by an approver's chat tool to the tenant's endpoint (each message's `callback_url`).

        Body `{"type": "approval.decision", "data": {"approval_id", "approver", "decision": "approve"|"reject",
        "action_digest", "comment"?, "review_reason"?, "edited_args"?}}`, signed with the endpoint's secret per Standard Webhooks
        (`webhook-id`, `webhook-timestamp` within 5 minutes, `webhook-signature`). A `webhook-id` is accepted once;
        the approver must be one of the endpoint's, and the request of the endpoint's tenant.
        """
        return await answer_callback(tenant_id, endpoint_id, request, service)

    @router.post(
        "/callbacks/{endpoint_id}",
        tags=["webhooks"],
        summary="Inbound decision to an endpoint named without its tenant (the older callback URL)",
        responses={401: {}, 403: {}, 404: {}, 409: {}, 422: {}},
        deprecated=True,
    )
    async def callback_without_tenant(endpoint_id: str, request: Request, service: Svc) -> dict[str, Any]:
        """As `/callbacks/{tenant_id}/{endpoint_id}`; the endpoint is the one of that id whose secret signed the message."""
        return await answer_callback(None, endpoint_id, request, service)

    @router.get("/webhooks/endpoints", response_model=list[EndpointOut], tags=["webhooks"], summary="List endpoints (admin)")
    async def list_endpoints(service: Svc, session: Auth) -> list[EndpointOut]:
        """Your tenant's outgoing webhook endpoints (an operator: every one); secrets are not shown."""
        require_admin(session)
        who = session.approver
        found = await service.repo.endpoints() if who.operator else await service.repo.endpoints_of(who.tenant_id)
        return [await _read_out(e, service) for e in found]

    @router.get("/webhooks/endpoints/{endpoint_id}", response_model=EndpointOut, tags=["webhooks"], summary="Show one endpoint (admin)")
    async def get_endpoint(
        endpoint_id: str,
        service: Svc,
        session: Auth,
        tenant_id: Annotated[str | None, Query(description="An operator: whose endpoint (default `*`). Others: only their own.")] = None,
    ) -> EndpointOut:
        """One of your tenant's endpoints (an id only another tenant has: 404, as a missing one)."""
        require_admin(session)
        who = session.approver
        tenant = who.tenant_id if tenant_id is None else tenant_id
        found = await service.repo.endpoint(tenant, endpoint_id) if who.operator or tenant == who.tenant_id else None
        if found is None:
            raise HTTPException(404, detail={"code": "not_found", "message": f"no endpoint {endpoint_id}"})
        return await _read_out(found, service)

    @router.post(
        "/webhooks/endpoints",
        response_model=EndpointOut,
        tags=["webhooks"],
        summary="Create or replace an endpoint (admin)",
        responses={401: {}, 403: {}, 422: {}},
        openapi_extra=json_body(EndpointIn),
    )
    async def put_endpoint(request: Request, service: Svc, session: Auth) -> EndpointOut:
        """Register where your tenant's webhooks go; the answer shows the secret once. Ids are your tenant's own."""
        require_admin(session)
        body = parse(EndpointIn, await request.body())
        result = await service.register_endpoint(
            session.approver,
            endpoint_id=body.endpoint_id,
            url=body.url,
            tenant_id=body.tenant_id,
            approvers=body.approvers,
            secret=body.secret,
        )
        if isinstance(result, Refusal):
            raise error(result)
        return _endpoint_out(result, service.clock(), secret=result.secret)

    @router.post(
        "/webhooks/endpoints/{endpoint_id}/rotate",
        response_model=EndpointOut,
        tags=["webhooks"],
        summary="Give an endpoint a new secret, with an overlap or at once (admin)",
        responses={401: {}, 403: {}, 404: {}, 409: {}, 422: {}},
        openapi_extra=json_body(SecretRotation, required=False),
    )
    async def rotate_secret(
        endpoint_id: str,
        request: Request,
        service: Svc,
        session: Auth,
        tenant_id: Annotated[str | None, Query(description="An operator: whose endpoint (default `*`). Others: only their own.")] = None,
    ) -> EndpointOut:
        """A new secret, generated by the service and shown once in the answer (put it in the chat tool).

        Until `overlap_s` from now every message is signed with the new secret and the former one (`webhook-signature:
        v1,<new> v1,<former>`: a Standard Webhooks receiver holding either verifies it) and a callback signed with either is
        taken; then only the new one. `leaked`: the former one is refused at once. An admin's rotation lists only the admin
        for the new secret (as any change of the secret): the other approvers enrol again with its fingerprint, while the
        former secret still acts for them during the overlap. An operator's keeps every approver. An endpoint of the
        operator's webhooks file: `409 operator_endpoint` (rotated in the file). Another rotation during the overlap:
        `409 rotation_under_way` (it would drop the former secret at once), unless `leaked`.
        """
        require_admin(session)
        body = parse(SecretRotation, await request.body(), optional=True)
        if body.leaked and "overlap_s" in body.model_fields_set:
            raise error(Refusal(code="invalid_body", status=422, message="a leaked secret gets no overlap: send leaked or overlap_s"))
        result = await service.rotate_secret(
            session.approver, endpoint_id, tenant_id=tenant_id, overlap_s=body.overlap_s, leaked=body.leaked
        )
        if isinstance(result, Refusal):
            raise error(result)
        return _endpoint_out(result, service.clock(), secret=result.secret)

    @router.post(
        "/webhooks/endpoints/{endpoint_id}/enrol",
        response_model=EndpointOut,
        tags=["webhooks"],
        summary="Let an endpoint decide in your name",
        responses={401: {}, 403: {}, 404: {}, 409: {}, 422: {}},
        openapi_extra=json_body(Enrolment),
    )
    async def enrol(endpoint_id: str, request: Request, service: Svc, session: Auth) -> EndpointOut:
        """Enrol yourself on one of your tenant's endpoints: it then gets your one-time links, and its signed callbacks decide as you.

        Only you can: an admin names nobody but themselves on an endpoint. Send the endpoint's `url` and `secret_fingerprint`
        as your chat tool has them (409 `endpoint_changed` if the endpoint has another URL or secret). A later change of
        its URL or secret drops your enrolment.
        """
        require_token(session)
        body = parse(Enrolment, await request.body())
        result = await service.enrol(session.approver, endpoint_id, url=body.url, secret_fingerprint=body.secret_fingerprint)
        if isinstance(result, Refusal):
            raise error(result)
        return _endpoint_out(result, service.clock())

    @router.delete(
        "/webhooks/endpoints/{endpoint_id}/enrol",
        response_model=EndpointOut,
        tags=["webhooks"],
        summary="Stop an endpoint deciding in your name",
        responses={401: {}, 403: {}, 404: {}, 409: {}},
    )
    async def leave(endpoint_id: str, service: Svc, session: Auth) -> EndpointOut:
        """Take yourself off one of your tenant's endpoints: no more links to it, no more callbacks in your name."""
        require_token(session)
        result = await service.leave(session.approver, endpoint_id)
        if isinstance(result, Refusal):
            raise error(result)
        return _endpoint_out(result, service.clock())

    @router.get("/webhooks/deliveries", tags=["webhooks"], summary="The delivery log (admin)")
    async def deliveries(
        service: Svc,
        session: Auth,
        response: Response,
        approval_id: str | None = None,
        status: Annotated[Literal["pending", "delivered", "failed"] | None, Query(description="Only messages in this status.")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 200,
        cursor: Annotated[str | None, Query(description=f"The `{NEXT_CURSOR}` header of the page before: the page after it.")] = None,
    ) -> list[dict[str, Any]]:
        """Outgoing messages to your tenant's endpoints (an operator: all) with their status, attempts and last error, newest first.

        A full page has an `X-Next-Cursor` header: send it back as `cursor` for the next page.
        """
        require_admin(session)
        who = session.approver
        scope = None if who.operator else who.tenant_id
        order = listing("deliveries", tenant=scope, approval_id=approval_id, status=status)
        after = read_cursor(cursor, order) if cursor else None
        found = await service.repo.deliveries(approval_id, limit, tenant_id=scope, status=status, after=after)
        if len(found) == limit and found[-1].created_at is not None:
            response.headers[NEXT_CURSOR] = next_cursor(order, found[-1].created_at, found[-1].delivery_id)
        return [delivery_view(d) for d in found]
