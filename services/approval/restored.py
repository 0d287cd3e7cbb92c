"""The approval service's database restored from a backup: found at start (it then refuses to start), and caught up from the bus.

A restored `approval.approvals` holds requests as they were at the backup: one granted since shows `pending` again,
and an approver who decides it again makes the policy authorize a call that already ran. The bus still holds every
decision the service signed since. So at start the service reads the last event it signed on each partition of
`approvals` (`servicekit.bus_history.last_signed`) and refuses to start when its request is missing or not in the
state the event says. `tidegate db catch-up` then writes back what the bus says (`Restoration`): each decision of a
request still pending (its row's approvals signed again with the service's key, as `_ballots` checks them), and each
request made since the backup, rebuilt from the policy's escalation as the service builds it (`domain.request_from_decision`).
No event is published again (they are on the bus) and no webhook message is sent again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import asyncpg

from schemas import ActionDecidedData, ApprovalData
from servicekit import Authority
from servicekit.bus_history import BehindTheBus, SignedEvent, last_signed
from servicekit.catch_up_marks import unfinished_catch_up, unfinished_message
from services.approval import domain
from services.approval._ballots import ballot_claims
from services.approval._row_proofs import Seals
from services.approval.domain import ApprovalRecord, Ballot, GroupsConfig
from services.approval.repository import ApprovalRepository

__all__ = ["DECIDED", "Restoration", "Restored", "check_not_behind"]

TOPIC = "approvals"
# A decision event → the status its request has from then on.
DECIDED: dict[str, domain.Status] = {
    domain.GRANTED: "granted",
    domain.REJECTED: "rejected",
    domain.EXPIRED: "expired",
    domain.RESOLVED: "resolved",
}
FIX = 'run `tidegate db catch-up` (docs/operations.md, "Restoring the database"), then start it again'
Restored = Literal["recorded", "rebuilt", "already", "missing", "differs"]


def _behind(record: ApprovalRecord | None, event_type: str) -> str | None:
    """Why the request `record` is behind an event of `event_type` about it; None when the database holds what the event says."""
    if record is None:
        return "is not in approval.approvals"
    wanted = DECIDED.get(event_type)
    if wanted is not None and record.status != wanted:
        return f"is {record.status} in approval.approvals, {wanted} on the bus"
    return None


async def check_not_behind(
    pool: asyncpg.Pool,
    repo: ApprovalRepository,
    bootstrap: str,
    prefix: str,
    authority: Authority,
    *,
    client_options: dict[str, Any] | None = None,
) -> None:
    """Raise BehindTheBus when the last event the service signed on a partition of `approvals` is not what its database holds.

    Or when a catch-up of it began and has not finished (what it wrote back is dated when written: `servicekit.catch_up_marks`).
    Nothing on the topic (a new deployment, or one whose events left the bus) passes: there is nothing to compare.
    """
    if (began := await unfinished_catch_up(pool, "approval")) is not None:
        raise BehindTheBus(unfinished_message("the approval service", began))
    for last in await last_signed(bootstrap, prefix, TOPIC, authority, client_options=client_options):
        data = last.data(ApprovalData)
        why = _behind(await repo.get(data.approval_id), last.event.type)
        if why is not None:
            raise BehindTheBus(
                f"the database is behind the bus: the last event the approval service signed on {prefix}{TOPIC}[{last.partition}] "
                f"(offset {last.offset}, {last.event.type} of {data.approval_id}, action {data.action_id}) {why}: restored from a "
                f"backup? Started, it could offer a decided request again; {FIX}"
            )


@dataclass(frozen=True)
class Restoration:
    """Writes what the bus says back into a restored approval table, as the service writes it (its repository, its key's seals)."""

    repo: ApprovalRepository
    seals: Seals
    groups: GroupsConfig
    risk_of: Callable[[str], str]  # a tool's risk class in the service's own catalog (`unknown` when not there)

    async def request(self, requested: SignedEvent, escalation: ActionDecidedData | None) -> Restored:
        """Rebuild the request `requested` announced when the table lacks it, from the policy's `escalation` (None: not on the bus)."""
        data = requested.data(ApprovalData)
        if await self.repo.get(data.approval_id) is not None:
            return "already"
        if escalation is None or escalation.action_id != data.action_id:
            return "missing"
        created = requested.event.time
        ttl = data.expires_at - created
        record = domain.request_from_decision(
            escalation,
            approval_id=data.approval_id,
            now=created,
            ttl=ttl if ttl > timedelta(0) else timedelta(0),
            groups=self.groups,
            risk=self.risk_of(escalation.tool),
        )
        if record is None:
            return "missing"
        record = record.model_copy(update={"expires_at": data.expires_at, "traceparent": requested.event.traceparent})
        inserted = await self.repo.insert_request(record, [], [])  # the event is on the bus already: no outbox, no webhook
        return "rebuilt" if inserted is not None else "already"

    async def decision(self, decided: SignedEvent) -> Restored:
        """Record the decision `decided` (an event of DECIDED) on its request when the table still holds it pending."""
        data = decided.data(ApprovalData)
        wanted = DECIDED[decided.event.type]
        record = await self.repo.get(data.approval_id)
        if record is None:
            return "missing"
        if not record.is_pending:
            return "already" if record.status == wanted else "differs"
        after = record.model_copy(
            update={
                "status": wanted,
                "decided_by": data.approver,
                "decided_at": data.decided_at,
                "approvers": data.approvers,
                "approver_groups": data.approver_groups,
                "approved_via": {v.approver: v.via for v in data.votes if v.counted and v.decision == "approve"},
                "comment": data.comment,
                "review_reason": data.review_reason,
                "edited_args": data.edited_args,
                "resolution": data.resolution,
                "votes": data.votes,
                # the decision as the service signed and published it: how the request is shown is checked against it
                "settled_event": decided.text if record.kind == "approval" else record.settled_event,
                "version": record.version + 1,
            }
        )
        after = after.model_copy(update={"ballots": self._ballots(after)})
        return "recorded" if await self.repo.save(record.version, after, [], []) else "differs"

    def _ballots(self, record: ApprovalRecord) -> dict[str, Ballot]:
        """Each counted approval of `record` signed with the service's key, as `_ballots.with_ballot` signs one when it is given."""
        proofs = {a: self.seals.ballots.sign(ballot_claims(record, a)) for a in record.approvers}
        return {a: Ballot(key_id=p.key_id, signature=p.signature) for a, p in proofs.items()}
