"""The decision: built-in guards, facts, then the Cedar pack, combined by the design's rule.

Pure: a function of the compiled pack, the call, the history the repository read and the control
state. Deny beats escalate beats allow; nothing fired means deny `no_permit`; an evaluation error
means deny `policy_error` (fail closed). Guards that a pack must never be able to remove — unknown
tool, a tool the catalog does not grant the tenant, invalid args, kill switch, budget — are checked in
code, before and beside the pack.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import cedarpy
import orjson

from schemas import ControlKillswitch, Decision, Reason, ReasonCode, RiskClass, ToolSpec
from servicekit.approver_groups import counts, groups_counted
from servicekit.catalog import ToolCatalog
from services.policy.facts import Call, Facts, History, compute_facts, tainted_unseen_only, unknown_tainted_args, unseen_sources
from services.policy.messages import render_message
from services.policy.pack import SPEND_FACTS, CompiledPack, read_of
from services.policy.tenant_settings import MAX_PAYEE_DAILY_USD, TenantSettings

__all__ = ["Controls", "NonFiniteAmount", "Verdict", "approvers_required", "cedar_context", "decide", "still_holds", "tenant_settings"]

MAX_AMOUNT_USD = MAX_PAYEE_DAILY_USD  # in cents a Cedar Long (64 bits) with room to add a day's payouts


@dataclass(frozen=True)
class Controls:
    """What the `control` topic says right now about this call."""

    killswitch: ControlKillswitch | None = None
    tenant_budget_usd: float | None = None
    tenant: TenantSettings | None = None  # the tenant's `control.tenant` record; None: the pack's settings


@dataclass(frozen=True)
class Verdict:
    """A decision with everything that explains it."""

    outcome: Decision
    reasons: tuple[Reason, ...]
    policy_version: str
    risk: RiskClass | None
    facts: dict[str, Any] = field(default_factory=dict)
    estimated_cost_usd: float = 0.0
    mode: str = "draft"

    @property
    def codes(self) -> list[str]:
        """The reason codes, in order."""
        return [str(r.code) for r in self.reasons]


class NonFiniteAmount(ValueError):
    """A money figure that is NaN or infinite: no decision can compare it with a threshold or a budget."""


def _cents(usd: float | None, what: str = "amount") -> int:
    value = usd or 0.0
    if not math.isfinite(value):
        raise NonFiniteAmount(f"{what} is not a finite number of USD: {value!r}")
    return round(value * 100)


def _non_finite_money(facts: Facts, threshold_usd: float) -> list[str]:
    """The money figures of a call that are NaN or infinite (an amount argument, an estimate, the spend so far)."""
    figures = {
        "amount": facts.amount_usd,
        "estimated_cost_usd": facts.estimated_cost_usd,
        "spend_task_usd": facts.spend_task_usd,
        "spend_tenant_usd": facts.spend_tenant_usd,
        "paid_task_usd": facts.paid_task_usd,
        "paid_payee_usd": facts.paid_payee_usd,
        "paid_tenant_usd": facts.paid_tenant_usd,
        "refund_threshold_usd": threshold_usd,
    }
    return [
        f"{name} is not a finite number ({value!r})" for name, value in figures.items() if value is not None and not math.isfinite(value)
    ]


def _unpayable_amount(facts: Facts, spec: ToolSpec) -> str | None:
    """Why the call's amount cannot be paid as written, else None: not a whole number of cents, or beyond 10¹² USD.

    Systems of record pay in cents: 0.015 USD would be counted as 0.015 toward the tenant's bounds and paid as 0.01 or
    0.02, and 0.004 would be allowed and then fail in the system of record. The amount as the JSON carried it (its
    shortest decimal form) is checked, so 19.99 passes although 19.99 * 100 is not exactly 1999 in binary. An amount
    beyond 10¹² USD (the most a threshold may be set to) would overflow the 64-bit cents the pack compares.
    """
    amount, arg = facts.amount_usd, spec.facts.amount
    if amount is None or not math.isfinite(amount):
        return None
    if abs(amount) > MAX_AMOUNT_USD:
        return f"{arg} is {amount!r} USD, more than any amount Tidegate decides on ({MAX_AMOUNT_USD:.0e} USD)"
    written = Decimal(repr(amount))
    cents = written.quantize(Decimal("0.01"))
    if written == cents:
        return None
    return (
        f"{arg} is {amount!r} USD, not a whole number of cents: money is paid in cents, so it would be "
        f"counted as one amount and paid as another; give at most two decimals (e.g. {cents})"
    )


def cedar_context(call: Call, facts: Facts, risk: RiskClass, tenant: TenantSettings, approval_granted: bool) -> dict[str, Any]:
    """The Cedar request context; its shape is `cedar_schema.CONTEXT_TYPE`."""
    payee_daily, tenant_daily = tenant.payee_daily_threshold(), tenant.tenant_daily_payout()
    return {
        "tenant": call.tenant_id,
        "tool": call.tool,
        "risk": risk.value,
        "mode": facts.mode,
        "writes": risk is not RiskClass.READ,
        "facts": {
            "has_amount": facts.amount_usd is not None,
            "amount_cents": _cents(facts.amount_usd, "amount"),
            "has_payee": facts.payee is not None,
            "payee_is_new": facts.payee_is_new,
            "recipient_count": facts.recipient_count,
            "external_recipients": facts.external_recipients,
            "tainted": facts.tainted,
            "tainted_args": sorted(facts.tainted_important_args),
            "tainted_unseen": tainted_unseen_only(call, facts),
            "unseen_sources": unseen_sources(call.flow),
            "automation_tag": bool(facts.automation_tags),
            "automation_tags": sorted(facts.automation_tags),
            "documentation_present": facts.documentation_present,
            "sensitive_paths": bool(facts.sensitive_paths),
            "reviewed": facts.reviewed,
            "spend_task_cents": _cents(facts.spend_task_usd, "spend_task_usd"),
            "spend_tenant_cents": _cents(facts.spend_tenant_usd, "spend_tenant_usd"),
            "reversible": facts.reversible,
            "irreversible": facts.irreversible,
            "has_confidence": facts.confidence is not None,
            "confidence_pct": round((facts.confidence or 0.0) * 100),
            "has_record": facts.record_id is not None,
            "record_read": facts.record_read is not None,
            "within_record": facts.record_read is None or facts.record_read.within(facts.amount_usd),
            "record_id": facts.record_id or "",
            "record_read_failed": facts.record_read_failed is not None,
            "record_read_error": facts.record_read_failed.error if facts.record_read_failed is not None else "",
            "paid_task_cents": _cents(facts.paid_task_usd, "paid_task_usd"),
            "paid_payee_cents": _cents(facts.paid_payee_usd, "paid_payee_usd"),
            "paid_tenant_cents": _cents(facts.paid_tenant_usd, "paid_tenant_usd"),
        },
        "settings": {
            "refund_threshold_cents": _cents(tenant.refund_threshold_usd, "refund_threshold_usd"),
            "payee_daily_bounded": payee_daily is not None,
            "payee_daily_threshold_cents": _cents(payee_daily, "payee_daily_threshold_usd"),
            "tenant_daily_bounded": tenant_daily is not None,
            "tenant_daily_payout_cents": _cents(tenant_daily, "tenant_daily_payout_usd"),
            "allow_autonomous": tenant.allow_autonomous,
            "new_payee_escalates": tenant.triggers.new_payee.action == "escalate",
            "external_recipient": tenant.triggers.external_recipient.action,
            "permission_change_escalates": tenant.triggers.permission_change.action == "escalate",
            "min_confidence_pct": round(tenant.min_confidence * 100),
            "tool_error_limit": tenant.tool_error_limit,
            "retry_limit": tenant.retry_limit,
            "accept_irreversible": sorted(tenant.accept_irreversible),
        },
        "flow": call.flow.context(call.tool),
        "approval": {"granted": approval_granted},
    }


# The reason an escalation gives for a trigger → the tenant's choice for that trigger (approvers needed).
_TRIGGER_REASONS: dict[str, str] = {
    ReasonCode.NEW_PAYEE_REVIEW: "new_payee",
    ReasonCode.EXTERNAL_RECIPIENT: "external_recipient",
    ReasonCode.PERMISSION_CHANGE_REVIEW: "permission_change",
}


def approvers_required(reasons: tuple[Reason, ...], tenant: TenantSettings) -> int:
    """Distinct approvals an escalation needs: the most any of its triggers asks for (1 when none does)."""
    needed = [getattr(tenant.triggers, _TRIGGER_REASONS[r.code]).approvers for r in reasons if r.code in _TRIGGER_REASONS]
    return max(needed, default=1)


def tenant_settings(pack: CompiledPack, tenant_id: str, controls: Controls) -> TenantSettings:
    """The tenant's settings: its `control.tenant` record when there is one, else the pack's settings."""
    return controls.tenant if controls.tenant is not None else pack.tenant(tenant_id)


def _combine(fired: list[tuple[str, Reason]], version: str, **kw: Any) -> Verdict:
    for outcome in ("deny", "escalate", "allow"):
        reasons = tuple(r for o, r in fired if o == outcome)
        if reasons:
            return Verdict(outcome=outcome, reasons=reasons, policy_version=version, **kw)  # type: ignore[arg-type]
    none = Reason(code=ReasonCode.NO_PERMIT, policy_id="builtin:no-permit", message="no policy permits this call")
    return Verdict(outcome="deny", reasons=(none,), policy_version=version, **kw)


def _facts(pack: CompiledPack, call: Call, spec: ToolSpec, tenant: TenantSettings, history: History, controls: Controls) -> Facts:
    """The facts of `call` under `history`; a `control.budget` record overrides the tenant's budget from settings."""
    tenant_budget = controls.tenant_budget_usd if controls.tenant_budget_usd is not None else tenant.budget_usd
    undo = pack.catalog.get(spec.undo.tool) if spec.undo is not None and spec.undo.tool else None
    return compute_facts(
        call,
        spec,
        tenant,
        history,
        sensitive_patterns=pack.settings.sensitive_paths,
        tenant_budget_usd=tenant_budget,
        undo_granted=undo is None or undo.granted_to(call.tenant_id),
    )


def _budget_reasons(facts: Facts) -> list[Reason]:
    reasons = []
    for scope, spent, limit in (
        ("task", facts.spend_task_usd, facts.task_budget_usd),
        ("tenant", facts.spend_tenant_usd, facts.tenant_budget_usd),
    ):
        if limit is not None and spent + facts.estimated_cost_usd > limit + 1e-9:
            reasons.append(
                Reason(
                    code=ReasonCode.BUDGET_EXCEEDED,
                    policy_id=f"builtin:budget-{scope}",
                    message=f"{scope} spend {spent:.4f} + {facts.estimated_cost_usd:.4f} USD would exceed its {limit:.4f} USD budget",
                )
            )
    return reasons


def _context_text(context: dict[str, Any]) -> str:
    """The Cedar context as the JSON text Cedar parses, made once per request.

    cedarpy turns a context dict into text with `json.dumps` at every call; orjson writes the same JSON in a tenth of the
    time (the context holds strings, booleans, 64-bit integers, lists and records: `cedar_context`, no float).
    """
    try:  # the same request gives the same bytes: its dicts are built in one order (`cedar_context`)
        return orjson.dumps(context).decode()
    except TypeError:  # an integer beyond 64 bits, a lone surrogate: json writes them (Cedar reads what it can)
        return json.dumps(context)


def _evaluate(pack: CompiledPack, policy_set: Any, request: dict[str, Any]) -> list[tuple[str, Reason]]:
    """The policies of `policy_set` that fired for `request` (shadow ones included if the set has them), in pack order.

    Cedar's answer is a pure function of the policy set, the entities and the request: the pack
    remembers it per request as the pack reads it (exact, but for spend figures that no policy of the pack mentions:
    `reads_spend`), so a request seen before costs no evaluation. The policy sets are the pack's own (live, per tenant,
    shadow): their ids are stable while it lives. The whole context's text, made for the key of a pack that reads spend,
    is Cedar's too; Cedar's text is made only when it is asked (an answer not remembered).
    """
    context = request["context"]
    whole = _context_text(context) if pack.reads_spend else None
    read = whole if whole is not None else _context_text(context | {"facts": context["facts"] | dict.fromkeys(SPEND_FACTS, 0)})
    scope = tuple((request[part]["type"], request[part]["id"]) for part in ("principal", "action", "resource"))

    def answer() -> tuple[tuple[str, Reason], ...]:  # Cedar's text is made only for an answer not remembered
        return _cedar(pack, policy_set, request, _read_text(pack, policy_set, context, whole))

    return list(pack.remembered((id(policy_set), scope, read), answer))


def _read_text(pack: CompiledPack, policy_set: Any, context: dict[str, Any], whole: str | None) -> str:
    """The context's text as Cedar is given it: only what the policies of `policy_set` read (`context_read_for`), else all of it.

    A pack is checked against the context's schema, every attribute of which `cedar_context` always sets: no policy can
    read one that is not there, so what no policy of the set reads changes no answer and no error; Cedar only parses
    less (its parse of the context was over half of its cost a request). `whole`: the whole context's text when it was
    made already.
    """
    context_read = pack.context_read_for(policy_set)
    if context_read is not None:
        return _context_text(read_of(context, context_read))
    return whole if whole is not None else _context_text(context)


def _cedar(pack: CompiledPack, policy_set: Any, request: dict[str, Any], context_text: str) -> tuple[tuple[str, Reason], ...]:
    """Cedar's answer to `request`, its context given as `context_text` (the same context as JSON, `_context_text`)."""
    diagnostics = cedarpy.is_authorized(request | {"context": context_text}, policy_set, pack.entities).diagnostics
    fired: list[tuple[str, Reason]] = []
    if diagnostics.errors:
        message = "; ".join(diagnostics.errors)[:2000]
        fired.append(("deny", Reason(code=ReasonCode.POLICY_ERROR, policy_id="builtin:policy-error", message=message)))
    # Cedar reports the policies that fired as a set; list them in pack order, so a decision reads the
    # same every time (and whether or not the pack was sliced for this tenant).
    rules = []
    for generated in diagnostics.reasons:
        rule = pack.rules.get(diagnostics.id_annotations_by_reason.get(generated, ""))
        if rule is None:  # cannot happen for a compiled pack (every policy has an @id); fail closed anyway
            fired.append(("deny", Reason(code=ReasonCode.POLICY_ERROR, policy_id=generated, message="policy without @id fired")))
            continue
        rules.append(rule)
    return (
        *fired,
        *(
            (rule.outcome, Reason(code=rule.reason, policy_id=rule.policy_id, message=render_message(rule.message, request["context"])))
            for rule in sorted(rules, key=lambda r: r.position)
        ),
    )


def _shadow(pack: CompiledPack, request: dict[str, Any], live: list[tuple[str, Reason]], verdict: Verdict) -> dict[str, Any]:
    """What the pack would decide with its `@mode("shadow")` policies enforced: recorded beside the real outcome, never in place of it."""
    whole = _evaluate(pack, pack.shadow_set, request)
    guards = [(o, r) for o, r in live if r.policy_id.startswith("builtin:") and r.code is not ReasonCode.POLICY_ERROR]
    would = _combine(whole + guards, pack.version, risk=verdict.risk)
    fired = [r.policy_id for _, r in whole if (rule := pack.rules.get(r.policy_id)) is not None and rule.shadow]
    return {"outcome": would.outcome, "reasons": would.codes, "fired": fired, "flipped": would.outcome != verdict.outcome}


def _unknown_tool(tool: str, catalog: ToolCatalog) -> str:
    """Why a tool is unknown: not in the catalog this service read at start, which a tool added to the folder since is not."""
    when = f" at {catalog.loaded_at:%Y-%m-%d %H:%M:%S} UTC" if catalog.loaded_at is not None else ""
    return (
        f"tool {tool!r} is not in the catalog this service loaded{when} ({len(catalog)} tools): a tool added to the catalog "
        "folder since needs the services restarted, each reads it at start (`tidegate restart policy`, then executor, planner, "
        "approval, audit; a `topic` tool needs `tidegate topics ensure` first)"
    )


def _denied(pack: CompiledPack, call: Call, risk: RiskClass | None, code: ReasonCode, policy_id: str, message: str) -> Verdict:
    """A built-in guard's denial: one reason, no facts computed but the call's modes."""
    reason = Reason(code=code, policy_id=policy_id, message=message)
    return Verdict(outcome="deny", reasons=(reason,), policy_version=pack.version, risk=risk, facts=_modes(call))


def decide(
    pack: CompiledPack,
    call: Call,
    history: History,
    controls: Controls,
    *,
    approval_granted: bool = False,
    approvers: Mapping[str, Collection[str]] | None = None,
    fact_overrides: dict[str, Any] | None = None,
) -> Verdict:
    """Decide `call`; never raises on bad input (it becomes a deny with a reason).

    With `approvers` (the distinct humans a grant names, the requester already left out, each with the
    groups the grant shows them in), a grant is denied `approval_quorum_not_met` unless enough of them
    are in a group the tenant's `approver_groups` require for the risk class: as many as the class
    needs (`required_approvals`) or as the call's triggers ask for (`triggers.*.approvers`), whichever
    is more, whatever the approval service counted.
    """
    spec = pack.catalog.get(call.tool)
    if spec is None:
        return _denied(pack, call, None, ReasonCode.NO_PERMIT, "builtin:unknown-tool", _unknown_tool(call.tool, pack.catalog))
    if not spec.granted_to(call.tenant_id):
        return _denied(pack, call, spec.risk, ReasonCode.TOOL_NOT_GRANTED, "builtin:tool-tenants", _not_granted(spec, call.tenant_id))
    if (before := _before_not_granted(pack, spec, call.tenant_id)) is not None:
        # The executor calls the `before` read for the write's tenant, under the write's authorization: allowing the
        # write would run a tool the tenant may not call, and hand its answer to the tenant in the undo plan.
        return _denied(pack, call, spec.risk, ReasonCode.TOOL_NOT_GRANTED, "builtin:tool-tenants:before", before)
    errors = pack.arg_errors(call.tool, call.args)
    if errors:
        reason = Reason(code=ReasonCode.INVALID_ARGS, policy_id="builtin:args-schema", message="; ".join(errors)[:2000])
        return Verdict(
            outcome="deny",
            reasons=(reason,),
            policy_version=pack.version,
            risk=spec.risk,
            facts=_modes(call) | {"arg_errors": errors[:20]},
        )

    unknown = unknown_tainted_args(call)
    if unknown:
        return _denied(
            pack,
            call,
            spec.risk,
            ReasonCode.INVALID_ARGS,
            "builtin:tainted-args",
            f"tainted_args names paths that are not in args: {', '.join(unknown)[:500]}",
        )
    if controls.tenant is None and not pack.settings.onboarded(call.tenant_id):
        return _denied(
            pack,
            call,
            spec.risk,
            ReasonCode.TENANT_NOT_ONBOARDED,
            "builtin:tenant-not-onboarded",
            f"tenant {call.tenant_id!r} was never onboarded: run `tidegate tenant add {call.tenant_id} "
            "--internal-domain <domain> [--autonomous]` (a signed control.tenant record), then propose again",
        )
    if call.task_of_another is not None:
        return _denied(
            pack,
            call,
            spec.risk,
            ReasonCode.TASK_OF_ANOTHER_REQUESTER,
            "builtin:task-of-another-requester",
            f"task {call.task_id!r} is {call.task_of_another}'s (its request, or its earlier proposals, named them): a call is "
            "proposed in a task of its own requester only; submit the work under a task id of your own",
        )
    if call.flow.forgotten:
        return _denied(
            pack,
            call,
            spec.risk,
            ReasonCode.TASK_EXPIRED,
            "builtin:task-expired",
            f"task {call.task_id!r} began longer ago than the policy keeps a task's working state "
            "(TIDEGATE_POLICY_TASK_STATE_KEPT_S): what it read, and so what its arguments may carry, is no longer known; "
            "run the work as a new task",
        )
    tenant = tenant_settings(pack, call.tenant_id, controls)
    facts = _facts(pack, call, spec, tenant, history, controls)
    if fact_overrides:
        facts = dataclasses.replace(facts, **fact_overrides)
    non_finite = _non_finite_money(facts, tenant.refund_threshold_usd)
    if non_finite:  # NaN passes a JSON Schema `number`; no threshold or budget can be compared with it (fail closed)
        return _denied(pack, call, spec.risk, ReasonCode.INVALID_ARGS, "builtin:finite-money", "; ".join(non_finite)[:2000])
    if (unpayable := _unpayable_amount(facts, spec)) is not None:
        return _denied(pack, call, spec.risk, ReasonCode.INVALID_ARGS, "builtin:payable-amount", unpayable)
    record = facts.record() | {"approval_granted": approval_granted, "flow": call.flow.context(call.tool)}
    extra = {"risk": spec.risk, "facts": record, "estimated_cost_usd": facts.estimated_cost_usd, "mode": facts.mode}

    context = cedar_context(call, facts, spec.risk, tenant, approval_granted)
    request = {
        "principal": {"type": "Agent", "id": call.proposer},
        "action": {"type": "Action", "id": call.tool},
        "resource": {"type": "Tenant", "id": call.tenant_id},
        "context": context,
    }
    policy_set = pack.policy_set_for_call(call.tenant_id, call.tool)
    fired = _evaluate(pack, policy_set, request)
    guards: list[tuple[str, Reason]] = []
    if controls.killswitch is not None:
        ks = controls.killswitch.data
        guards.append(
            (
                "deny",
                Reason(
                    code=ReasonCode.KILL_SWITCH,
                    policy_id=f"builtin:killswitch:{ks.tenant_id}:{ks.tool}",
                    message=f"kill switch set by {ks.set_by}: {ks.reason}".strip(": "),
                ),
            )
        )
    guards += [("deny", r) for r in _budget_reasons(facts)]
    if approval_granted and approvers is not None:
        # What the call would ask of humans without the grant: its triggers may need more approvers than its class.
        asked = _evaluate(pack, policy_set, request | {"context": context | {"approval": {"granted": False}}})
        triggered = approvers_required(tuple(r for o, r in asked if o == "escalate"), tenant)
        guards += [("deny", r) for r in _quorum_reasons(tenant, spec.risk, approvers, triggered)]
    verdict = _combine(fired + guards, pack.version, **extra)
    if pack.shadow_set is not None:
        verdict.facts["shadow"] = _shadow(pack, request, fired + guards, verdict)
    if verdict.outcome == "escalate":
        choice = tenant.classes.get(spec.risk.value)
        if choice is not None and choice.action == "deny":  # the tenant wants no human route for this class
            codes = ", ".join(verdict.codes)
            message = f"the tenant denies what would escalate in class {spec.risk.value} (it would have escalated: {codes})"
            reason = Reason(code=ReasonCode.CLASS_ESCALATION_DENIED, policy_id=f"builtin:class:{spec.risk.value}", message=message)
            return dataclasses.replace(verdict, outcome="deny", reasons=(reason, *verdict.reasons))
        verdict.facts["approvers_required"] = max(approvers_required(verdict.reasons, tenant), tenant.approvers_for(spec.risk))
    return verdict


def _not_granted(spec: ToolSpec, tenant_id: str) -> str:
    """Why `tenant_id` may not call `spec`, and what to add to its catalog entry if it should."""
    if spec.tenants is None:
        return (
            f"tool {spec.name!r} (kind {spec.kind}, served outside the deployment) names no tenants, so no tenant may call it: "
            f'add `tenants: [{tenant_id}]` (or `tenants: ["*"]` for every tenant) to its catalog entry, then restart the services'
        )
    # The tenants it names are not said: the caller may be another tenant, who learns no other tenant's id here.
    return (
        f"tool {spec.name!r} is not granted to tenant {tenant_id!r} (its catalog entry's `tenants` do not name it): "
        f"if {tenant_id!r} may call it, add it to the entry's `tenants`, then restart the services"
    )


def _modes(call: Call) -> dict[str, Any]:
    """The facts of a call denied before its facts are computed: the mode asked for and the task's (what-if reads them)."""
    return {"mode": call.requested_mode, "task_mode": call.task_mode}


def _before_not_granted(pack: CompiledPack, spec: ToolSpec, tenant_id: str) -> str | None:
    """Why `tenant_id` may not have `spec` called: the read its undo makes before it (`undo.before`) is not granted to it; None: it is."""
    name = spec.undo.before.tool if spec.undo is not None and spec.undo.before is not None else None
    read = pack.catalog.get(name) if name is not None else None
    if name is None or (read is not None and read.granted_to(tenant_id)):
        return None
    # As `_not_granted`: the tenants the read names are not said (the caller may be another tenant).
    return (
        f"tool {spec.name!r} reads the state its undo restores with {name!r} (its catalog entry's `undo.before`), "
        f"which is not granted to tenant {tenant_id!r}: the write would run it for {tenant_id!r}; if {tenant_id!r} may call "
        f"{name!r}, add it to that entry's `tenants`, else give {spec.name!r} a `before` read {tenant_id!r} may call; "
        "then restart the services"
    )


def _quorum_reasons(tenant: TenantSettings, risk: RiskClass, approvers: Mapping[str, Collection[str]], triggered: int) -> list[Reason]:
    """Why a grant falls short: fewer approvers in the required groups than the class or the call's triggers need."""
    required = max(tenant.approvers_for(risk), triggered)
    groups = groups_counted(tenant.approver_groups, risk.value)
    counted = [a for a, held in approvers.items() if counts(groups, held)]
    if len(counted) >= required:
        return []
    message = f"{risk.value} needs {required} distinct approvers (the requester not counted)"
    if groups:
        message += f" in {', '.join(sorted(groups))}; the grant has {len(counted)} of them among {len(approvers)}"
    else:
        message += f"; the grant has {len(approvers)}"
    return [Reason(code=ReasonCode.APPROVAL_QUORUM_NOT_MET, policy_id=f"builtin:quorum:{risk.value}", message=message)]


def still_holds(pack: CompiledPack, call: Call, controls: Controls, seen: History, now: History) -> bool:
    """Whether the decision `decide` took on history `seen` is exactly the one it would take on `now`.

    True when the histories are equal, or when they differ only in spend figures that cannot change
    the outcome or its reasons: the pack never reads spend, and no budget guard fires on either
    history (a budget reason quotes the figures, so it is taken again). The figures recorded in the
    decision's facts are then those it saw. What was paid out is read by the default pack's thresholds: any change takes it again
    (what the tenant paid out without a human only for a call with an amount, the only ones whose facts carry it).
    """
    if seen == now:
        return True
    if (seen.payee_known, seen.paid_task_usd, seen.paid_payee_usd) != (now.payee_known, now.paid_task_usd, now.paid_payee_usd):
        return False
    spec = pack.catalog.get(call.tool)
    if seen.paid_tenant_usd != now.paid_tenant_usd and spec is not None and spec.facts.amount:
        return False
    if pack.reads_spend:
        return False
    if spec is None:
        return True  # an unknown tool is denied whatever the history
    tenant = tenant_settings(pack, call.tenant_id, controls)
    return not any(_budget_reasons(_facts(pack, call, spec, tenant, history, controls)) for history in (seen, now))
