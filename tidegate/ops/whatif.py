"""Policy what-if: a candidate policy pack against every recorded proposal of a window; the flips, explained.

Each recorded `action.proposed` is decided again with the policy service's own pure decision
(`services.policy.engine.decide`). The facts the policy service computed from its state at the time
(payee known, spend so far, kill switch, what the task had read and done) are taken from the
`action.decided` recorded for the same action id, so no database is read and nothing is published: what-if has no side effects.
The candidate is compared with the same proposal decided again by today's pack and settings (the baseline), so what
changed since a decision (a setting, the pack, the payees) is counted apart as drift, never as the candidate's flip.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas import ActionDecidedData, ActionProposedData, ControlKillswitch, ControlKillswitchData, Mode
from servicekit import ControlState, ToolCatalog
from servicekit.provenance import Provenance
from servicekit.unreadable import Skipped, has_non_finite, skip_reason
from services.policy import (
    Call,
    CompiledPack,
    Controls,
    FailedRead,
    Flow,
    History,
    PackSettings,
    PackSource,
    SystemRecord,
    TenantSettings,
    compile_pack,
    decide,
)

__all__ = ["Flip", "WhatIfReport", "evaluate", "load_pack", "settings_ignored", "tenants_of"]

MAX_EXAMPLES = 3
PROGRESS_EVERY = 500  # proposals between two progress reports (a report per proposal would cost more than deciding it)


def load_pack(policy_dir: Path, tools_dir: Path, *more_tools_dirs: Path) -> CompiledPack:
    """Compile the candidate pack in `policy_dir` against the tool catalog in its folders (raises PackError listing problems)."""
    return compile_pack(PackSource.from_dir(policy_dir), ToolCatalog.load(tools_dir, *more_tools_dirs))


def settings_ignored(candidate: CompiledPack, live: CompiledPack, recorded: Iterable[str]) -> list[str]:
    """Tenants whose entry in the candidate's `settings.yaml` differs from today's but is never read: each has a `control.tenant` record.

    Such a record wins over the pack's entry (docs/policy.md), in the what-if as in the policy service, so the change is not
    evaluated and reads as "changes nothing". `recorded`: the tenants with a record. The `default` entry is read under a record.
    """
    named = candidate.settings.tenants
    return sorted(t for t in set(recorded) if t != "default" and t in named and named[t] != live.settings.tenants.get(t))


def tenants_of(settings: PackSettings, control: ControlState) -> dict[str, TenantSettings]:
    """Today's effective settings of each tenant with a `control.tenant` record or an admins' directory, as the policy reads them."""
    tenants = {}
    for name in set(control.tenants) | set(control.directories):
        with contextlib.suppress(ValueError):  # an invalid record onboards nothing, as in the policy service
            effective = settings.of_control(control, name)
            if effective is not None:
                tenants[name] = effective
    return tenants


@dataclass(frozen=True)
class Flip:
    """One proposal whose decision changes under the candidate (`then`: the baseline's), or a recorded decision that drifted."""

    action_id: str
    task_id: str
    tenant_id: str
    tool: str
    args: dict[str, Any]
    then: str
    now: str
    then_reasons: list[str]
    now_reasons: list[str]

    @property
    def kind(self) -> str:
        """`allow→escalate` and the like."""
        return f"{self.then}→{self.now}"

    @property
    def reason(self) -> str:
        """The reason that explains the flip: the candidate's, or the one that no longer holds when it now allows."""
        reasons = self.now_reasons if self.now != "allow" else self.then_reasons
        return reasons[0] if reasons else "none"


@dataclass
class WhatIfReport:
    """What the candidate pack would have decided differently, grouped the ways a reviewer asks."""

    candidate_version: str
    evaluated: int = 0
    without_record: int = 0
    unchanged: int = 0
    reasons_changed: int = 0
    flips: list[Flip] = field(default_factory=list)
    then_outcomes: Counter[str] = field(default_factory=Counter)
    now_outcomes: Counter[str] = field(default_factory=Counter)
    skipped: Skipped = field(default_factory=Skipped)
    seconds: float = 0.0
    days: float = 1.0  # the span of the window the proposals came from, for the human load per day
    redecided: bool = False  # the baseline is today's pack and settings deciding again (else: the recorded decisions)
    baseline_outcomes: Counter[str] = field(default_factory=Counter)  # the baseline's outcomes of the proposals with a record
    drifted: list[Flip] = field(default_factory=list)  # recorded decisions today's pack and settings decide otherwise
    shadow_flips: int = 0  # decisions the candidate's `@mode("shadow")` policies would flip (recorded, not enforced)
    touches_saved: int = 0  # escalations a human approved unchanged that the candidate allows
    newly_allowed_rejected: list[Flip] = field(default_factory=list)  # allowed now, though a human rejected or edited them
    settings_ignored: list[str] = field(default_factory=list)  # tenants whose candidate entry their own record shadows

    def human_load(self) -> dict[str, float | None]:
        """Escalations per day (each one a human's decision) at the window's rate: as recorded, and under the candidate.

        None under an hour of proposals: a rate taken over less is a guess, not a figure (`escalations` gives the counts).
        """
        if self.days < 1 / 24:
            return {"then": None, "now": None}
        return {k: round(n / self.days, 2) for k, n in self.escalations().items() if k in ("then", "now")}

    def escalations(self) -> dict[str, int]:
        """Escalations counted (each one a human's decision): recorded, by the baseline, and under the candidate."""
        return {
            "then": self.then_outcomes.get("escalate", 0),
            "baseline": self.baseline_outcomes.get("escalate", 0),
            "now": self.now_outcomes.get("escalate", 0),
        }

    def load_line(self) -> str:
        """The human load in words, with the counts and the span they cover, e.g. `7 escalations in 1.0 h recorded → 4 …`."""
        counts, load = self.escalations(), self.human_load()
        line = f"{counts['then']} escalations in {self.days * 24:.1f} h recorded"
        if self.redecided and counts["baseline"] != counts["then"]:
            line += f" ({counts['baseline']} decided again with today's pack and settings)"
        line += f" → {counts['now']} under the candidate"
        if load["then"] is None:
            return line + "; under an hour of proposals: no daily rate"
        return line + f"; ~{load['then']:g}/day → ~{load['now']:g}/day at that rate"

    def by(self, attr: str) -> dict[str, Counter[str]]:
        """Flips counted by kind, per value of `attr` (tenant_id, tool or reason)."""
        out: dict[str, Counter[str]] = {}
        for f in self.flips:
            out.setdefault(str(getattr(f, attr)), Counter())[f.kind] += 1
        return dict(sorted(out.items()))

    def kinds(self) -> Counter[str]:
        """Flips counted by kind."""
        return Counter(f.kind for f in self.flips)

    def examples(self) -> dict[str, list[Flip]]:
        """A few flips of each kind."""
        out: dict[str, list[Flip]] = {}
        for f in self.flips:
            bucket = out.setdefault(f.kind, [])
            if len(bucket) < MAX_EXAMPLES:
                bucket.append(f)
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        return {
            "candidate_version": self.candidate_version,
            "evaluated": self.evaluated,
            "without_recorded_decision": self.without_record,
            "unchanged": self.unchanged,
            "reasons_changed": self.reasons_changed,
            "flips": len(self.flips),
            "skipped": self.skipped.as_dict(),
            "then": dict(self.then_outcomes),
            "now": dict(self.now_outcomes),
            "by_kind": dict(self.kinds()),
            "by_tenant": {k: dict(v) for k, v in self.by("tenant_id").items()},
            "by_tool": {k: dict(v) for k, v in self.by("tool").items()},
            "by_reason": {k: dict(v) for k, v in self.by("reason").items()},
            "examples": {
                kind: [
                    {
                        "action_id": f.action_id,
                        "task_id": f.task_id,
                        "tenant": f.tenant_id,
                        "tool": f.tool,
                        "args": f.args,
                        "then": f.then_reasons,
                        "now": f.now_reasons,
                    }
                    for f in flips
                ]
                for kind, flips in self.examples().items()
            },
            "escalations": self.escalations(),
            "span_hours": round(self.days * 24, 3),
            "escalations_per_day": self.human_load(),
            "baseline": "today's pack and settings" if self.redecided else "recorded",
            "drifted": len(self.drifted),
            "drift_examples": [
                {"action_id": f.action_id, "task_id": f.task_id, "tool": f.tool, "recorded": f.then_reasons, "today": f.now_reasons}
                for f in self.drifted[:MAX_EXAMPLES]
            ],
            "human_touches_saved": self.touches_saved,
            "newly_allowed_that_humans_rejected": [
                {"action_id": f.action_id, "task_id": f.task_id, "tool": f.tool, "args": f.args, "then": f.then_reasons}
                for f in self.newly_allowed_rejected
            ],
            "shadow_flips": self.shadow_flips,
            "candidate_settings_ignored": self.settings_ignored,
            "seconds": round(self.seconds, 3),
            "proposals_per_second": round(self.evaluated / self.seconds, 1) if self.seconds else None,
        }


def _history(facts: dict[str, Any]) -> History:
    """The policy service's state at decision time, as its recorded facts show it.

    With what the task, the payee and the tenant without a human had been paid before the call (`paid_task_usd`,
    `paid_payee_usd`, `paid_tenant_usd`): without them a split refund's recorded `cumulative_threshold` (or a fan-out's
    `daily_payout_bound`) escalation would be re-decided as a lone piece and shown as a flip.
    """
    return History(
        payee_known=not bool(facts.get("payee_is_new", False)),
        spend_task_usd=float(facts.get("spend_task_usd") or 0.0),
        spend_tenant_usd=float(facts.get("spend_tenant_usd") or 0.0),
        paid_task_usd=float(facts.get("paid_task_usd") or 0.0),
        paid_payee_usd=float(facts.get("paid_payee_usd") or 0.0),
        paid_tenant_usd=float(facts.get("paid_tenant_usd") or 0.0),
    )


def _controls(decided: ActionDecidedData | None) -> Controls:
    """The operators' controls that held then, which the pack does not set: the kill switch and the tenant's spend cap."""
    if decided is None:
        return Controls()
    return Controls(killswitch=_killswitch(decided), tenant_budget_usd=_tenant_cap(decided.facts))


def _killswitch(decided: ActionDecidedData) -> ControlKillswitch | None:
    """A kill switch that held then still holds in the what-if."""
    for r in decided.reasons:
        if r.code == "kill_switch":
            _, _, scope = r.policy_id.partition("builtin:killswitch:")
            tenant, _, tool = scope.partition(":")
            data = ControlKillswitchData(tenant_id=tenant or "*", tool=tool or "*", active=True, reason=r.message, set_by="recorded")
            return ControlKillswitch.build(data, source="tidegate/whatif")
    return None


def _tenant_cap(facts: dict[str, Any]) -> float | None:
    """The tenant's spend cap then (`facts.tenant_budget_usd`: a `control.budget` record, else its settings); None: no cap.

    Spend caps are operators' figures (`tidegate budget set`), so the what-if keeps them as recorded: a cap lowered then
    and raised since does not turn that `budget_exceeded` into a flip.
    """
    cap = facts.get("tenant_budget_usd")
    if cap is None:
        return None
    if isinstance(cap, bool) or not isinstance(cap, int | float):
        raise TypeError(f"the recorded spend cap is not a number: {cap!r:.80}")  # (no "tenant": `skip_reason` reads "nan" in it)
    if not math.isfinite(cap):
        raise ValueError(f"the recorded spend cap is not finite: {cap}")
    return float(cap)


def _records(facts: dict[str, Any]) -> dict[str, Any]:
    """The system-of-record entry the call acts on, as the task's earlier trusted read gave it (`record_id`, `record_read`).

    The policy service learns an entry from a read's result (`learn_record`) and keeps it with the task; the
    decision records what it read of the entry the call names. Without it a refund that followed its
    `stripe_get_charge` would look unread (`record_not_read`) to the candidate though the service had read it.
    """
    record_id, read = facts.get("record_id"), facts.get("record_read")
    if record_id in (None, "") or read is None:
        return {}
    if not isinstance(read, dict):
        raise TypeError(f"the recorded record_read is not an object: {read!r:.80}")
    amount, currency = read.get("amount_usd"), read.get("currency")
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not isinstance(currency, str):
        raise TypeError(f"the recorded record_read of {record_id} has no amount_usd number or currency")
    if not math.isfinite(amount):
        raise ValueError(f"the recorded record_read of {record_id} holds an amount that is not finite")
    return {str(record_id): SystemRecord(float(amount), currency, str(read.get("source") or "recorded"))}


def _failed_reads(facts: dict[str, Any]) -> dict[str, FailedRead]:
    """The entry the call acts on, when the task's read of it had failed then (`record_read_failed`): so it still reads failed."""
    record_id, failed = facts.get("record_id"), facts.get("record_read_failed")
    if record_id in (None, "") or failed is None:
        return {}
    if not isinstance(failed, dict) or not isinstance(failed.get("error"), str):
        raise TypeError(f"the recorded record_read_failed of {record_id} has no error text: {failed!r:.80}")
    return {str(record_id): FailedRead(failed["error"], str(failed.get("source") or "recorded"))}


def _flow(tool: str, flow: dict[str, Any]) -> Flow:
    """The task's flow as the recorded `facts.flow` shows it: a flow whose Cedar context is the recorded one.

    The record gives the calls of this tool, the tools called and the total; how the rest splits between the
    other tools is not recorded and no policy can see it, so the remainder goes to the first of them.
    """
    this_tool = int(flow.get("tool_calls") or 0)
    calls = {str(t): 1 for t in flow.get("tools_called") or [] if t != tool}
    if this_tool > 0:
        calls[tool] = this_tool
    others = [t for t in sorted(calls) if t != tool]
    rest = int(flow.get("calls") or sum(calls.values())) - sum(calls.values())
    if rest > 0 and others:
        calls[others[0]] += rest
    return Flow(
        tool_calls=tuple(sorted(calls.items())),
        untrusted_read=bool(flow.get("untrusted_read")),
        external_sends=int(flow.get("external_sends") or 0),
        sent_amount_usd=int(flow.get("sent_amount_cents") or 0) / 100,
        last_decisions=((tool, str(flow["last_decision"])),) if flow.get("last_decision") else (),
        retries=int(flow.get("retries") or 0),
        tool_errors=int(flow.get("tool_errors") or 0),
    )


def _call(p: ActionProposedData, then: ActionDecidedData | None) -> Call:
    """The proposal as the policy service saw it: with what its task had read (the recorded taint and record) and done (its flow)."""
    call = Call.from_proposal(p)
    if then is None:
        return call
    read = Provenance()
    for finding in then.facts.get("taint") or []:
        if isinstance(finding, dict) and finding.get("value"):
            read.untrusted.setdefault(str(finding["value"]), str(finding.get("source", "recorded")))
    flow = _flow(p.tool, then.facts.get("flow") or {})
    return dataclasses.replace(
        call,
        provenance=read,
        flow=flow,
        records=_records(then.facts),
        failed_reads=_failed_reads(then.facts),
        task_mode=_task_mode(then.facts),
    )


def _task_mode(facts: dict[str, Any]) -> Mode | None:
    """The mode the task's signed request asked for, as the decision recorded it (`facts.task_mode`): the proposal's is at most it.

    None when no task was learned (or the decision predates the fact): the proposal's mode, as then.
    """
    mode = facts.get("task_mode")
    if mode is None:
        return None
    if mode not in ("draft", "autonomous"):
        raise TypeError(f"the recorded task_mode is neither draft nor autonomous: {mode!r:.80}")
    return "draft" if mode == "draft" else "autonomous"


def _facts_computed(facts: Mapping[str, Any]) -> bool:
    """Whether the policy computed a call's facts (payee known, spend, paid, taint) before deciding it.

    A built-in denial reached first (`tenant_not_onboarded`, an unknown tool, a tool not granted, args the schema refuses)
    records only the modes: what the payee, the spend and the task's reads were then is not on the record.
    """
    return "payee_is_new" in facts


def evaluate(
    pack: CompiledPack,
    proposals: Iterable[ActionProposedData],
    decisions: Iterable[ActionDecidedData],
    *,
    skipped: Skipped | None = None,
    tenants: Mapping[str, TenantSettings] | None = None,
    live: CompiledPack | None = None,
    live_tenants: Mapping[str, TenantSettings] | None = None,
    days: float = 1.0,
    humans: Mapping[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> WhatIfReport:
    """Decide every proposal with `pack` and `tenants` (the candidate) and compare with a baseline.

    With `live` (today's pack; `live_tenants`: today's settings, default `tenants`) the baseline is the proposal
    decided again by them, on the same recorded facts: a flip is then the candidate's alone, and a recorded decision
    the baseline decides otherwise (a setting, the pack or the payees changed since) is listed in `drifted`. Without
    `live` the recorded decisions are the baseline. Only the first decision of an action (`via` policy) is compared:
    a re-evaluation after a human grant is a different question. A proposal without a recorded decision is decided
    with an empty history and counted apart (`without_record`). A proposal that cannot be decided is counted in
    `skipped` with its reason and the rest are evaluated: NaN in its args or cost, a recorded fact that is not a
    number, or (`not_decidable`) a decision recorded before the policy computed any facts (`tenant_not_onboarded`,
    an unknown tool) that the candidate or the baseline would now decide on them: deciding it on default facts
    ("payee known, nothing read, nothing paid") would always read looser than the live policy. `skipped` starts
    with what reading the record already skipped. With `humans` (action id → `approved`, `edited`, `rejected`,
    `expired`: what a human made of its escalation), an escalation the candidate allows counts as a human touch
    saved when it was approved unchanged, and is listed when a human had rejected or edited it. `progress` is
    called with how many proposals were taken so far, every `PROGRESS_EVERY` of them and once at the end.
    """
    started = time.perf_counter()
    recorded: dict[str, ActionDecidedData] = {}
    for d in decisions:
        if d.via == "policy":
            recorded.setdefault(d.action_id, d)
    report = WhatIfReport(candidate_version=pack.version, skipped=skipped or Skipped(), days=days, redecided=live is not None)
    tenants = tenants or {}
    baseline_tenants = tenants if live_tenants is None else live_tenants
    seen: set[str] = set()
    taken = 0
    for p in proposals:
        taken += 1
        if progress is not None and taken % PROGRESS_EVERY == 0:
            progress(taken)
        if p.action_id in seen:  # a redelivered proposal is the same question
            continue
        seen.add(p.action_id)
        then = recorded.get(p.action_id)
        if has_non_finite(p.args) or has_non_finite(p.cost.usd):
            report.skipped.add("nan", p.action_id, "NaN or Infinity in its args or cost")
            continue
        try:
            call = _call(p, then)
            history = _history(then.facts) if then is not None else History()
            controls = _controls(then)
            candidate = tenants.get(p.tenant_id)
            verdict = decide(pack, call, history, dataclasses.replace(controls, tenant=candidate))
            baseline = None
            if live is not None and then is not None:
                same = live is pack and baseline_tenants.get(p.tenant_id) == candidate
                baseline = (
                    verdict
                    if same
                    else decide(live, call, history, dataclasses.replace(controls, tenant=baseline_tenants.get(p.tenant_id)))
                )
        except (ValueError, TypeError, ArithmeticError) as exc:  # a recorded fact of the wrong kind: this one only
            report.skipped.add(skip_reason(exc), p.action_id, str(exc)[:200])
            continue
        if then is not None and not _facts_computed(then.facts) and any(_facts_computed(v.facts) for v in (verdict, baseline) if v):
            why = f"recorded {then.outcome} {[str(r.code) for r in then.reasons]} before any facts were computed; the candidate needs them"
            report.skipped.add("not_decidable", p.action_id, why)
            continue
        report.shadow_flips += 1 if (verdict.facts.get("shadow") or {}).get("flipped") else 0
        report.evaluated += 1
        report.now_outcomes[verdict.outcome] += 1
        if then is None:
            report.without_record += 1
            continue
        report.then_outcomes[then.outcome] += 1
        then_codes = [str(r.code) for r in then.reasons]
        base_outcome, base_codes = (then.outcome, then_codes) if baseline is None else (baseline.outcome, baseline.codes)
        report.baseline_outcomes[base_outcome] += 1
        if base_outcome != then.outcome:
            drift = Flip(p.action_id, p.task_id, p.tenant_id, p.tool, p.args, then.outcome, base_outcome, then_codes, base_codes)
            report.drifted.append(drift)
        if verdict.outcome == base_outcome:
            report.unchanged += 1
            if sorted(base_codes) != sorted(verdict.codes):
                report.reasons_changed += 1
            continue
        flip = Flip(p.action_id, p.task_id, p.tenant_id, p.tool, p.args, base_outcome, verdict.outcome, base_codes, verdict.codes)
        report.flips.append(flip)
        human = (humans or {}).get(p.action_id)
        if flip.kind == "escalate→allow" and human == "approved":
            report.touches_saved += 1
        elif flip.kind == "escalate→allow" and human in ("rejected", "edited"):
            report.newly_allowed_rejected.append(flip)
    if progress is not None:
        progress(taken)
    report.seconds = time.perf_counter() - started
    return report
