"""The HTTP API of the approval service (FastAPI) and the approver page it serves at `/`."""

# No `from __future__ import annotations`: FastAPI resolves the dependency aliases defined inside create_api at runtime.

import base64
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from servicekit.intake import DATABASE_ERRORS
from services.approval import domain, webhooks
from services.approval._admin_api import admin_routes, delivery_view, require_admin
from services.approval._errors import install_error_handlers
from services.approval._http import error as _error
from services.approval._http import json_body as _json_body
from services.approval._http import parse as _parse
from services.approval._http import refuse_control_characters
from services.approval._limits import MAX_BODY_BYTES, NEXT_CURSOR, BodyLimit, listing, next_cursor, read_cursor, refuse_unsigned
from services.approval._outcome import earlier_grants, outcome_of
from services.approval._summary import decision_summary
from services.approval._view_args import key_args
from services.approval._votes_counted import NotCounted, votes_counted
from services.approval.domain import ApprovalRecord, Refusal, Vote
from services.approval.quality import QueueAge
from services.approval.ratelimit import ApiRateLimits, Throttled
from services.approval.repository import Endpoint
from services.approval.service import LINK_USED, ApprovalService, AuthError, Session
from services.approval.tenants_api import TENANT_BODIES, tenant_routes

__all__ = ["DATABASE_UNAVAILABLE", "create_api"]

log = logging.getLogger(__name__)

PAGE = Path(__file__).parent / "web" / "index.html"

# What a route meets while PostgreSQL is away: a refused or broken connection (asyncpg's connection errors, `OSError`)
# or a pool that found no connection in time (`TimeoutError`, an `OSError`). Answered 503, never a bare 500.
DATABASE_UNAVAILABLE = cast(tuple[type[Exception], ...], (OSError, *DATABASE_ERRORS))  # each of them is an Exception
RETRY_AFTER_S = 5

DESCRIPTION = """
Humans in the loop for Tidegate. The policy service escalates an action; this service keeps the
request, notifies approvers (signed webhooks) and takes their decision, which it publishes signed
on the `approvals` topic.

**Authentication**: `Authorization: Bearer <token>` with an approver API token
(`tidegate approvals token create`; tokens expire, `POST /api/v1/tokens/rotate` replaces yours), or
with a one-time link token (`tgl.…`) from a webhook. A token acts in its own tenant only; an
operator token (made by the operator CLI) in every tenant.
**Check order**: client-address rate limit (429), ids and filters without control characters (422
`invalid_param`), credential (401), credential rate limit (429),
role (403), the request itself: another tenant's answers exactly as a missing one (404), group and
four eyes (403/409), then the body (422), then the state (409). See docs/security/approval.md.
**Errors** carry `{"detail": {"code", "message"}}`: 401 unauthenticated (unknown, revoked or
expired), 403 not allowed (role, group, four eyes), 404 unknown (or another tenant's), 409 conflict
(already decided, expired, the call changed, replay, requester unknown), 405 `method_not_allowed`, 413 `too_large`
(a body over 1 MiB), 422 invalid input (`invalid_param` for a query or path parameter), messages one line of at most 1,000 characters,
429 too many requests (with `Retry-After`), 503 `database_unavailable` (PostgreSQL is not answering; with `Retry-After`).
"""


class ReasonView(BaseModel):
    """One reason behind the escalation."""

    code: str
    policy_id: str
    message: str


class RecordSeen(BaseModel):
    """The system-of-record entry the call acts on, and what a trusted read of it said earlier in the task."""

    arg: str | None = Field(description="The arg that names it (the catalog's `facts.record`).")
    id: str
    read: dict[str, Any] | None = Field(description="`amount_usd`, `currency`, `source` of the read; null: the task never read it.")


class UntrustedArg(BaseModel):
    """An arg whose value came from content outside the tenant (a ticket, an email), as the policy found it."""

    arg: str
    why: str


class DecisionSummary(BaseModel):
    """What a person needs to decide: the request at a glance, the money, the record, what approving does, what deciding costs."""

    subject: str = Field(
        description="One line that tells requests apart in a queue: amount, payee, record, the other key args (cut with …, one line).",
        examples=["899.00 USD · to cus_1002 · charge_id ch_O5002"],
    )
    amount_usd: float | None = Field(description="The amount the call moves (the policy's fact, else the catalog's amount arg).")
    payee: str | None = Field(description="Who receives it (the catalog's payee arg).")
    payee_is_new: bool | None = Field(description="The tenant never paid this payee before (the policy's fact).")
    record: RecordSeen | None
    tool_does: str | None = Field(description="What the tool does, from the catalog (trusted text, not the agent's).")
    on_approve: str = Field(description="What happens when the request is approved.")
    untrusted_args: list[UntrustedArg] = Field(description="Args whose values came from untrusted content: check them.")
    proposer: str | None = Field(description="Who proposed the call (the planner's strategy or the outside agent).")
    rationale: str = Field(
        default="", description="Why the agent proposed it, as the agent wrote it: untrusted text (it may carry an injected instruction)."
    )
    human_review_usd: float = Field(
        description="The price of one human decision, as `tidegate costs` and the planner price it (`servicekit.costs.ReviewPrice`: "
        "`TIDEGATE_HUMAN_REVIEW_MINUTES` × `TIDEGATE_HUMAN_HOURLY_RATE_USD`)."
    )


class ApprovalView(BaseModel):
    """A request as an approver sees it."""

    model_config = ConfigDict(frozen=True)

    approval_id: str = Field(description="Id of the request.", examples=["ap-1f2e3d4c5b6a7980"])
    kind: Literal["approval", "follow_up"] = Field(description="`approval`: an escalated call; `follow_up`: an unknown outcome to resolve.")
    status: str = Field(
        description="`pending`, `granted`, `rejected`, `expired` (also a pending one past its expiry, before the sweep closes it) "
        "or `resolved` (follow-ups)."
    )
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
    estimated_cost_usd: float = Field(default=0.0, description="What the call itself is expected to cost (the tool's price), beside it.")
    approvers: list[str] = Field(description="Who approved so far (or decided): of a pending request, the approvals the service counts.")
    not_counted: list[NotCounted] = Field(
        default_factory=list,
        description="A pending request's approvals the service does not count (no valid signature of the service: given before "
        "approvals were signed, or written into the database), each with why and what to do (the approver votes again).",
    )
    edited_args: dict[str, Any] | None
    comment: str | None
    review_reason: str | None = Field(default=None, description="Why the approver rejected or edited (the tenant's taxonomy).")
    decided_by: str | None
    decided_at: str | None
    resolution: str | None = Field(description="Follow-ups: `confirmed_done` or `confirmed_not_done`.")
    result_error: dict[str, Any] | None = Field(description="Follow-ups: the error the executor reported.")
    created_at: str
    expires_at: str
    escalated: bool
    can_decide: bool = Field(
        description="Whether the caller may decide it now (approve or reject); false under a kill switch on the tool, "
        "where approving would end in a final deny."
    )
    can_reject: bool = Field(
        default=False,
        description="Whether the caller may reject it now (also when approving is held: a kill switch, the caller's approval counted, "
        "an operator and a request whose requester is unknown).",
    )
    cannot_decide_because: str | None = Field(description="Why not, in words.")
    cannot_decide_code: str | None = Field(
        default=None, description="Why not, as the code a vote would be refused with (`link_used`, `not_pending`, `four_eyes`…)."
    )
    key_args: list[str] = Field(
        default_factory=list,
        description="Args the tool's catalog facts name (amount, payee, recipients…), in that order: what to read first.",
    )
    killswitch: dict[str, Any] | None = Field(description="An active kill switch on this tool and tenant, if any.")
    outcome: dict[str, Any] | None = Field(
        default=None,
        description="A granted request: what became of the call once its result arrived (`status`: `executed`, `failed`, `unknown`, "
        "`expired_unused`: the authorization expired before the executor ran it and nothing was done, `refused`; with `reason`, "
        "`message`, `attempts`, `at`); null while no result has arrived.",
    )
    summary: DecisionSummary = Field(description="What a person needs to decide it, at a glance (`subject`) and in full.")


class ApprovalDetail(ApprovalView):
    """A request with the task's context."""

    context: list[dict[str, Any]] = Field(
        description="The task's decisions and results this service has seen, oldest first; a decision with the args of its call."
    )
    cost: dict[str, Any] = Field(description="Cost so far: `spent_usd` (results), `reserved_usd` (allowed, no result yet), event counts.")
    earlier: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Earlier grants of this same call in the task that could not be carried out (their authorization expired before "
        "the executor ran it, so the agent proposed the call again): `approval_id`, `action_id`, `approvers`, `decided_at`, `why`.",
    )


class ApproveRequest(BaseModel):
    """Approve the call you saw, optionally with edited args."""

    model_config = ConfigDict(extra="forbid")

    action_digest: str = Field(description="The `action_digest` you saw; refused with 409 if the call changed since.")
    comment: str | None = Field(default=None, max_length=4000)
    review_reason: str | None = Field(
        default=None,
        description="Why you edited the args: a code of the tenant's taxonomy (`GET /api/v1/review-reasons`), e.g. `wrong_amount`.",
    )
    edited_args: dict[str, Any] | None = Field(
        default=None, description="Replacement args; validated against the tool's schema, re-evaluated by policy before anything runs."
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


class MeView(BaseModel):
    """Who the credential authenticates."""

    approver: str
    tenant_id: str
    groups: list[str]
    via: str
    operator: bool = Field(default=False, description="An operator token acts in every tenant (made by the operator CLI only).")
    approval_id: str | None = Field(default=None, description="For a one-time link: the one approval it is for.")


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


class RotatedToken(BaseModel):
    """A token that replaces the caller's (shown once; the old one is revoked)."""

    token_id: str
    token: str
    expires_at: str


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


def _as_received(refusal: Refusal, received: str) -> HTTPException:
    """`refusal` as its HTTP error; an unknown id is named as the caller sent it, quoted, so stray whitespace shows."""
    if refusal.code == "not_found":
        refusal = refusal.model_copy(update={"message": f"no approval {json.dumps(received)}"})
    return _error(refusal)


def _overdue(service: ApprovalService, record: ApprovalRecord) -> bool:
    """Pending, but past its expiry: a vote is refused (`409 expired`) and the next sweep closes it."""
    return record.is_pending and service.clock() >= record.expires_at


async def _view(service: ApprovalService, record: ApprovalRecord, session: Session) -> dict[str, Any]:
    """A request as the caller sees it, with whether they may decide it now (approve or reject) and reject it now.

    The access checks come first (as for a vote), then the state: settled (by whom, when), past its expiry,
    the caller's one-time link spent (read from the store: whichever replica spent it). Then what holds an approve
    only: the caller's approval already counts, or a kill switch is set on the tool, under which a grant ends in
    the policy's final deny. Its approvals are those the service counts, as a vote does (`_votes_counted`), the others said apart.
    """
    who = session.approver
    record, not_counted = votes_counted(service.seals.ballots if service.seals else None, record)
    overdue = _overdue(service, record)
    state: Refusal | None = None
    if not record.is_pending:
        state = Refusal(code="not_pending", status=409, message=domain.already_settled(record))
    elif overdue:
        state = Refusal(
            code="expired",
            status=409,
            message=f"expired at {record.expires_at.isoformat(timespec='seconds')}; nobody may decide it any more",
        )
    elif await service.link_spent(session):
        state = Refusal(code="link_used", status=401, message=LINK_USED)
    rejecting = service.access(record, who, rejecting=True) or state
    refusal = service.access(record, who) or state
    if refusal is None and domain.has_approved(record, who.approver):
        refusal = Refusal(code="already_approved", status=409, message="you already approved; waiting for another approver")
    refusal = refusal or domain.second_vote_without_token(record, who, Vote(decision="approve", edited_args=record.edited_args))
    refusal = refusal or service.approval_held(record)
    return {
        **record.model_dump(mode="json", exclude={"version", "proposer", "step", "escalated_at"}),
        "status": "expired" if overdue else record.status,
        "escalated": record.escalated_at is not None,
        "can_decide": refusal is None,
        "can_reject": rejecting is None,
        "cannot_decide_because": refusal.message if refusal else None,
        "cannot_decide_code": refusal.code if refusal else None,
        "key_args": key_args(service.catalog, record.tool),
        "killswitch": service.killswitch(record.tenant_id, record.tool),
        "outcome": await outcome_of(service.repo, record),
        "not_counted": not_counted,
        "summary": decision_summary(record, service.catalog, service.review_price),
    }


def _endpoint_out(e: Endpoint, secret: str | None = None) -> EndpointOut:
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
    )


def create_api(
    service: ApprovalService,
    rate_limits: ApiRateLimits,
    *,
    on_database_error: Callable[[BaseException], Awaitable[None]] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The FastAPI app: JSON API under `/api/v1` (rate-limited), the approver page at `/`.

    A request that meets the database down is answered `503 database_unavailable` and logged in one line;
    `on_database_error` is then told (the process shows it on `/health` and discards its broken connections).
    """
    api = FastAPI(title="Tidegate approval service", version="1", description=DESCRIPTION, docs_url="/docs", redoc_url=None)
    bearer = HTTPBearer(auto_error=False, description="An approver API token (`tga_…`) or a one-time link token (`tgl.…`).")
    api.add_middleware(BodyLimit, max_bytes=max_body_bytes)  # no body over the bound is read, signed in or not: 413 too_large
    install_error_handlers(api)  # one error shape: `{"detail": {"code", "message"}}`, one line

    @api.exception_handler(Throttled)
    async def throttled(_: Request, exc: Throttled) -> JSONResponse:
        return JSONResponse(
            {"detail": {"code": "rate_limited", "message": str(exc)}}, status_code=429, headers={"Retry-After": str(exc.retry_after_s)}
        )

    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("approval: %s %s answered 503, database unavailable: %r", request.method, request.url.path, exc)
        if on_database_error is not None:
            await on_database_error(exc)
        message = f"database unavailable, retrying: try again in {RETRY_AFTER_S}s"
        return JSONResponse(
            {"detail": {"code": "database_unavailable", "message": message}}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)}
        )

    for unavailable in DATABASE_UNAVAILABLE:
        api.add_exception_handler(unavailable, database_unavailable)

    async def limit_address(request: Request) -> None:
        """First check of every API call: the client address's rate (before the credential, so guessing is slowed too)."""
        await rate_limits.check_ip(request.client.host if request.client else "unknown")

    v1 = APIRouter(
        prefix="/api/v1",
        dependencies=[Depends(limit_address), Depends(refuse_control_characters)],  # in this order: the rate, then ids and filters
        responses={429: {"description": "Too many requests"}},
    )

    def get_service() -> ApprovalService:
        return service

    Svc = Annotated[ApprovalService, Depends(get_service)]

    async def get_session(service: Svc, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Session:
        try:
            session = await service.authenticate(creds.credentials if creds else None)
        except AuthError as exc:
            raise HTTPException(
                401, detail={"code": "unauthenticated", "message": str(exc)}, headers={"WWW-Authenticate": "Bearer"}
            ) from exc
        assert creds is not None  # authenticate refuses a missing credential
        await rate_limits.check_credential(creds.credentials)
        return session

    Auth = Annotated[Session, Depends(get_session)]

    def require_token(session: Session) -> None:
        """Refuse a one-time link: it acts on its one request (see it, decide it once), and reads nothing else of its tenant."""
        if session.link is not None:
            raise HTTPException(
                403, detail={"code": "not_a_token", "message": "a one-time link shows and decides its own request only; use an API token"}
            )

    async def admitted(service: ApprovalService, received: str, session: Session, decision: Literal["approve", "reject"]) -> str:
        """The id the caller means (stray whitespace of a paste stripped), once they may vote on it."""
        approval_id = received.strip()
        refusal = await service.admission(approval_id, session, decision)
        if refusal is not None:
            raise _as_received(refusal, received)
        return approval_id

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        html = PAGE.read_text()
        return HTMLResponse(html, headers=_page_headers(html))

    @api.get("/healthz", tags=["ops"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}  # served only once the service has started (its pool open, its consumers running)

    @v1.get("/me", response_model=MeView, tags=["approvers"], summary="Who am I")
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

    @v1.get("/review-reasons", tags=["approvers"], summary="Reasons for a reject or an edit")
    async def review_reasons(service: Svc, session: Auth) -> dict[str, str]:
        """The taxonomy an approver picks from when rejecting or editing: code → meaning (the defaults and the tenant's own)."""
        return service.review_reasons(session.approver.tenant_id)

    @v1.get("/report", tags=["approvers"], summary="Why calls were rejected or edited; how approvals go", responses={401: {}, 403: {}})
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

    @v1.post(
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
            raise _error(proposed)
        return proposed.model_dump(mode="json")

    @v1.get("/queue", response_model=QueueAge, tags=["approvers"], summary="How old my queue is", responses={401: {}, 403: {}})
    async def queue(service: Svc, session: Auth) -> QueueAge:
        """Pending requests of your tenant (an operator: every tenant), the oldest one's age, and how many are past the SLO."""
        require_token(session)
        who = session.approver
        return await service.queue(None if who.operator else who.tenant_id)

    @v1.post(
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
            raise _error(rotated)
        if rotated is None:
            raise HTTPException(403, detail={"code": "not_a_token", "message": "only an API token can be rotated (not a one-time link)"})
        token, info = rotated
        assert info.expires_at is not None
        return RotatedToken(token_id=info.token_id, token=token, expires_at=info.expires_at.isoformat())

    @v1.get("/approvals", response_model=list[ApprovalView], tags=["approvers"], summary="List requests")
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
            records = [r for r in records if not _overdue(service, r)]
        return [await _view(service, r, session) for r in records]

    @v1.get("/approvals/{approval_id}", response_model=ApprovalDetail, tags=["approvers"], summary="Show one request")
    async def show(approval_id: str, service: Svc, session: Auth) -> dict[str, Any]:
        """A request with the task's other events known here and its cost so far (another tenant's: 404, as a missing one).

        Whitespace around the id (a paste from a chat message) is stripped; an unknown id is named as sent, quoted.
        """
        received, approval_id = approval_id, approval_id.strip()
        record = await service.repo.get(approval_id)
        other_link = session.link is not None and session.link.approval_id != approval_id  # a link shows its own approval only
        if record is None or other_link or not session.approver.may_see(record.tenant_id):
            raise _as_received(domain.not_found(approval_id), received)
        context = await service.context(record)
        earlier = await earlier_grants(service.repo, record, context["events"])
        return {**await _view(service, record, session), "context": context["events"], "cost": context["cost"], "earlier": earlier}

    @v1.post(
        "/approvals/{approval_id}/approve",
        response_model=ApprovalView,
        tags=["approvers"],
        summary="Approve (optionally with edited args)",
        responses={401: {}, 403: {}, 404: {}, 409: {}, 422: {}},
        openapi_extra=_json_body(ApproveRequest),
    )
    async def approve(approval_id: str, request: Request, service: Svc, session: Auth) -> dict[str, Any]:
        """Approve the exact call you saw. With several required approvals the grant is published when enough distinct approvers agreed."""
        received, approval_id = approval_id, await admitted(service, approval_id, session, "approve")
        body = _parse(ApproveRequest, await request.body())
        result = await service.vote(
            approval_id,
            session,
            Vote(
                decision="approve",
                comment=body.comment,
                review_reason=body.review_reason,
                seen_digest=body.action_digest,
                edited_args=body.edited_args,
            ),
        )
        if isinstance(result, Refusal):
            raise _as_received(result, received)
        return await _view(service, result, session)

    @v1.post(
        "/approvals/{approval_id}/reject",
        response_model=ApprovalView,
        tags=["approvers"],
        summary="Reject",
        responses={401: {}, 403: {}, 404: {}, 409: {}, 422: {}},
        openapi_extra=_json_body(RejectRequest, required=False),
    )
    async def reject(approval_id: str, request: Request, service: Svc, session: Auth) -> dict[str, Any]:
        """Reject the call; one reject settles the request."""
        received, approval_id = approval_id, await admitted(service, approval_id, session, "reject")
        body = _parse(RejectRequest, await request.body(), optional=True)
        vote = Vote(decision="reject", comment=body.comment, review_reason=body.review_reason, seen_digest=body.action_digest)
        result = await service.vote(approval_id, session, vote)
        if isinstance(result, Refusal):
            raise _as_received(result, received)
        return await _view(service, result, session)

    async def answer_callback(tenant_id: str | None, endpoint_id: str, request: Request, service: ApprovalService) -> dict[str, Any]:
        refuse_unsigned(request.headers)  # before the body is read: nobody unsigned makes the service read one
        result = await service.callback(tenant_id, endpoint_id, request.headers, await request.body())
        if isinstance(result, Refusal):
            raise _error(result)
        return {"approval_id": result.approval_id, "status": result.status, "approvers": result.approvers}

    @v1.post(
        "/callbacks/{tenant_id}/{endpoint_id}",
        tags=["webhooks"],
        summary="Inbound decision from a chat tool (Standard Webhooks)",
        responses={401: {}, 403: {}, 404: {}, 409: {}, 422: {}},
    )
    async def callback(tenant_id: str, endpoint_id: str, request: Request, service: Svc) -> dict[str, Any]:
        """A decision posted back by an approver's chat tool to the tenant's endpoint (each message's `callback_url`).

        Body `{"type": "approval.decision", "data": {"approval_id", "approver", "decision": "approve"|"reject",
        "action_digest", "comment"?, "edited_args"?}}`, signed with the endpoint's secret per Standard Webhooks
        (`webhook-id`, `webhook-timestamp` within 5 minutes, `webhook-signature`). A `webhook-id` is accepted once;
        the approver must be one of the endpoint's, and the request of the endpoint's tenant.
        """
        return await answer_callback(tenant_id, endpoint_id, request, service)

    @v1.post(
        "/callbacks/{endpoint_id}",
        tags=["webhooks"],
        summary="Inbound decision to an endpoint named without its tenant (the older callback URL)",
        responses={401: {}, 403: {}, 404: {}, 409: {}, 422: {}},
        deprecated=True,
    )
    async def callback_without_tenant(endpoint_id: str, request: Request, service: Svc) -> dict[str, Any]:
        """As `/callbacks/{tenant_id}/{endpoint_id}`; the endpoint is the one of that id whose secret signed the message."""
        return await answer_callback(None, endpoint_id, request, service)

    @v1.get("/webhooks/endpoints", response_model=list[EndpointOut], tags=["webhooks"], summary="List endpoints (admin)")
    async def list_endpoints(service: Svc, session: Auth) -> list[EndpointOut]:
        """Your tenant's outgoing webhook endpoints (an operator: every one); secrets are not shown."""
        require_admin(session)
        who = session.approver
        found = await service.repo.endpoints() if who.operator else await service.repo.endpoints_of(who.tenant_id)
        return [_endpoint_out(e) for e in found]

    @v1.get("/webhooks/endpoints/{endpoint_id}", response_model=EndpointOut, tags=["webhooks"], summary="Show one endpoint (admin)")
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
        return _endpoint_out(found)

    @v1.post(
        "/webhooks/endpoints",
        response_model=EndpointOut,
        tags=["webhooks"],
        summary="Create or replace an endpoint (admin)",
        responses={401: {}, 403: {}, 422: {}},
        openapi_extra=_json_body(EndpointIn),
    )
    async def put_endpoint(request: Request, service: Svc, session: Auth) -> EndpointOut:
        """Register where your tenant's webhooks go; the answer shows the secret once. Ids are your tenant's own."""
        require_admin(session)
        body = _parse(EndpointIn, await request.body())
        result = await service.register_endpoint(
            session.approver,
            endpoint_id=body.endpoint_id,
            url=body.url,
            tenant_id=body.tenant_id,
            approvers=body.approvers,
            secret=body.secret,
        )
        if isinstance(result, Refusal):
            raise _error(result)
        return _endpoint_out(result, secret=result.secret)

    @v1.post(
        "/webhooks/endpoints/{endpoint_id}/enrol",
        response_model=EndpointOut,
        tags=["webhooks"],
        summary="Let an endpoint decide in your name",
        responses={401: {}, 403: {}, 404: {}, 409: {}, 422: {}},
        openapi_extra=_json_body(Enrolment),
    )
    async def enrol(endpoint_id: str, request: Request, service: Svc, session: Auth) -> EndpointOut:
        """Enrol yourself on one of your tenant's endpoints: it then gets your one-time links, and its signed callbacks decide as you.

        Only you can: an admin names nobody but themselves on an endpoint. Send the endpoint's `url` and `secret_fingerprint`
        as your chat tool has them (409 `endpoint_changed` if the endpoint has another URL or secret). A later change of
        its URL or secret drops your enrolment.
        """
        require_token(session)
        body = _parse(Enrolment, await request.body())
        result = await service.enrol(session.approver, endpoint_id, url=body.url, secret_fingerprint=body.secret_fingerprint)
        if isinstance(result, Refusal):
            raise _error(result)
        return _endpoint_out(result)

    @v1.delete(
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
            raise _error(result)
        return _endpoint_out(result)

    @v1.get("/webhooks/deliveries", tags=["webhooks"], summary="The delivery log (admin)")
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

    tenant_routes(v1, get_service, get_session)
    admin_routes(v1, get_service, get_session)
    api.include_router(v1)
    schema_of_routes = api.openapi

    def openapi() -> dict[str, Any]:
        """The generated document, plus the bodies the handlers parse themselves (after the checks)."""
        if api.openapi_schema is None:
            doc = schema_of_routes()
            components = doc.setdefault("components", {}).setdefault("schemas", {})
            for model in (ApproveRequest, RejectRequest, EndpointIn, Enrolment, *TENANT_BODIES):
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(schema.pop("$defs", {}))
                components[model.__name__] = schema
            api.openapi_schema = doc
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    return api
