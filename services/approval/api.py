"""The HTTP API of the approval service (FastAPI): the one place that builds it, from a room a job.

`create_api` installs the error shapes, the client-address rate limit and the credential, then adds the routes of
each job under `/api/v1`: `_approver_api` (who am I, review reasons, report, undo, queue age, token rotation),
`_decisions_api` (the queue: list, show, approve, reject), `_webhooks_api` (callbacks, endpoints, enrolment,
deliveries), `tenants_api` and `_admin_api`; `_page` serves the approver page at `/`.
"""

# No `from __future__ import annotations`: FastAPI resolves the dependency aliases defined inside create_api at runtime.

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from servicekit.intake import DATABASE_ERRORS
from services.approval._admin_api import admin_routes
from services.approval._approver_api import approver_routes
from services.approval._compressed import CompressedReads
from services.approval._decisions_api import DECISION_BODIES, decision_routes
from services.approval._errors import install_error_handlers
from services.approval._http import refuse_control_characters
from services.approval._limits import MAX_BODY_BYTES, BodyLimit
from services.approval._page import page_route
from services.approval._webhooks_api import WEBHOOK_BODIES, webhook_routes
from services.approval.ratelimit import ApiRateLimits, Throttled
from services.approval.service import ApprovalService, AuthError, Session
from services.approval.tenants_api import TENANT_BODIES, tenant_routes

__all__ = ["DATABASE_UNAVAILABLE", "create_api"]

log = logging.getLogger(__name__)


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
    api.add_middleware(CompressedReads)  # the page and the reads gzipped when asked (a phone's slow network), never a POST's answer
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

    page_route(api)

    @api.get("/healthz", tags=["ops"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}  # served only once the service has started (its pool open, its consumers running)

    approver_routes(v1, get_service, get_session)
    decision_routes(v1, get_service, get_session)
    webhook_routes(v1, get_service, get_session)
    tenant_routes(v1, get_service, get_session)
    admin_routes(v1, get_service, get_session)
    api.include_router(v1)
    schema_of_routes = api.openapi

    def openapi() -> dict[str, Any]:
        """The generated document, plus the bodies the handlers parse themselves (after the checks)."""
        if api.openapi_schema is None:
            doc = schema_of_routes()
            components = doc.setdefault("components", {}).setdefault("schemas", {})
            for model in (*DECISION_BODIES, *WEBHOOK_BODIES, *TENANT_BODIES):
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(schema.pop("$defs", {}))
                components[model.__name__] = schema
            api.openapi_schema = doc
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    return api
