"""Where webhooks are kept: the approval repository's webhook part, composed of one part a job.

- `_webhook_endpoints`: endpoints (one tenant each, the secret sealed, the row signed) and inbound message ids;
- `_webhook_queue`: the deliveries due, claimed under a lease by the sender, and the attempts it logs;
- `_webhook_log`: the delivery log an admin reads, and a failed message re-queued;
- `_webhook_owed`: the messages an endpoint is owed after its row was refused and it is registered again.

Each part is a Protocol, an asyncpg part and an in-memory twin's part over shared tables (`_webhook_tables`); the values
are in `_webhook_values`. `services.approval.repository` composes this with the request part, which writes new
deliveries in the transaction of the state they announce (outbox).
"""

from __future__ import annotations

from typing import Protocol

from services.approval._webhook_endpoints import EndpointStore, InMemoryEndpointStore, PgEndpointStore
from services.approval._webhook_log import DeliveryLog, InMemoryDeliveryLog, PgDeliveryLog
from services.approval._webhook_owed import InMemoryOwedMessages, OwedMessages, PgOwedMessages
from services.approval._webhook_queue import DeliveryQueue, InMemoryDeliveryQueue, PgDeliveryQueue

__all__ = ["InMemoryWebhookStore", "PgWebhookStore", "WebhookStore"]


class WebhookStore(EndpointStore, DeliveryQueue, DeliveryLog, OwedMessages, Protocol):
    """Webhook endpoints, deliveries and inbound message ids."""


class PgWebhookStore(PgEndpointStore, PgDeliveryQueue, PgDeliveryLog, PgOwedMessages, WebhookStore):
    """The PostgreSQL part (tables `webhook_endpoints`, `webhook_deliveries`, `webhook_attempts`, `inbound_messages`)."""


class InMemoryWebhookStore(InMemoryEndpointStore, InMemoryDeliveryQueue, InMemoryDeliveryLog, InMemoryOwedMessages, WebhookStore):
    """The in-memory twin's part."""
