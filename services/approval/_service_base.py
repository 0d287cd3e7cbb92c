"""What every part of `ApprovalService` is given: its adapters, settings and state, and the service's one logger.

The parts (`_bus_intake`, `_people`, `_voting`, `_reads`, `_undo_proposals`, `_callbacks`, `_sweep`, `_announcing`)
each hold one job over these attributes; `services.approval.service` composes them and sets them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from schemas import Envelope
from servicekit import Authority, ControlState, Recorded, SigningKey, ToolCatalog
from servicekit.costs import ReviewPrice
from services.approval import webhooks
from services.approval._decision_proofs import Shown, as_signed
from services.approval._row_proofs import Seals
from services.approval._undo_store import UndoResults
from services.approval.domain import ApprovalRecord, GroupsConfig
from services.approval.repository import ApprovalRepository
from services.approval.settings import ApprovalSettings

__all__ = ["Publisher", "ServiceBase", "log"]

log = logging.getLogger("services.approval.service")  # every part logs as the service, as the single module did


class Publisher(Protocol):
    """Publishes on catalog topics (the Bus; `servicekit.EventOutlet` in tests)."""

    async def publish(self, topic: str, event: Envelope) -> None:
        """Publish an event (signed by the publisher)."""
        ...

    async def publish_many(self, records: Sequence[Recorded]) -> None:
        """Publish recorded events as they are (an outbox's stored bytes)."""
        ...


class ServiceBase:
    """The attributes the parts share; `ApprovalService` (a dataclass) declares them again as its fields, with their defaults."""

    repo: ApprovalRepository
    publisher: Publisher
    key: SigningKey
    groups: GroupsConfig
    settings: ApprovalSettings
    catalog: ToolCatalog | None
    control: ControlState | None
    sender: webhooks.WebhookSender | None
    undo_results: UndoResults
    clock: Callable[[], datetime]
    issuing_clock: Callable[[], datetime] | None
    base_url: Callable[[], str]
    seals: Seals | None
    review_price: ReviewPrice
    authority: Authority | None
    published: int
    _queue_observed_at: datetime | None
    _disagreements_told: set[str]

    def shown(self, record: ApprovalRecord) -> Shown:
        """`record` as it may be shown: what the policy or the executor and this service signed of it (`_decision_proofs`)."""
        return as_signed(record, self.authority, self.seals)

    def issued_now(self) -> datetime:
        """The time a lifetime this service issues starts at: the broker's (`issuing_clock`), else `clock`'s.

        Judged later at `clock` (the later of this host's time and the broker's), a lifetime set from it is never longer
        at the broker's time than meant; set from `clock`, a host ten minutes ahead gave every request ten minutes more.
        """
        return (self.issuing_clock or self.clock)()
