"""The autonomy report: what humans did with each escalation, and the setting a tenant could widen, proposed as a what-if.

Per tenant, tool and trigger (the reason an escalation gave): how many escalations humans approved unchanged, edited,
rejected or let expire, and how many an approver called needless (`should_not_need_approval`). For the triggers a tenant
setting controls (the confidence threshold, the refund threshold, the per-payee daily threshold, the tenant's daily
payout bound, the irreversible-write posture) it proposes the widest change that lets through none of the calls a human
rejected or edited, and counts the approved-unchanged ones it would have allowed with the decision what-if makes
(`tidegate.ops.whatif.evaluate`: the per-payee, per-task and tenant bounds included), so the two tools give one figure.
Each candidate says the evidence it rests on (approvals, their span, the requests still pending) and warns under
`MIN_APPROVALS` or `MIN_SPAN_HOURS`. Nothing widens by itself: the candidate is a file for `tidegate whatif
--tenant-settings`, and a person publishes it with `tidegate tenant set`.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from schemas import (
    ActionDecided,
    ActionDecidedData,
    ActionProposed,
    ActionProposedData,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRejected,
    Envelope,
)
from servicekit import KitSettings
from services.policy import CompiledPack, TenantSettings
from tidegate.ops.whatif import evaluate

if TYPE_CHECKING:
    from tidegate.ops.recorded import Window

__all__ = ["NEEDLESS", "AutonomyReport", "Candidate", "autonomy_report", "human_outcomes", "read_record", "said_needless"]

RECORD_TOPICS = ("tasks", "actions.proposed", "actions.decided", "approvals")
# Under these a candidate says "too little evidence to widen": a handful of answers over less than a day of traffic
# shows what a few people thought of a few calls, not how the calls run.
MIN_APPROVALS = 5
MIN_SPAN_HOURS = 24.0

SettingValue = float | list[str] | None  # a tenant setting a candidate writes: a figure, or the risk classes accepted


async def read_record(kit: KitSettings, since: str, tenant: str | None = None, until: str = "now") -> Window:
    """The recorded tasks, proposals, decisions and approvals of the window, read from the topics as the ops principal.

    What the deployment's keys refuse is skipped and counted (`Window.skipped`), never counted as a human's decision.
    """
    from tidegate.ops.recorded import parse_time, recorded_window

    return await recorded_window(kit, parse_time(since), parse_time(until), topics=RECORD_TOPICS, tenant=tenant)


def human_outcomes(events: Iterable[Envelope]) -> dict[str, str]:
    """Action id → what a human made of its escalation: `approved` (unchanged), `edited`, `rejected` or `expired`."""
    out: dict[str, str] = {}
    for e in events:
        if isinstance(e, ApprovalGranted):
            out.setdefault(e.data.action_id, "edited" if e.data.edited_args is not None else "approved")
        elif isinstance(e, ApprovalRejected):
            out.setdefault(e.data.action_id, "rejected")
        elif isinstance(e, ApprovalExpired):
            out.setdefault(e.data.action_id, "expired")
    return out


@dataclass
class Evidence:
    """What a candidate rests on: the human answers to escalations of its trigger alone, and the span they cover."""

    approved: int = 0
    rejected_or_edited: int = 0
    pending: int = 0  # still waiting for a human: not counted either way
    first: datetime | None = None
    last: datetime | None = None

    def saw(self, outcome: str, when: datetime) -> None:
        """One escalation of the trigger, and what a human made of it (`pending` or `expired`: nothing yet)."""
        if outcome == "approved":
            self.approved += 1
        elif outcome in ("rejected", "edited"):
            self.rejected_or_edited += 1
        else:
            self.pending += outcome == "pending"
            return
        self.first = when if self.first is None else min(self.first, when)
        self.last = when if self.last is None else max(self.last, when)

    @property
    def span_hours(self) -> float:
        """Hours from the first to the last escalation a human answered."""
        return 0.0 if self.first is None or self.last is None else (self.last - self.first).total_seconds() / 3600

    def warning(self) -> str | None:
        """`too little evidence to widen: …` under the minimums, else None."""
        if self.approved >= MIN_APPROVALS and self.span_hours >= MIN_SPAN_HOURS:
            return None
        return (
            f"too little evidence to widen: {self.approved} approval(s) over {self.span_hours:.1f} h "
            f"(at least {MIN_APPROVALS} over {MIN_SPAN_HOURS:g} h advised)"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready evidence."""
        return {
            "approved": self.approved,
            "rejected_or_edited": self.rejected_or_edited,
            "pending": self.pending,
            "span_hours": round(self.span_hours, 3),
            "warning": self.warning(),
        }


NEEDLESS = "should_not_need_approval"  # the review reason that says a human should not have been asked: the autonomy signal


def said_needless(events: Iterable[Envelope]) -> set[str]:
    """Action ids whose escalation an approver called needless: the decision's reason, or a counted vote's, is `NEEDLESS`."""
    out: set[str] = set()
    for e in events:
        if isinstance(e, ApprovalGranted | ApprovalRejected):
            reasons = {e.data.review_reason} | {v.review_reason for v in e.data.votes if v.counted}
            if NEEDLESS in reasons:
                out.add(e.data.action_id)
    return out


@dataclass(frozen=True)
class Candidate:
    """A wider tenant setting, and what it would have changed on the record."""

    tenant_id: str
    setting: str
    current: SettingValue
    proposed: SettingValue
    would_allow: int  # escalations humans approved unchanged that it lets through (decided as what-if decides them)
    kept_for_humans: int  # escalations humans rejected or edited that still escalate under it
    trigger: str
    evidence: Evidence = field(default_factory=lambda: Evidence())
    also: dict[str, SettingValue] = field(default_factory=dict)  # other settings the candidate writes (the per-payee bound kept)
    payee_bound: str = ""  # what the candidate does to the per-payee daily bound, in words ("" when it does nothing to it)

    @property
    def settings(self) -> dict[str, SettingValue]:
        """The settings the candidate writes for its tenant."""
        return {self.setting: self.proposed, **self.also}


@dataclass(frozen=True)
class _Numeric:
    """A trigger whose tenant setting is a number: which side of it an escalated call falls on."""

    setting: str
    value: Callable[[ActionDecidedData, ActionProposedData | None], float | None]
    allows: Callable[[float, float], bool]  # (value, setting) → the call passes
    widen: Callable[[list[float], list[float]], float]  # (approved values, rejected values) → the candidate
    current: Callable[[TenantSettings], float | None] | None = None  # the figure in force (None: the setting as it is)
    code: str = ""  # the reason code it widens, when its key in `_NUMERIC` is not that code (the payee's 24-hour total)

    def in_force(self, settings: TenantSettings) -> float | None:
        """The tenant's figure the escalations were held to (None: none, the bound is off)."""
        return getattr(settings, self.setting) if self.current is None else self.current(settings)


def _confidence(d: ActionDecidedData, proposal: ActionProposedData | None) -> float | None:
    return None if proposal is None or proposal.confidence is None else float(proposal.confidence)


def _fact(d: ActionDecidedData, name: str) -> float | None:
    value = d.facts.get(name)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _amount(d: ActionDecidedData, proposal: ActionProposedData | None) -> float | None:
    return _fact(d, "amount_usd")


def _paid_payee_with(d: ActionDecidedData, proposal: ActionProposedData | None) -> float | None:
    """What the tenant had paid the payee over 24 hours with this call: the figure the per-payee daily bound held it to."""
    amount, paid = _fact(d, "amount_usd"), _fact(d, "paid_payee_usd")
    return None if amount is None or paid is None else round(amount + paid, 2)


def _paid_tenant_with(d: ActionDecidedData, proposal: ActionProposedData | None) -> float | None:
    """What the tenant had paid out over 24 hours without a human with this call: the figure its daily payout bound held it to."""
    amount, paid = _fact(d, "amount_usd"), _fact(d, "paid_tenant_usd")
    return None if amount is None or paid is None else round(amount + paid, 2)


# The default pack's rule that escalates a payee's 24-hour total (`cumulative_threshold`, as the task's total does:
# told apart by the rule's id, as the task's total has no setting of its own to widen).
PAYEE_RULE = "cumulative-threshold-payee"
PAYEE_DAILY = "cumulative_threshold payee"  # its key in `_NUMERIC`; its candidate names the reason code (`_Numeric.code`)

_NUMERIC = {
    # Confidence at or over the threshold passes: just above the surest rejected call, else the least sure approved one.
    "low_confidence": _Numeric(
        "min_confidence",
        _confidence,
        lambda v, s: v >= s,
        lambda good, bad: round(max(bad) + 0.01, 2) if bad else math.floor(min(good) * 100) / 100,
    ),
    # A refund under the threshold passes: the smallest rejected amount, else just over the largest approved one.
    "needs_human_approval": _Numeric(
        "refund_threshold_usd",
        _amount,
        lambda v, s: v < s,
        lambda good, bad: min(bad) if bad else round(max(good) + 0.01, 2),
    ),
    # A payee's 24-hour total under the bound passes: the smallest rejected total, else just over the largest approved one.
    PAYEE_DAILY: _Numeric(
        "payee_daily_threshold_usd",
        _paid_payee_with,
        lambda v, s: v < s,
        lambda good, bad: min(bad) if bad else round(max(good) + 0.01, 2),
        current=lambda settings: settings.payee_daily_threshold(),
        code="cumulative_threshold",
    ),
    # The tenant's 24-hour total without a human at or under the bound passes (a call that takes it over escalates): just
    # under the smallest rejected total, else the largest approved one.
    "daily_payout_bound": _Numeric(
        "tenant_daily_payout_usd",
        _paid_tenant_with,
        lambda v, s: v <= s,
        lambda good, bad: round(min(bad) - 0.01, 2) if bad else max(good),
        current=lambda settings: settings.tenant_daily_payout(),
    ),
}


@dataclass
class AutonomyReport:
    """Escalations by (tenant, tool, trigger) and human outcome, and the candidate wider settings."""

    rows: dict[tuple[str, str, str], Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    candidates: list[Candidate] = field(default_factory=list)
    escalations: int = 0

    def candidate_settings(self) -> dict[str, dict[str, SettingValue]]:
        """The candidate settings per tenant, as `tidegate whatif --tenant-settings` reads them."""
        out: dict[str, dict[str, SettingValue]] = {}
        for c in self.candidates:
            out.setdefault(c.tenant_id, {}).update(c.settings)
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        return {
            "escalations": self.escalations,
            "rows": [
                {
                    "tenant": t,
                    "tool": tool,
                    "trigger": trig,
                    **{k: counts.get(k, 0) for k in ("approved", "edited", "rejected", "expired", "pending", NEEDLESS)},
                }
                for (t, tool, trig), counts in sorted(self.rows.items())
            ],
            "candidates": [c.__dict__ | {"evidence": c.evidence.as_dict()} for c in self.candidates],
            "candidate_settings": self.candidate_settings(),
        }


# Writes escalated for want of an undo: declared irreversible, or declaring none. `accept_irreversible` lifts both.
_ROLLBACK_TRIGGERS = frozenset({"irreversible_write", "no_rollback_path"})


def autonomy_report(
    events: Iterable[Envelope], settings_of: Callable[[str], TenantSettings], pack: CompiledPack, *, keep_payee_bound: bool = False
) -> AutonomyReport:
    """What humans did with each escalation of the record, and the wider settings the record supports.

    `pack`: today's pack, which decides each candidate's count as what-if does. A wider `refund_threshold_usd` also
    widens the per-payee daily bound of a tenant that leaves it unset (it follows the threshold): the candidate says so,
    and with `keep_payee_bound` writes the bound at its figure today instead (every refund at or over it still escalates).
    """
    events = list(events)
    humans, needless = human_outcomes(events), said_needless(events)
    proposals = {e.data.action_id: e.data for e in events if isinstance(e, ActionProposed)}
    report = AutonomyReport()
    # (tenant, trigger) → (approved values, rejected-or-edited values), for escalations with that trigger alone.
    sides: dict[tuple[str, str], tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    evidence: dict[tuple[str, str], Evidence] = defaultdict(Evidence)
    irreversible: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    irreversible_triggers: dict[tuple[str, str], set[str]] = defaultdict(set)
    seen: set[str] = set()
    for e in events:
        if not isinstance(e, ActionDecided) or e.data.via != "policy" or e.data.outcome != "escalate" or e.data.action_id in seen:
            continue
        d = e.data
        seen.add(d.action_id)
        report.escalations += 1
        outcome = humans.get(d.action_id, "pending")
        triggers = sorted({str(r.code) for r in d.reasons})
        for trigger in triggers:
            report.rows[(d.tenant_id, d.tool, trigger)][outcome] += 1
            report.rows[(d.tenant_id, d.tool, trigger)][NEEDLESS] += d.action_id in needless
        if len(triggers) != 1:
            continue  # a wider setting for one trigger would not let a call with several through
        [trigger] = triggers
        if trigger == "cumulative_threshold" and all(r.policy_id == PAYEE_RULE for r in d.reasons):
            trigger = PAYEE_DAILY  # the payee's 24-hour total, not the task's (which has no setting of its own to widen)
        if trigger in _ROLLBACK_TRIGGERS and d.risk is not None:
            evidence[(d.tenant_id, str(d.risk))].saw(outcome, e.time)
        else:
            evidence[(d.tenant_id, trigger)].saw(outcome, e.time)
        if outcome not in ("approved", "edited", "rejected"):
            continue
        if trigger in _NUMERIC:
            value = _NUMERIC[trigger].value(d, proposals.get(d.action_id))
            if value is not None:
                sides[(d.tenant_id, trigger)][0 if outcome == "approved" else 1].append(value)
        elif trigger in _ROLLBACK_TRIGGERS and d.risk is not None:
            irreversible[(d.tenant_id, str(d.risk))][outcome] += 1
            irreversible_triggers[(d.tenant_id, str(d.risk))].add(trigger)
    decided = [e.data for e in events if isinstance(e, ActionDecided)]
    for (tenant, trigger), (good, bad) in sorted(sides.items()):
        rule = _NUMERIC[trigger]
        settings = settings_of(tenant)
        current = rule.in_force(settings)
        if not good or current is None:
            continue
        proposed = rule.widen(good, bad)
        wider = proposed != current and not rule.allows(proposed, current)  # a lower confidence floor, a higher amount threshold
        if not wider or not any(rule.allows(v, proposed) and not rule.allows(v, current) for v in good):
            continue
        also, payee_bound = _payee_bound(rule.setting, settings, proposed, keep=keep_payee_bound)
        widened = TenantSettings.model_validate(settings.model_dump() | {rule.setting: proposed} | also)
        mine = [p for p in proposals.values() if p.tenant_id == tenant]
        replayed = evaluate(pack, mine, decided, tenants={tenant: widened}, live=pack, live_tenants={tenant: settings}, humans=humans)
        kept = sum(1 for v in bad if not rule.allows(v, proposed))
        candidate = Candidate(
            tenant, rule.setting, current, proposed, replayed.touches_saved, kept, rule.code or trigger,
            evidence[(tenant, trigger)], also, payee_bound,
        )  # fmt: skip
        report.candidates.append(candidate)
    for (tenant, risk), counts in sorted(irreversible.items()):
        accepted = settings_of(tenant).accept_irreversible
        if counts["approved"] and not counts["rejected"] and not counts["edited"] and risk not in accepted:
            trigger = ", ".join(sorted(irreversible_triggers[(tenant, risk)]))
            proposed_set = sorted([*accepted, risk])
            candidate = Candidate(
                tenant, "accept_irreversible", accepted, proposed_set, counts["approved"], 0, trigger, evidence[(tenant, risk)]
            )
            report.candidates.append(candidate)
    return report


def _payee_bound(setting: str, settings: TenantSettings, proposed: float, *, keep: bool) -> tuple[dict[str, SettingValue], str]:
    """(settings the candidate also writes, what it does to the per-payee daily bound in words) for a wider refund threshold.

    An unset `payee_daily_threshold_usd` follows the refund threshold, so widening the threshold widens the bound too.
    The bound counts the call itself, so keeping it at today's figure keeps every refund at or over it with a human.
    """
    if setting != "refund_threshold_usd" or settings.payee_daily_threshold_usd is not None:
        return {}, ""
    today = settings.payee_daily_threshold()
    if keep:
        kept = f"the per-payee daily bound is kept at {today} (payee_daily_threshold_usd written into the candidate)"
        return {"payee_daily_threshold_usd": today}, f"{kept}: a refund of {today} or more to one payee still escalates"
    return {}, (
        f"it also raises the per-payee daily bound {today} → {proposed} (payee_daily_threshold_usd is unset: it follows the "
        "refund threshold); --keep-payee-bound writes it at its figure today"
    )
