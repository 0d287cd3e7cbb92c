"""The approval service's use cases: open requests, take votes, expire, notify. I/O only through adapters.

Handlers and the HTTP API call these; the decisions themselves are `domain` functions. `ApprovalService` is
composed of one part a job, each a module of its own over the attributes they share (`_service_base`): what is
read off the bus (`_bus_intake`), people and their credentials (`_people`), votes (`_voting`, which owns the one
retry of this layer: a vote that loses a concurrent write is re-decided; the bus owns handler retries), what a
person reads beside a request (`_reads`), an approver's undo (`_undo_proposals`), the signed callback
(`_callbacks`), the background round (`_sweep`), a change announced and the outbox published (`_announcing`),
the webhook endpoints as people manage them (`_webhook_endpoints_admin`) and the messages sent to them
(`_webhook_side`). This module gives them their adapters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from servicekit import Authority, ControlState, SigningKey, ToolCatalog
from servicekit.costs import ReviewPrice
from services.approval import webhooks
from services.approval._announcing import Announcing
from services.approval._bus_intake import BusIntake
from services.approval._callbacks import CallbackDecision, Callbacks
from services.approval._people import AuthError, People, Session
from services.approval._reads import Reads
from services.approval._row_proofs import Seals
from services.approval._service_base import Publisher
from services.approval._sweep import Sweeping
from services.approval._undo_proposals import UndoProposals
from services.approval._undo_store import InMemoryUndoResults, UndoResults
from services.approval._voting import LINK_USED, Voting
from services.approval._webhook_side import WebhookSide
from services.approval.domain import GroupsConfig
from services.approval.repository import ApprovalRepository
from services.approval.settings import ApprovalSettings

__all__ = ["LINK_USED", "ApprovalService", "AuthError", "CallbackDecision", "Publisher", "Session"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class ApprovalService(BusIntake, Callbacks, Voting, People, Sweeping, Reads, UndoProposals, Announcing, WebhookSide):
    """Everything the approval service does, given its adapters."""

    repo: ApprovalRepository
    publisher: Publisher
    key: SigningKey
    groups: GroupsConfig
    settings: ApprovalSettings
    catalog: ToolCatalog | None = None
    control: ControlState | None = None
    sender: webhooks.WebhookSender | None = None
    undo_results: UndoResults = field(default_factory=InMemoryUndoResults)
    clock: Callable[[], datetime] = _utcnow  # what a deadline, a link's key grace and a token's life are judged at
    # What a request's deadline, a link's and a rotated token's lifetimes are set from; None: `clock`. The service's own is
    # the broker's time as its producer last read it (`servicekit.clock.issuing_clock`): set from `clock`, the later of
    # its host's and the broker's, a host ahead of the broker's lengthened every lifetime it issued by as much.
    issuing_clock: Callable[[], datetime] | None = None
    base_url: Callable[[], str] = lambda: "http://127.0.0.1:8081"
    seals: Seals | None = None  # signs and checks the approvals a request counts (`_ballots`); None: a twin trusting its memory
    review_price: ReviewPrice = field(default_factory=ReviewPrice)  # what the summary prices a decision at (`TIDEGATE_HUMAN_*`)
    authority: Authority | None = None  # verifies the executor's kept result events an undo's plan comes from; None: none is trusted
    published: int = field(default=0, init=False)
    _queue_observed_at: datetime | None = field(default=None, init=False)
    _disagreements_told: set[str] = field(default_factory=set, init=False)
    _tokenless_told: set[tuple[str, str, str, str]] = field(default_factory=set, init=False)  # endpoint, approver: told once
    _turns: dict[tuple[str, str], asyncio.Task[int]] = field(default_factory=dict, init=False)  # endpoints whose attempts go on
    _webhook_gate: asyncio.Semaphore | None = field(default=None, init=False)  # `webhook_concurrency` over every round's turns
