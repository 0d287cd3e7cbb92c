"""The approval service's webhook side: endpoints an approver registers, the messages sent to them, and their bodies.

Part of `ApprovalService` (`services.approval.service` composes it), over the same repository and settings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from servicekit import SigningKey
from services.approval import auth, webhooks
from services.approval.domain import ApprovalRecord, Approver, Refusal
from services.approval.repository import ApprovalRepository, Endpoint
from services.approval.settings import ApprovalSettings

__all__ = ["WebhookSide"]


class WebhookSide:
    """Registering endpoints, delivering due messages, writing a message's body; the service sets the attributes."""

    repo: ApprovalRepository
    key: SigningKey
    settings: ApprovalSettings
    sender: webhooks.WebhookSender | None
    clock: Callable[[], datetime]
    base_url: Callable[[], str]

    async def register_endpoint(
        self, who: Approver, *, endpoint_id: str, url: str, tenant_id: str | None, approvers: Sequence[str], secret: str | None
    ) -> Endpoint | Refusal:
        """Create or replace an endpoint of the caller's tenant (an operator: of any tenant, or `*`).

        In order: the tenant is the caller's, the secret is well formed, the URL may be reached, and every
        approver is registered in the tenant. Endpoint ids are the tenant's own: the same id in another
        tenant is another endpoint, neither replaced nor revealed.
        """
        tenant = tenant_id or who.tenant_id
        if not who.operator and tenant != who.tenant_id:
            return Refusal(code="wrong_tenant", status=403, message=f"{who.approver} manages endpoints of tenant {who.tenant_id!r} only")
        secret = secret or webhooks.new_secret()
        try:
            webhooks.check_secret(secret)
        except ValueError as exc:
            return Refusal(code="bad_secret", status=422, message=str(exc))
        refusal = await webhooks.url_refusal(url, self.settings.webhook_allowed_hosts)
        if refusal is not None:
            return Refusal(code="url_refused", status=422, message=refusal)
        strangers = [a for a in dict.fromkeys(approvers) if not await self.repo.is_registered(a, tenant)]
        if strangers:
            return Refusal(
                code="unknown_approvers", status=422, message=f"not registered approvers of tenant {tenant!r}: {', '.join(strangers)}"
            )
        if not who.operator:
            # An endpoint's secret posts decisions in the names of its approvers: an admin names only themselves, and keeps only
            # those who enrolled the endpoint as it is (same URL and secret); anyone else enrols with their own token.
            existing = await self.repo.endpoint(tenant, endpoint_id)
            enrolled = existing.approvers if existing is not None and (existing.url, existing.secret) == (url, secret) else ()
            unconsented = [a for a in dict.fromkeys(approvers) if a != who.approver and a not in enrolled]
            if unconsented:
                return Refusal(
                    code="approver_not_enrolled",
                    status=403,
                    message=f"an endpoint decides in an approver's name only once they enrolled it with their own token "
                    f"(POST /api/v1/webhooks/endpoints/{endpoint_id}/enrol): not enrolled: {', '.join(unconsented)}",
                )
        endpoint = Endpoint(endpoint_id, url, secret, tenant, tuple(dict.fromkeys(approvers)), True, "api")
        await self.repo.upsert_endpoint(endpoint)
        return endpoint

    async def enrol(self, who: Approver, endpoint_id: str, *, url: str, enrolled: bool) -> Endpoint | Refusal:
        """Let an endpoint of the caller's own tenant decide in the caller's name (or stop it: `enrolled=False`).

        `url` is the endpoint's URL as the caller saw it: an endpoint whose URL changed since is refused
        (`409 endpoint_changed`), so nobody enrols an endpoint other than the one they read. A later change of the
        endpoint's URL or secret by an admin drops every enrolment but the admin's own.
        """
        if not await self.repo.is_registered(who.approver, who.tenant_id):
            return Refusal(
                code="unknown_approvers", status=422, message=f"{who.approver} is not a registered approver of {who.tenant_id!r}"
            )
        found = await self.repo.endpoint(who.tenant_id, endpoint_id)
        if found is None:
            return Refusal(code="not_found", status=404, message=f"no endpoint {endpoint_id}")
        changed = await self.repo.set_endpoint_approver(who.tenant_id, endpoint_id, who.approver, url=url, enrolled=enrolled)
        if changed is None:
            return Refusal(code="endpoint_changed", status=409, message=f"endpoint {endpoint_id} is not at {url} (read it again)")
        return changed

    async def callback_endpoint(
        self, tenant_id: str | None, endpoint_id: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[Endpoint, str] | Refusal:
        """The enabled endpoint a callback is for, and its `webhook-id`: the one whose secret signed it.

        With a tenant (`/callbacks/{tenant}/{endpoint}`), that tenant's endpoint; without one (the older
        URL) each tenant's endpoint of that id is tried, so only a signature by an endpoint's own secret
        picks it: whatever id another tenant registers, a callback signed by this one still finds it.
        A missing or disabled endpoint is answered as a wrong signature is (checked against a random
        secret), so a caller without the secret cannot learn which tenants have which endpoint ids.
        """
        if tenant_id is None:
            candidates = await self.repo.endpoints_named(endpoint_id)
        else:
            found = await self.repo.endpoint(tenant_id, endpoint_id)
            candidates = [] if found is None else [found]
        keys: list[tuple[Endpoint | None, str]] = [(e, e.secret) for e in candidates if e.enabled] or [(None, webhooks.new_secret())]
        refusal = webhooks.WebhookVerificationError("bad_signature", "webhook-signature does not match")
        for endpoint, secret in keys:  # every secret refuses the same headers alike: the answer names no candidate
            try:
                msg_id, _ = webhooks.verify(
                    secret, headers, body, now=self.clock().timestamp(), tolerance_s=self.settings.callback_tolerance_s
                )
            except webhooks.WebhookVerificationError as exc:
                refusal = exc
                continue
            if endpoint is not None:
                return endpoint, msg_id
        return Refusal(code=refusal.code, status=401, message=str(refusal))

    async def deliver_webhooks(self) -> int:
        """Send due webhook messages once each; failures are retried later with exponential backoff."""
        if self.sender is None:
            return 0
        now = self.clock()
        sent = 0
        lease = timedelta(seconds=self.settings.webhook_timeout_s * 2 + 5)
        for delivery, endpoint in await self.repo.claim_due_deliveries(now, lease):
            body = delivery.body.encode()
            headers = webhooks.signed_headers(endpoint.secret, delivery.delivery_id, int(self.clock().timestamp()), body)
            result = await self.sender.send(endpoint.url, headers, body)
            attempt = delivery.attempts + 1
            if result.ok:
                outcome, next_at = "delivered", None
                sent += 1
            elif attempt >= self.settings.webhook_max_attempts:
                outcome, next_at = "failed", None
            else:
                delay = webhooks.backoff(
                    attempt, initial_s=self.settings.webhook_backoff_initial_s, max_s=self.settings.webhook_backoff_max_s
                )
                outcome, next_at = "pending", self.clock() + delay
            await self.repo.record_attempt(
                delivery.delivery_id,
                attempt,
                status_code=result.status_code,
                error=result.error,
                duration_ms=result.duration_ms,
                outcome=outcome,
                next_at=next_at,
            )
        return sent

    def _webhook_body(self, record: ApprovalRecord, event_type: str, endpoint: Endpoint) -> str:
        base = self.base_url().rstrip("/")
        payload: dict[str, Any] = {
            "approval_id": record.approval_id,
            "kind": record.kind,
            "status": record.status,
            "tenant_id": record.tenant_id,
            "task_id": record.task_id,
            "action_id": record.action_id,
            "tool": record.tool,
            "args": record.args,
            "action_digest": record.action_digest,
            "reasons": [r.model_dump(mode="json") for r in record.reasons],
            "risk": record.risk,
            "requested_by": record.requested_by,
            "expires_at": record.expires_at.isoformat(),
            "decided_by": record.decided_by,
            "approvers": record.approvers,
            # A decision's own words: the args that run instead of `args` (an approval with edits), the comment and the reason.
            "edited_args": record.edited_args if record.status == "granted" else None,
            "comment": record.comment,
            "review_reason": record.review_reason,
            "resolution": record.resolution,
            "page_url": f"{base}/?approval={quote(record.approval_id)}",
            "callback_url": f"{base}/api/v1/callbacks/{quote(endpoint.tenant_id, safe='')}/{quote(endpoint.endpoint_id)}",
        }
        if record.is_pending and endpoint.approvers:
            link_expiry = min(record.expires_at, self.clock() + timedelta(seconds=self.settings.link_ttl_s))
            payload["links"] = {
                approver: f"{base}/?approval={quote(record.approval_id)}#link="
                + auth.issue_link(
                    self.key, approval_id=record.approval_id, approver=approver, tenant_id=record.tenant_id, expires_at=link_expiry
                )
                for approver in endpoint.approvers
            }
        return json.dumps({"type": event_type.removeprefix("tidegate."), "timestamp": self.clock().isoformat(), "data": payload})
