"""The approvals of a request as the service counts them, for whoever reads it: a vote it does not count is named, with why.

A pending request keeps the approvals given so far in its row; the service counts only those whose ballot (its own
signature, `_ballots`) verifies. An approval given before approvals were signed carries none, as does a name written
into the row by the database's login: neither counts, and the approver must vote again. What an approver reads (the
API's `approvers`, whether they may still approve, the CLI's `1/2`) is what the service counts, the rest said apart.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from servicekit.row_proofs import UNSIGNED
from services.approval._ballots import sort_approvals
from services.approval._row_proofs import RowSeal
from services.approval.domain import ApprovalRecord

__all__ = ["NotCounted", "votes_counted"]

_UNSIGNED = (
    "it carries no signature of the approval service: given before approvals were signed (the upgrade of 2026-12-05), "
    "or written into the request by someone with the service's database login"
)


class NotCounted(BaseModel):
    """An approval a pending request holds that the service does not count."""

    model_config = ConfigDict(frozen=True)

    approver: str = Field(description="Who the request's row says approved.", examples=["bob@acme.example"])
    why: str = Field(description="Why it is not counted.", examples=[_UNSIGNED])
    fix: str = Field(description="What to do.", examples=["bob@acme.example approves again (their vote is then signed and counted)"])


def votes_counted(seal: RowSeal | None, record: ApprovalRecord) -> tuple[ApprovalRecord, list[NotCounted]]:
    """`record` with only the approvals the service counts (as a vote counts them: `proven_approvals`), and the others, each with why.

    `seal` None: a twin without one trusts its memory, and every approval counts. Reading a request is not a vote: a
    dropped approval is logged once (the first read that finds it), counted at every read.
    """
    counted, dropped = sort_approvals(seal, record)
    not_counted = [
        NotCounted(
            approver=approver,
            why=_UNSIGNED if why == UNSIGNED else why,
            fix=f"{approver} approves again (their vote is then signed and counted)",
        )
        for approver, why in dropped.items()
    ]
    return counted, not_counted
