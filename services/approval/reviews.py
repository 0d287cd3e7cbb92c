"""Human reviews as a bug tracker counts them: why approvers rejected, edited or called needless, and how the approval step works.

Pure functions of `Review` rows. The approval service makes them from its own records (its approver
page), `tidegate approvals report` from the recorded events (`reviews_from_events`), so both count alike.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from schemas import ActionDecided, ApprovalExpired, ApprovalGranted, ApprovalRejected, ApprovalRequested, ApprovalVote, TaskSubmitted

__all__ = ["Review", "ReviewReport", "Said", "review_report", "reviews_from_events", "said_in"]

Outcome = Literal["approved", "edited", "rejected", "expired", "pending"]
NO_REASON = "(no reason given)"
EXAMPLES = 3


@dataclass(frozen=True)
class Said:
    """One approver's part in a decision: who, why (the tenant's taxonomy) and their comment."""

    approver: str | None
    review_reason: str | None
    comment: str | None
    edited: bool = False  # this approver made the edit the grant ran (a concurrence with it is not one)


def said_in(votes: Sequence[ApprovalVote], outcome: Outcome) -> tuple[Said, ...]:
    """The votes that made `outcome`, in order: a grant's counted approvals (an edit's editor among them), a reject's reject."""
    if outcome == "rejected":
        chosen = [v for v in votes if v.decision == "reject"][-1:]
    elif outcome in ("approved", "edited"):
        chosen = [v for v in votes if v.counted and v.decision == "approve"]
    else:
        chosen = []
    editor = next((v for v in chosen if v.edited_args is not None), None)  # the first counted vote for the edit made it
    return tuple(Said(v.approver, v.review_reason, v.comment, edited=v is editor) for v in chosen)


@dataclass(frozen=True)
class Review:
    """One escalated call and what a human made of it."""

    tenant_id: str
    task_id: str
    action_id: str
    tool: str
    risk: str
    outcome: Outcome
    requested_at: datetime
    decided_at: datetime | None = None
    approver: str | None = None
    review_reason: str | None = None
    comment: str | None = None
    policies: tuple[str, ...] = ()  # the policies that escalated it
    triggers: tuple[str, ...] = ()  # their reason codes
    workflow: str = "?"
    group: str = "?"  # the approver's group, where known
    said: tuple[Said, ...] = ()  # each approver's part (`said_in`); empty for a decision recorded before votes were kept

    @property
    def parts(self) -> tuple[Said, ...]:
        """Each approver's part in the decision: the votes kept, or else the decider's own words."""
        return self.said or (Said(self.approver, self.review_reason, self.comment),)

    def reasons(self) -> list[str]:
        """The reasons given for it, each once (an edit's is its editor's, whoever approved last), or `NO_REASON`."""
        return sorted({p.review_reason for p in self.parts if p.review_reason}) or [NO_REASON]

    @property
    def seconds(self) -> float | None:
        """Time to decision."""
        return None if self.decided_at is None else max((self.decided_at - self.requested_at).total_seconds(), 0.0)


def _pct(values: Sequence[float], q: float) -> float:
    if len(values) == 1:
        return round(values[0], 1)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1], 1)


@dataclass
class ReviewReport:
    """Counts by tool, workflow, reason and policy; times to decision; rates; rubber-stamp signals."""

    reviews: list[Review]
    fast_s: float = 10.0
    min_decisions: int = 5
    by: dict[str, dict[str, Counter[str]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        decided = [r for r in self.reviews if r.outcome in ("approved", "edited", "rejected")]
        # Reasons are counted for rejections and edits, and for unchanged approvals that gave one (`should_not_need_approval`).
        touched = [r for r in decided if r.outcome in ("edited", "rejected") or any(p.review_reason for p in r.parts)]
        return {
            "reviews": len(self.reviews),
            "outcomes": dict(Counter(r.outcome for r in self.reviews)),
            "rates": {  # fractions only (counts are under `outcomes`): reject and edit of the decided, expire of every request
                "reject": round(sum(r.outcome == "rejected" for r in decided) / len(decided), 3) if decided else None,
                "edit": round(sum(r.outcome == "edited" for r in decided) / len(decided), 3) if decided else None,
                "expire": round(sum(r.outcome == "expired" for r in self.reviews) / len(self.reviews), 3) if self.reviews else None,
            },
            "reasons": {dim: {k: dict(v) for k, v in sorted(rows.items())} for dim, rows in _reason_counts(touched).items()},
            "examples": _examples(touched),
            "time_to_decision_s": {
                "by_risk": _times(decided, lambda r: r.risk),
                "by_group": _times(decided, lambda r: r.group),
            },
            "rubber_stamp": {
                "fast_s": self.fast_s,
                "fast_approvals": sum(1 for r in decided if r.outcome == "approved" and (r.seconds or 0) < self.fast_s),
                "never_reject": _never_reject(decided, self.min_decisions),
            },
        }


def _reason_counts(touched: Sequence[Review]) -> dict[str, dict[str, Counter[str]]]:
    """Rejections, edits and unchanged approvals that gave a reason, counted by reason within each tool, workflow, policy, and overall."""
    out: dict[str, dict[str, Counter[str]]] = {
        "tool": defaultdict(Counter),
        "workflow": defaultdict(Counter),
        "policy": defaultdict(Counter),
    }
    overall: Counter[str] = Counter()
    for r in touched:
        for reason in r.reasons():  # each approver's reason counts, not only the last approver's
            overall[reason] += 1
            out["tool"][r.tool][reason] += 1
            out["workflow"][r.workflow][reason] += 1
            for policy in r.policies or ("?",):
                out["policy"][policy][reason] += 1
    return {"reason": {"all": overall}} | out


def _examples(touched: Sequence[Review]) -> dict[str, list[dict[str, Any]]]:
    """A few rejections, edits and reasoned approvals per reason, each with the command that explains its task.

    `approver` and `comment` are of the one who gave the reason (an edit's editor); `votes` has every approver's part.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for r in touched:
        for reason in r.reasons():
            bucket = out.setdefault(reason, [])
            if len(bucket) >= EXAMPLES:
                continue
            gave = next((p for p in r.parts if p.review_reason == reason), Said(r.approver, None, r.comment))
            bucket.append(
                {
                    "task_id": r.task_id,
                    "action_id": r.action_id,
                    "tool": r.tool,
                    "outcome": r.outcome,
                    "approver": gave.approver,
                    "comment": gave.comment,
                    "votes": [{"approver": p.approver, "review_reason": p.review_reason, "comment": p.comment} for p in r.parts],
                    "explain": f"tidegate audit explain {r.task_id}",
                }
            )
    return out


def _times(decided: Iterable[Review], key: Any) -> dict[str, dict[str, float]]:
    groups: dict[str, list[float]] = defaultdict(list)
    for r in decided:
        if r.seconds is not None:
            groups[str(key(r))].append(r.seconds)
    return {k: {"n": len(v), "p50": _pct(sorted(v), 50), "p95": _pct(sorted(v), 95)} for k, v in sorted(groups.items())}


def _never_reject(decided: Iterable[Review], min_decisions: int) -> list[str]:
    """Approvers with at least `min_decisions` decisions who never rejected nor edited one.

    Every approver a decision counted takes part in it (`Review.parts`: a grant of two approvals is a decision of both, not
    only of the one who approved last); one who concurred with another's edit did not edit. A decision recorded before
    votes were kept names its decider alone, with the outcome as theirs.
    """
    seen: dict[str, Counter[str]] = defaultdict(Counter)
    for r in decided:
        for part in r.parts:
            if not part.approver:
                continue
            touched = r.outcome == "rejected" or (part.edited if r.said else r.outcome == "edited")
            seen[part.approver]["decided"] += 1
            seen[part.approver]["touched"] += touched
    return sorted(a for a, c in seen.items() if c["decided"] >= min_decisions and c["touched"] == 0)


def review_report(reviews: Iterable[Review], *, fast_s: float = 10.0, min_decisions: int = 5) -> dict[str, Any]:
    """The report of `reviews` (see ReviewReport)."""
    return ReviewReport(list(reviews), fast_s=fast_s, min_decisions=min_decisions).as_dict()


def reviews_from_events(events: Iterable[Any], groups_of: dict[str, str] | None = None) -> list[Review]:
    """Reviews from recorded events (tasks, decisions, approvals), one per approval request, with its human outcome."""
    workflows: dict[str, str] = {}
    decided: dict[str, Any] = {}
    requests: dict[str, Any] = {}
    ends: dict[str, Any] = {}
    for e in events:
        if isinstance(e, TaskSubmitted):
            workflows[e.data.task_id] = e.data.workflow
        elif isinstance(e, ActionDecided) and e.data.outcome == "escalate" and e.data.via == "policy":
            decided.setdefault(e.data.action_id, e.data)
        elif isinstance(e, ApprovalRequested):
            requests.setdefault(e.data.approval_id, e)
        elif isinstance(e, ApprovalGranted | ApprovalRejected | ApprovalExpired):
            ends.setdefault(e.data.approval_id, e)
    out = []
    for approval_id, req in requests.items():
        d, end = decided.get(req.data.action_id), ends.get(approval_id)
        outcome: Outcome = "pending"
        if isinstance(end, ApprovalGranted):
            outcome = "edited" if end.data.edited_args is not None else "approved"
        elif isinstance(end, ApprovalRejected):
            outcome = "rejected"
        elif isinstance(end, ApprovalExpired):
            outcome = "expired"
        approver = end.data.approver if end is not None else None
        out.append(
            Review(
                tenant_id=req.data.tenant_id,
                task_id=req.data.task_id,
                action_id=req.data.action_id,
                tool=req.data.tool,
                risk=str(d.risk) if d is not None and d.risk is not None else "?",
                outcome=outcome,
                requested_at=req.time,
                decided_at=(end.data.decided_at or end.time) if end is not None and outcome != "expired" else None,
                approver=approver,
                review_reason=end.data.review_reason if end is not None else None,
                comment=end.data.comment if end is not None else None,
                policies=tuple(r.policy_id for r in req.data.reasons),
                triggers=tuple(str(r.code) for r in req.data.reasons),
                workflow=workflows.get(req.data.task_id, "?"),
                group=(groups_of or {}).get(approver or "", "?"),
                said=said_in(end.data.votes, outcome) if end is not None else (),
            )
        )
    return out
