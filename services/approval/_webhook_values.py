"""A webhook endpoint, a message to one (a delivery) and an attempt at sending it: the values the webhook parts keep.

`REFUSED_UNSENT` begins the error of a message that failed because its endpoint's row was refused: such a message is
owed again once the endpoint is registered again (`_webhook_owed`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["REFUSED_UNSENT", "Attempt", "Delivery", "Endpoint"]

REFUSED_UNSENT = "not sent: its endpoint's row is refused"
"""How a message failed because its endpoint's row was refused begins: such a message is owed again once it is registered again."""


@dataclass(frozen=True)
class Delivery:
    """A webhook message for one endpoint (`tenant_id`, `endpoint_id`); `delivery_id` is its `webhook-id`."""

    delivery_id: str
    endpoint_id: str
    tenant_id: str
    approval_id: str
    event_type: str
    body: str
    status: str = "pending"
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None
    created_at: datetime | None = field(default=None, compare=False)  # when it was queued: where a page of the log resumes
    # the approval service's proof of the message (`_message_proofs`): the key's id and the signature; None: unsigned
    key_id: str | None = None
    signature: str | None = None


@dataclass(frozen=True)
class Attempt:
    """One attempt at sending a delivery, as the log `webhook_attempts` keeps it (numbered on across re-queues)."""

    delivery_id: str
    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: float


@dataclass(frozen=True)
class Endpoint:
    """Where webhooks go, with the secret that signs them (and verifies callbacks from it)."""

    endpoint_id: str
    url: str
    secret: str
    tenant_id: str = "*"
    approvers: tuple[str, ...] = ()
    enabled: bool = True
    source: str = "api"
    unproven: str | None = field(default=None, compare=False)  # why the row is no endpoint (None: signed, its secret opened)
    # A rotation's overlap (`rotate_secret`): the secret before it, until when it still signs and verifies, and the approvers
    # listed when it was rotated (a callback signed with it acts for them only). Sealed with the secret, so covered by the row's
    # signature; none once registered again or rotated `--leaked`.
    former_secret: str | None = None
    former_until: datetime | None = None
    former_approvers: tuple[str, ...] = ()

    def former_at(self, now: datetime) -> str | None:
        """The former secret while the overlap lasts at `now`, else None."""
        if self.former_secret is None or self.former_until is None or now >= self.former_until:
            return None
        return self.former_secret

    def link_holders_at(self, now: datetime) -> tuple[str, ...]:
        """Who gets a one-time link in a message sent at `now`: those listed, and during an overlap those listed before it."""
        if self.former_at(now) is None:
            return self.approvers
        return tuple(dict.fromkeys((*self.approvers, *self.former_approvers)))
