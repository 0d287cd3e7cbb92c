"""The HTTP API of the approval service (FastAPI) and the approver page it serves at `/`."""

# No `from __future__ import annotations`: FastAPI resolves the dependency aliases defined inside create_api at runtime.

import base64
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from services.approval import domain, webhooks
from services.approval.domain import ApprovalRecord, Refusal, Vote
from services.approval.repository import Endpoint
from services.approval.service import ApprovalService, AuthError, Session

__all__ = ["ServiceHolder", "create_api"]

PAGE = Path(__file__).parent / "web" / "index.html"
ADMIN_GROUP = "admin"

DESCRIPTION = """
Humans in the loop for Tidegate. The policy service escalates an action; this service keeps the
request, notifies approvers (signed webhooks) and takes their decision, which it publishes signed
on the `approvals` topic.

**Authentication**: `Authorization: Bearer <token>` with an approver API token
(`tidegate approvals token create`), or with a one-time link token (`tgl.…`) from a webhook.
**Errors** carry `{"detail": {"code", "message"}}`: 401 unauthenticated, 403 not allowed (tenant,
group, four eyes), 404 unknown, 409 conflict (already decided, expired, the call changed, replay),
422 invalid input (e.g. edited args that break the tool's schema).
"""


@dataclass
class ServiceHolder:
    """The service, set once the process has its database pool (the API answers 503 until then)."""

    service: ApprovalService | None = None


class ReasonView(BaseModel):
    """One reason behind the escalation."""

    code: str
    policy_id: str
    message: str


class ApprovalView(BaseModel):
    """A request as an approver sees it."""

    model_config = ConfigDict(frozen=True)

    approval_id: str = Field(description="Id of the request.", examples=["ap-1f2e3d4c5b6a7980"])
    kind: Literal["approval", "follow_up"] = Field(description="`approval`: an escalated call; `follow_up`: an unknown outcome to resolve.")
    status: str = Field(description="`pending`, `granted`, `rejected`, `expired` or `resolved` (follow-ups).")
    tenant_id: str
    task_id: str
    action_id: str
    tool: str
    args: dict[str, Any] = Field(description="The exact call the request is about.")
    action_digest: str = Field(description="SHA-256 of the call; send it back when deciding, so a changed call is refused.")
    reasons: list[ReasonView]
    facts: dict[str, Any] = Field(description="Facts policy computed (payee is new, amounts, taint…).")
    risk: str
    policy_version: str
    requested_by: str | None = Field(description="Requester of the task; may not approve (four eyes).")
    required_approvals: int = Field(description="Distinct approvals needed before the grant is published.")
    approvers: list[str] = Field(description="Who approved so far (or decided).")
    edited_args: dict[str, Any] | None
    comment: str | None
    decided_by: str | None
    decided_at: str | None
    resolution: str | None = Field(description="Follow-ups: `confirmed_done` or `confirmed_not_done`.")
    result_error: dict[str, Any] | None = Field(description="Follow-ups: the error the executor reported.")
    created_at: str
    expires_at: str
    escalated: bool
    can_decide: bool = Field(description="Whether the caller may decide it now.")
    cannot_decide_because: str | None = Field(description="Why not, in words.")
    killswitch: dict[str, Any] | None = Field(description="An active kill switch on this tool and tenant, if any.")


class ApprovalDetail(ApprovalView):
    """A request with the task's context."""

    context: list[dict[str, Any]] = Field(description="The task's decisions and results this service has seen.")
    cost: dict[str, Any] = Field(description="Cost so far: `spent_usd` (results), `reserved_usd` (allowed, no result yet), event counts.")


class ApproveRequest(BaseModel):
    """Approve the call you saw, optionally with edited args."""

    model_config = ConfigDict(extra="forbid")

    action_digest: str = Field(description="The `action_digest` you saw; refused with 409 if the call changed since.")
    comment: str | None = Field(default=None, max_length=4000)
    edited_args: dict[str, Any] | None = Field(
        default=None, description="Replacement args; validated against the tool's schema, re-evaluated by policy before anything runs."
    )


class RejectRequest(BaseModel):
    """Reject the call."""

    model_config = ConfigDict(extra="forbid")

    action_digest: str | None = Field(default=None, description="The `action_digest` you saw (optional for a reject).")
    comment: str | None = Field(default=None, max_length=4000)


class MeView(BaseModel):
    """Who the credential authenticates."""

    approver: str
    tenant_id: str
    groups: list[str]
    via: str
    approval_id: str | None = Field(default=None, description="For a one-time link: the one approval it is for.")


class EndpointIn(BaseModel):
    """A webhook endpoint to create or replace."""

    model_config = ConfigDict(extra="forbid")

    endpoint_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    url: str = Field(min_length=1)
    tenant_id: str = Field(default="*")
    approvers: list[str] = Field(default_factory=list, description="Approvers who get a one-time link in each message.")
    secret: str | None = Field(default=None, description="`whsec_<base64>`; generated when omitted.")


class EndpointOut(BaseModel):
    """A webhook endpoint (the secret only when just created)."""

    endpoint_id: str
    url: str
    tenant_id: str
    approvers: list[str]
    enabled: bool
    source: str
    secret: str | None = None


def _page_headers(html: str) -> dict[str, str]:
    """Headers of the approver page: only its own inline script runs, nothing loads from elsewhere, no framing.

    Framing is refused because an approve button inside someone else's frame could be clickjacked.
    """
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts)
    csp = (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    return {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
    }


def _error(refusal: Refusal) -> HTTPException:
    return HTTPException(status_code=refusal.status, detail={"code": refusal.code, "message": refusal.message})


def _view(service: ApprovalService, record: ApprovalRecord, session: Session) -> dict[str, Any]:
    refusal = domain.check_access(record, session.approver, service.groups)
    if refusal is None and not record.is_pending:
        refusal = Refusal(code="not_pending", status=409, message=f"already {record.status}")
    if refusal is None and session.approver.approver in record.approvers:
        refusal = Refusal(code="already_approved", status=409, message="you already approved; waiting for another approver")
    return {
        **record.model_dump(mode="json", exclude={"version", "estimated_cost_usd", "proposer", "step", "escalated_at"}),
        "escalated": record.escalated_at is not None,
        "can_decide": refusal is None,
        "cannot_decide_because": refusal.message if refusal else None,
        "killswitch": service.killswitch(record.tenant_id, record.tool),
    }


def create_api(holder: ServiceHolder) -> FastAPI:
    """The FastAPI app: JSON API under `/api/v1`, the approver page at `/`."""
    api = FastAPI(title="Tidegate approval service", version="1", description=DESCRIPTION, docs_url="/docs", redoc_url=None)
    bearer = HTTPBearer(auto_error=False, description="An approver API token (`tga_…`) or a one-time link token (`tgl.…`).")

    def get_service() -> ApprovalService:
        if holder.service is None:
            raise HTTPException(503, detail={"code": "starting", "message": "the approval service is starting"})
        return holder.service

    Svc = Annotated[ApprovalService, Depends(get_service)]

    async def get_session(service: Svc, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Session:
        try:
            return await service.authenticate(creds.credentials if creds else None)
        except AuthError as exc:
            raise HTTPException(
                401, detail={"code": "unauthenticated", "message": str(exc)}, headers={"WWW-Authenticate": "Bearer"}
            ) from exc

    Auth = Annotated[Session, Depends(get_session)]

    def require_admin(session: Session) -> None:
        if ADMIN_GROUP not in session.approver.groups or session.link is not None:
            raise HTTPException(403, detail={"code": "not_admin", "message": f"managing webhooks needs a token in group {ADMIN_GROUP!r}"})

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        html = PAGE.read_text()
        return HTMLResponse(html, headers=_page_headers(html))

    @api.get("/healthz", tags=["ops"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok" if holder.service is not None else "starting"}

    @api.get("/api/v1/me", response_model=MeView, tags=["approvers"], summary="Who am I")
    async def me(session: Auth) -> MeView:
        """The approver, tenant and groups the credential authenticates."""
        who = session.approver
        return MeView(
            approver=who.approver,
            tenant_id=who.tenant_id,
            groups=sorted(who.groups),
            via=who.via,
            approval_id=session.link.approval_id if session.link else None,
        )

    @api.get("/api/v1/approvals", response_model=list[ApprovalView], tags=["approvers"], summary="List requests")
    async def list_approvals(
        service: Svc,
        session: Auth,
        tenant: Annotated[str | None, Query(description="Tenant (defaults to the approver's own).")] = None,
        tool: Annotated[str | None, Query(description="Only this tool.")] = None,
        reason: Annotated[str | None, Query(description="Only requests with this reason code.", examples=["needs_human_approval"])] = None,
        status: Annotated[
            str | None, Query(description="`pending` (default), `granted`, `rejected`, `expired`, `resolved`, or `all`.")
        ] = "pending",
        limit: Annotated[int, Query(ge=1, le=500)] = 200,
    ) -> list[dict[str, Any]]:
        """Requests of the approver's tenant, newest first; each says whether the caller may decide it."""
        who = session.approver
        if tenant is not None and not who.may_see(tenant):
            raise HTTPException(403, detail={"code": "wrong_tenant", "message": f"{who.approver} may not see tenant {tenant!r}"})
        scope = tenant or (None if who.tenant_id == "*" else who.tenant_id)
        records = await service.repo.search(
            tenant_id=scope, status=None if status == "all" else status, tool=tool, reason=reason, limit=limit
        )
        if session.link is not None:
            records = [r for r in records if r.approval_id == session.link.approval_id]
        return [_view(service, r, session) for r in records]

    @api.get("/api/v1/approvals/{approval_id}", response_model=ApprovalDetail, tags=["approvers"], summary="Show one request")
    async def show(approval_id: str, service: Svc, session: Auth) -> dict[str, Any]:
        """A request with the task's other events known here and its cost so far."""
        record = await service.repo.get(approval_id)
        if record is None or not session.approver.may_see(record.tenant_id):
            raise HTTPException(404, detail={"code": "not_found", "message": f"no approval {approval_id}"})
        context = await service.context(record)
        return {**_view(service, record, session), "context": context["events"], "cost": context["cost"]}

    @api.post(
        "/api/v1/approvals/{approval_id}/approve",
        response_model=ApprovalView,
        tags=["approvers"],
        summary="Approve (optionally with edited args)",
        responses={401: {}, 403: {}, 404: {}, 409: {}, 422: {}},
    )
    async def approve(approval_id: str, body: ApproveRequest, service: Svc, session: Auth) -> dict[str, Any]:
        """Approve the exact call you saw. With several required approvals the grant is published when enough distinct approvers agreed."""
        result = await service.vote(
            approval_id,
            session,
            Vote(decision="approve", comment=body.comment, seen_digest=body.action_digest, edited_args=body.edited_args),
        )
        if isinstance(result, Refusal):
            raise _error(result)
        return _view(service, result, session)

    @api.post(
        "/api/v1/approvals/{approval_id}/reject",
        response_model=ApprovalView,
        tags=["approvers"],
        summary="Reject",
        responses={401: {}, 403: {}, 404: {}, 409: {}},
    )
    async def reject(approval_id: str, body: RejectRequest, service: Svc, session: Auth) -> dict[str, Any]:
        """Reject the call; one reject settles the request."""
        result = await service.vote(approval_id, session, Vote(decision="reject", comment=body.comment, seen_digest=body.action_digest))
        if isinstance(result, Refusal):
            raise _error(result)
        return _view(service, result, session)

    @api.post(
        "/api/v1/callbacks/{endpoint_id}",
        tags=["webhooks"],
        summary="Inbound decision from a chat tool (Standard Webhooks)",
        responses={401: {}, 403: {}, 404: {}, 409: {}, 422: {}},
    )
    async def callback(endpoint_id: str, request: Request, service: Svc) -> dict[str, Any]:
        """A decision posted back by an approver's chat tool.

        Body `{"type": "approval.decision", "data": {"approval_id", "approver", "decision": "approve"|"reject",
        "action_digest", "comment"?, "edited_args"?}}`, signed with the endpoint's secret per Standard Webhooks
        (`webhook-id`, `webhook-timestamp` within 5 minutes, `webhook-signature`). A `webhook-id` is accepted once.
        """
        result = await service.callback(endpoint_id, request.headers, await request.body())
        if isinstance(result, Refusal):
            raise _error(result)
        return {"approval_id": result.approval_id, "status": result.status, "approvers": result.approvers}

    @api.get("/api/v1/webhooks/endpoints", response_model=list[EndpointOut], tags=["webhooks"], summary="List endpoints (admin)")
    async def list_endpoints(service: Svc, session: Auth) -> list[EndpointOut]:
        """Outgoing webhook endpoints (secrets are not shown)."""
        require_admin(session)
        return [
            EndpointOut(
                endpoint_id=e.endpoint_id, url=e.url, tenant_id=e.tenant_id, approvers=list(e.approvers), enabled=e.enabled, source=e.source
            )
            for e in await service.repo.endpoints()
        ]

    @api.post("/api/v1/webhooks/endpoints", response_model=EndpointOut, tags=["webhooks"], summary="Create or replace an endpoint (admin)")
    async def put_endpoint(body: EndpointIn, service: Svc, session: Auth) -> EndpointOut:
        """Register where webhooks go; the answer shows the secret once."""
        require_admin(session)
        secret = body.secret or webhooks.new_secret()
        try:
            webhooks.sign(secret, "probe", 0, b"")
        except ValueError as exc:
            raise HTTPException(422, detail={"code": "bad_secret", "message": "secret must be whsec_<base64>"}) from exc
        endpoint = Endpoint(body.endpoint_id, body.url, secret, body.tenant_id, tuple(body.approvers), True, "api")
        await service.repo.upsert_endpoint(endpoint)
        return EndpointOut(
            endpoint_id=endpoint.endpoint_id,
            url=endpoint.url,
            tenant_id=endpoint.tenant_id,
            approvers=list(endpoint.approvers),
            enabled=True,
            source="api",
            secret=secret,
        )

    @api.get("/api/v1/webhooks/deliveries", tags=["webhooks"], summary="The delivery log (admin)")
    async def deliveries(service: Svc, session: Auth, approval_id: str | None = None) -> list[dict[str, Any]]:
        """Outgoing messages with their status, attempts and last error."""
        require_admin(session)
        return [
            {
                "delivery_id": d.delivery_id,
                "endpoint_id": d.endpoint_id,
                "approval_id": d.approval_id,
                "event_type": d.event_type,
                "status": d.status,
                "attempts": d.attempts,
                "last_status_code": d.last_status_code,
                "last_error": d.last_error,
            }
            for d in await service.repo.deliveries(approval_id)
        ]

    return api
