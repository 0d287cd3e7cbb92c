"""The tenant routes of the approval service's API: tenant admins keep their directory, an operator-wide admin onboards.

Check order, as for approvals: credential (401), role (403: an `admin` token, an operator token to
onboard), the tenant (another tenant's, or one never onboarded: the same 404), then the body (422),
then the state (409). See `services/approval/tenants.py` for what a change may say and who signs it.
"""

# No `from __future__ import annotations`: FastAPI resolves the dependency aliases at runtime.

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from schemas import TenantDirectory
from servicekit.domains import domain_problems
from services.approval._http import error, json_body, parse
from services.approval.service import ApprovalService, Session
from services.approval.tenants import TenantDirectories, normalised

__all__ = ["TENANT_BODIES", "DirectoryChange", "TenantIn", "tenant_routes"]


class TenantIn(BaseModel):
    """A tenant to onboard (operator-wide admins only): it runs on the policy pack's `default` settings until an operator says more."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$", examples=["initech"])
    directory: TenantDirectory = Field(default_factory=TenantDirectory, description="Its first directory entries.")


class DirectoryChange(BaseModel):
    """Entries to add to and take out of the tenant's directory (the admins' own entries; the operator's stay)."""

    model_config = ConfigDict(extra="forbid")

    add: TenantDirectory = Field(default_factory=TenantDirectory)
    remove: TenantDirectory = Field(default_factory=TenantDirectory)


TENANT_BODIES = (TenantIn, DirectoryChange, TenantDirectory)


def checked(directory: TenantDirectory) -> TenantDirectory:
    """`directory`, or 422 `invalid_domain` naming each domain entry that is not one or is a public suffix (`com`, `github.io`)."""
    if problems := domain_problems(directory.model_dump()):
        raise HTTPException(422, detail={"code": "invalid_domain", "message": "; ".join(problems)[:1000]})
    return directory


def tenant_routes(router: APIRouter, get_service: Callable[[], ApprovalService], get_session: Callable[..., Awaitable[Session]]) -> None:
    """Add the `/tenants` routes to `router`, authenticated as the other routes are."""
    Svc = Annotated[ApprovalService, Depends(get_service)]
    Auth = Annotated[Session, Depends(get_session)]

    def directories(service: ApprovalService) -> TenantDirectories:
        if service.control is None:
            raise HTTPException(503, detail={"code": "starting", "message": "the approval service has not read its control topics yet"})
        return TenantDirectories(service.control, service.key, service.publisher.publish, service.repo, service.catalog)

    def admitted(tenants: TenantDirectories, session: Session, tenant_id: str | None, *, onboarding: bool = False) -> None:
        refusal = tenants.access(session.approver, tenant_id, link=session.link is not None, onboarding=onboarding)
        if refusal is not None:
            raise error(refusal)

    def published(event: Any) -> dict[str, Any]:
        return {"tenant_id": event.data.tenant_id, "directory": event.data.directory.model_dump(), "event_id": event.id}

    @router.get("/tenants", tags=["tenants"], summary="Tenants you administer (admin)", responses={401: {}, 403: {}})
    async def list_tenants(service: Svc, session: Auth) -> list[str]:
        """Your tenant, if onboarded (an operator token: every onboarded tenant)."""
        tenants = directories(service)
        refusal = tenants.role(session.approver, link=session.link is not None)
        if refusal is not None:
            raise error(refusal)
        known = sorted(set(tenants.control.tenants) | set(tenants.control.directories))
        return known if session.approver.operator else [t for t in known if t == session.approver.tenant_id]

    @router.post(
        "/tenants",
        tags=["tenants"],
        summary="Onboard a tenant (operator-wide admin)",
        responses={401: {}, 403: {}, 409: {}, 422: {}},
        openapi_extra=json_body(TenantIn),
    )
    async def onboard(request: Request, service: Svc, session: Auth) -> dict[str, Any]:
        """Onboard a tenant at the pack's default posture (draft mode); `tidegate tenant set` widens it (operator-signed)."""
        tenants = directories(service)
        admitted(tenants, session, None, onboarding=True)
        body = parse(TenantIn, await request.body())
        if tenants.onboarded(body.tenant_id):
            raise HTTPException(409, detail={"code": "already_onboarded", "message": f"tenant {body.tenant_id} is onboarded"})
        event = await tenants.publish_directory(body.tenant_id, checked(normalised(body.directory)), session.approver, onboards=True)
        return published(event)

    @router.get("/tenants/{tenant_id}", tags=["tenants"], summary="A tenant's settings and directory (admin)", responses={404: {}})
    async def show_tenant(tenant_id: str, service: Svc, session: Auth) -> dict[str, Any]:
        """The operator's settings (read-only here), the admins' directory, what the policy uses, and learned proposals."""
        tenants = directories(service)
        admitted(tenants, session, tenant_id)
        return await tenants.view(tenant_id)

    @router.put(
        "/tenants/{tenant_id}/directory",
        tags=["tenants"],
        summary="Replace the admins' directory (admin)",
        responses={401: {}, 403: {}, 404: {}, 422: {}},
        openapi_extra=json_body(TenantDirectory),
    )
    async def replace_directory(tenant_id: str, request: Request, service: Svc, session: Auth) -> dict[str, Any]:
        """Every entry the tenant's admins keep, at once (the operator's `control.tenant` entries are not touched)."""
        tenants = directories(service)
        admitted(tenants, session, tenant_id)
        body = parse(TenantDirectory, await request.body())
        return published(await tenants.publish_directory(tenant_id, checked(normalised(body)), session.approver))

    @router.patch(
        "/tenants/{tenant_id}/directory",
        tags=["tenants"],
        summary="Add and remove directory entries (admin)",
        responses={401: {}, 403: {}, 404: {}, 422: {}},
        openapi_extra=json_body(DirectoryChange),
    )
    async def change_directory(tenant_id: str, request: Request, service: Svc, session: Auth) -> dict[str, Any]:
        """Add entries (a learned proposal, say) and take entries out."""
        tenants = directories(service)
        admitted(tenants, session, tenant_id)
        body = parse(DirectoryChange, await request.body())
        checked(body.add)  # what is added only: a bad entry already there can always be taken out
        return published(await tenants.publish_directory(tenant_id, tenants.changed(tenant_id, body.add, body.remove), session.approver))
