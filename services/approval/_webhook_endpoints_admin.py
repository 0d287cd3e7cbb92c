"""The approval service's webhook endpoints as people manage them: registered, enrolled on, left, and found for a callback.

A failed message is sent again from here too (`requeue`).

Part of `ApprovalService` (`services.approval.service` composes it), over the same repository and settings; the messages
sent to the endpoints and their bodies are the webhook side's (`_webhook_side`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from services.approval import webhooks
from services.approval.domain import Approver, Refusal
from services.approval.repository import ApprovalRepository, Delivery, Endpoint
from services.approval.settings import ApprovalSettings

__all__ = ["MAX_OVERLAP_S", "WebhookEndpoints"]

log = logging.getLogger("services.approval.service")  # every part logs as the service

MAX_OVERLAP_S = 7 * 86_400.0  # the longest a rotation keeps its former secret: time to switch a chat tool, not a second secret


class _RotationUnderWay(Exception):
    """A rotation asked for while the endpoint's former secret still signs and verifies (its overlap ends at `until`)."""

    def __init__(self, until: datetime) -> None:
        super().__init__(until)
        self.until = until


def _endpoint_changed(endpoint_id: str, url: str, fingerprint: str) -> Refusal:
    return Refusal(
        code="endpoint_changed",
        status=409,
        message=f"endpoint {endpoint_id} is not at {url} with the secret of fingerprint {fingerprint} (check it again with your chat tool)",
    )


class WebhookEndpoints:
    """Registering endpoints, enrolling on and leaving them, a callback's endpoint, a failed message requeued.

    The service sets the attributes.
    """

    repo: ApprovalRepository
    settings: ApprovalSettings
    clock: Callable[[], datetime]  # what the overlap's end is judged at (the later of this host's time and the broker's)
    issuing_clock: Callable[[], datetime] | None  # what it is set from (the broker's time; None: `clock`)

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

    async def enrol(self, who: Approver, endpoint_id: str, *, url: str, secret_fingerprint: str) -> Endpoint | Refusal:
        """Let an endpoint of the caller's own tenant decide in the caller's name and get their one-time links.

        `url` and `secret_fingerprint` (`webhooks.secret_fingerprint`) are the endpoint as the caller knows it: an endpoint
        whose URL or secret is another (`409 endpoint_changed`), now or by the time the enrolment is written, is not
        enrolled, so nobody enrols an endpoint other than the one they checked. A later change of the endpoint's URL or
        secret by an admin drops every enrolment but the admin's own.
        """
        found = await self._enrolment_target(who, endpoint_id)
        if isinstance(found, Refusal):
            return found
        if (found.url, webhooks.secret_fingerprint(found.secret)) != (url, secret_fingerprint):
            return _endpoint_changed(endpoint_id, url, secret_fingerprint)
        return await self.repo.set_endpoint_approver(
            who.tenant_id, endpoint_id, who.approver, url=found.url, secret=found.secret, enrolled=True
        ) or _endpoint_changed(endpoint_id, url, secret_fingerprint)

    async def leave(self, who: Approver, endpoint_id: str) -> Endpoint | Refusal:
        """Take the caller off an endpoint of their own tenant: no more links to it, no more callbacks in their name."""
        found = await self._enrolment_target(who, endpoint_id)
        if isinstance(found, Refusal):
            return found
        left = await self.repo.set_endpoint_approver(
            who.tenant_id, endpoint_id, who.approver, url=found.url, secret=found.secret, enrolled=False
        )
        changed = f"endpoint {endpoint_id} changed while you left it; leave again"
        return left or Refusal(code="endpoint_changed", status=409, message=changed)

    async def rotate_secret(
        self, who: Approver, endpoint_id: str, *, tenant_id: str | None, overlap_s: float, leaked: bool
    ) -> Endpoint | Refusal:
        """Give an endpoint of the caller's tenant (an operator: of any) a new secret, generated here; the answer holds it, once.

        With an overlap (`leaked` False), every message is signed with the new secret and the former one (`v1,<new>
        v1,<former>`) and a callback signed with either is taken until `overlap_s` from now, so its receiver switches with no
        message refused; after it only the new one. `leaked`: the former one signs and verifies nothing from now on.
        An endpoint's secret decides in the names of the approvers listed on it, so who the new secret acts for follows the
        rule of a changed secret: an operator's rotation keeps them (the operator lists anyone), an admin's keeps only the
        admin; during the overlap the former secret still acts for, and links still go to, those listed when it was
        rotated, who enrol again with the new secret's fingerprint. An endpoint of the operator's file is rotated in it.
        A second rotation during an overlap is refused (`409 rotation_under_way`) unless `leaked`: it would drop the
        former secret at once, refusing every receiver not yet switched, as the Kafka logins' and the MCP token's do.
        """
        tenant = tenant_id or who.tenant_id
        found = await self.repo.endpoint(tenant, endpoint_id) if who.may_see(tenant) else None
        if found is None or not found.enabled:
            return Refusal(code="not_found", status=404, message=f"no endpoint {endpoint_id}")
        if found.source == "file":
            message = (
                f"endpoint {endpoint_id} comes from the operator's webhooks file; the operator rotates it there "
                "(`secret`: the new one, `former_secret` and `former_secret_until`: the old one and until when)"
            )
            return Refusal(code="operator_endpoint", status=409, message=message)
        if not leaked and not 0 < overlap_s <= MAX_OVERLAP_S:
            return Refusal(code="invalid_body", status=422, message=f"overlap_s is more than 0 and at most {MAX_OVERLAP_S:.0f}")
        # The overlap is a lifetime this service issues: set from the broker's time, as a request's deadline (a host ahead
        # of the broker's kept the superseded secret signing and verifying that much longer at every other copy's time).
        new, now = webhooks.new_secret(), (self.issuing_clock or self.clock)()

        judged = self.clock()

        def rotated(current: Endpoint) -> Endpoint:
            if not leaked and (until := current.former_until) is not None and current.former_at(judged) is not None:
                raise _RotationUnderWay(until)  # read under the row's lock: two rotations at once cannot both pass
            kept = current.approvers if who.operator else tuple(a for a in current.approvers if a == who.approver)
            if leaked:
                return replace(current, secret=new, approvers=kept, former_secret=None, former_until=None, former_approvers=())
            until = now + timedelta(seconds=overlap_s)
            return replace(
                current, secret=new, approvers=kept, former_secret=current.secret, former_until=until, former_approvers=current.approvers
            )

        try:
            changed = await self.repo.change_endpoint(tenant, endpoint_id, rotated)
        except _RotationUnderWay as under_way:
            message = (
                f"endpoint {endpoint_id} is in a rotation's overlap until {under_way.until.isoformat()}: another would drop "
                "its former secret at once, refusing the receivers not yet switched; rotate after it, or with leaked"
            )
            return Refusal(code="rotation_under_way", status=409, message=message)
        if changed is None:
            return Refusal(code="not_found", status=404, message=f"no endpoint {endpoint_id}")
        if leaked:
            told = "the former secret is refused from now on"
        else:
            told = f"the former secret signs and verifies too until {changed.former_until.isoformat() if changed.former_until else '?'}"
        log.warning(
            "approval: webhook endpoint %s of tenant %s: secret rotated by %s (new fingerprint %s); %s",
            endpoint_id,
            tenant,
            who.approver,
            webhooks.secret_fingerprint(new),
            told,
        )
        return changed

    async def _enrolment_target(self, who: Approver, endpoint_id: str) -> Endpoint | Refusal:
        """The endpoint of the caller's tenant that they enrol on or leave; refused for someone not an approver of the tenant."""
        if not await self.repo.is_registered(who.approver, who.tenant_id):
            return Refusal(
                code="unknown_approvers", status=422, message=f"{who.approver} is not a registered approver of {who.tenant_id!r}"
            )
        found = await self.repo.endpoint(who.tenant_id, endpoint_id)
        return found or Refusal(code="not_found", status=404, message=f"no endpoint {endpoint_id}")

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
        now = self.clock()
        keys: list[tuple[Endpoint | None, str]] = [(e, e.secret) for e in candidates if e.enabled] or [(None, webhooks.new_secret())]
        for e in candidates:  # during a rotation's overlap its former secret too, acting for those listed when it was rotated
            former = e.former_at(now) if e.enabled else None
            if former is not None:
                keys.append((replace(e, approvers=e.former_approvers), former))
        refusal = webhooks.WebhookVerificationError("bad_signature", "webhook-signature does not match")
        for endpoint, secret in keys:  # every secret refuses the same headers alike: the answer names no candidate
            try:
                msg_id, _ = webhooks.verify(secret, headers, body, now=now.timestamp(), tolerance_s=self.settings.callback_tolerance_s)
            except webhooks.WebhookVerificationError as exc:
                refusal = exc
                continue
            if endpoint is not None:
                return endpoint, msg_id
        return Refusal(code=refusal.code, status=401, message=str(refusal))

    async def requeue(self, who: Approver, delivery_id: str) -> Delivery | Refusal:
        """A failed message of the caller's tenant (an operator: any) sent again: pending, due now, with a fresh count of attempts.

        Another tenant's is `404` as a missing one; one not failed is `409 not_failed`, one whose endpoint was removed
        `409 endpoint_removed`. Its body is written at each attempt (`_attempt_body`): a request settled since goes out
        without links, and its retries stop at the request's expiry as a first delivery's do.
        """
        found = await self.repo.delivery(delivery_id)
        if found is None or not who.may_see(found.tenant_id):
            return Refusal(code="not_found", status=404, message=f"no delivery {delivery_id}")
        requeued = await self.repo.requeue_delivery(delivery_id, self.clock())
        if requeued is not None:
            return requeued
        now = await self.repo.delivery(delivery_id) or found
        if now.status != "failed":
            message = f"delivery {delivery_id} is {now.status}; only a failed one is sent again"
            return Refusal(code="not_failed", status=409, message=message)
        return Refusal(
            code="endpoint_removed",
            status=409,
            message=f"endpoint {found.endpoint_id} was removed; register it again (POST /api/v1/webhooks/endpoints) to send to it",
        )
