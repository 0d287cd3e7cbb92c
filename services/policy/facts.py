"""Facts computed before evaluation: what a rule needs to know about a call beyond its tool and args.

Pure functions of the call, the tool's catalog entry, the tenant's settings and the history the
repository read; the facts go into the Cedar context and, for explainability, into `action.decided`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from schemas import ActionProposedData, Mode, RiskClass, ToolSpec
from servicekit.costs import estimated_cost_usd
from servicekit.identities import Identity, identities_of, is_address, values_at
from servicekit.provenance import Finding, Provenance, arg_leaves
from services.policy.tenant_settings import TenantSettings

__all__ = [
    "Call",
    "Facts",
    "FailedRead",
    "Flow",
    "History",
    "SystemRecord",
    "arg_at",
    "compute_facts",
    "effective_mode",
    "is_internal",
    "payee_of",
    "stricter",
    "unknown_tainted_args",
]

_MISSING = object()


@dataclass(frozen=True)
class Flow:
    """The task's history as the policy sees it: tools called and how often, untrusted content read, external sends and amounts so far."""

    tool_calls: tuple[tuple[str, int], ...] = ()  # tool → calls allowed so far
    untrusted_read: bool = False
    external_sends: int = 0  # allowed calls that sent to someone outside the directory
    sent_amount_usd: float = 0.0  # amounts of allowed financial calls
    last_decisions: tuple[tuple[str, str], ...] = ()  # tool → outcome of its latest decision
    unseen_results: tuple[str, ...] = ()  # untrusted-output calls authorized but whose result the service has not seen
    unseen_task: bool = False  # a planner's proposal whose task's request the service has not seen (what it carries is unknown)
    forgotten: bool = False  # the task began longer ago than the service keeps a task's working state: nothing is decided for it
    retries: int = 0  # attempts beyond the first of the task's calls, as their results report
    tool_errors: int = 0  # the task's calls that ended failed or unknown

    def context(self, tool: str) -> dict[str, Any]:
        """The Cedar `context.flow` record for a call of `tool` (shape: `cedar_schema.CONTEXT_TYPE`)."""
        calls = dict(self.tool_calls)
        return {
            "untrusted_read": self.untrusted_read,
            "calls": sum(calls.values()),
            "tool_calls": calls.get(tool, 0),
            "tools_called": sorted(calls),
            "external_sends": self.external_sends,
            "sent_amount_cents": round(self.sent_amount_usd * 100),
            "last_decision": dict(self.last_decisions).get(tool, ""),
            "retries": self.retries,
            "tool_errors": self.tool_errors,
            "task_unseen": self.unseen_task,
        }

    @classmethod
    def of(cls, decisions: list[tuple[str, str, dict[str, Any]]], untrusted_read: bool, troubles: tuple[int, int] = (0, 0)) -> Flow:
        """From the task's earlier decisions, oldest first, as (tool, outcome, facts), and its (retries, tool errors) so far."""
        calls: dict[str, int] = {}
        last: dict[str, str] = {}
        sends, amount = 0, 0.0
        for tool, outcome, facts in decisions:
            last[tool] = outcome
            if outcome != "allow":
                continue
            calls[tool] = calls.get(tool, 0) + 1
            sends += 1 if (facts.get("external_recipients") or 0) > 0 else 0
            amount += float(facts.get("amount_usd") or 0.0)
        return cls(
            tuple(sorted(calls.items())),
            untrusted_read,
            sends,
            round(amount, 6),
            tuple(sorted(last.items())),
            retries=troubles[0],
            tool_errors=troubles[1],
        )


@dataclass(frozen=True)
class SystemRecord:
    """What a trusted read of the tenant's system of record said of an entry (a charge): what is left and its currency."""

    amount_usd: float
    currency: str
    source: str  # which read said so

    def within(self, amount_usd: float | None) -> bool:
        """Whether a call of `amount_usd` (Tidegate's amounts are USD) fits the entry: same currency, no more than is left."""
        return self.currency.lower() == "usd" and (amount_usd is None or round(amount_usd * 100) <= round(self.amount_usd * 100))


@dataclass(frozen=True)
class FailedRead:
    """A trusted read of the system of record the task tried and that failed (the system down, say): why, as the executor said."""

    error: str  # the executor's error and how many attempts it made
    source: str  # which read it was

    @classmethod
    def entries(cls, tool: str, args: Mapping[str, Any], error: str, action_id: str = "") -> dict[str, FailedRead]:
        """The failed read by each entry it may have asked for: every text value of its args (a charge id, say).

        A read's catalog entry names its entry's id in the result (`records.key`), which a failed read has not;
        its args name the entry. A value that is no entry's id matches no call's `facts.record`, so it is harmless.
        """
        read = cls(error, f"{tool} (action {action_id})" if action_id else tool)
        return {str(value): read for _, value in arg_leaves(dict(args)) if isinstance(value, str) and value}


@dataclass(frozen=True)
class Call:
    """The tool call under evaluation, as proposed (or as an approver edited it)."""

    tenant_id: str
    task_id: str
    tool: str
    args: dict[str, Any]
    proposer: str
    tainted_args: tuple[str, ...] = ()
    mode: Mode = "draft"  # as proposed: it can make the task stricter, never looser (`requested_mode`)
    rationale: str = field(default="", compare=False)  # the agent's, carried to the decision for the approver; never decided on
    model_cost_usd: float = 0.0
    task_budget_usd: float | None = None
    confidence: float | None = None  # the proposer's, 0–1; None: not given
    provenance: Provenance = field(default_factory=Provenance, compare=False)  # what the task has read (the service loads it)
    flow: Flow = field(default_factory=Flow)  # what the task did before (the service loads it)
    records: Mapping[str, SystemRecord] = field(
        default_factory=dict, compare=False
    )  # entries the task read, by id (the service loads them)
    failed_reads: Mapping[str, FailedRead] = field(
        default_factory=dict, compare=False
    )  # entries whose read the task tried and that failed, by id (the service loads them)
    # The mode the task's signed request asked for (`task.submitted`, the service loads it); None: no task learned.
    task_mode: Mode | None = None
    # Whose the task is, when the proposal names another requester or two requesters used the task id (the service sets
    # it, `TaskContext.owned_by_another`): denied.
    task_of_another: str | None = None

    @property
    def requested_mode(self) -> Mode:
        """The mode asked for: the stricter of the proposal's and its task's request's (the tenant may lower it further)."""
        return stricter(self.mode, self.task_mode)

    @classmethod
    def from_proposal(cls, p: ActionProposedData) -> Call:
        """The call an `action.proposed` asks for."""
        return cls(
            tenant_id=p.tenant_id,
            task_id=p.task_id,
            tool=p.tool,
            args=p.args,
            proposer=p.proposer,
            tainted_args=tuple(p.tainted_args),
            mode=p.mode,
            rationale=p.rationale,
            model_cost_usd=p.cost.usd,
            task_budget_usd=p.budget_usd,
            confidence=p.confidence,
        )


@dataclass(frozen=True)
class History:
    """What the policy schema knows at decision time: is the payee known, what has been spent, what has been paid out.

    Read in the decision's unit of work (under the tenant's lock, each call of a batch seeing those before it), unlike
    `Flow`: a split refund cannot slip two pieces past the threshold by arriving together.
    """

    payee_known: bool = False
    spend_task_usd: float = 0.0
    spend_tenant_usd: float = 0.0
    paid_task_usd: float = 0.0  # amounts of the task's allowed calls (money it let out, whatever became of it)
    paid_payee_usd: float = 0.0  # amounts the tenant's allowed calls paid this call's payee over `PAYOUT_WINDOW`, any task
    # Amounts the tenant's calls allowed without a human grant paid out over `PAYOUT_WINDOW`, any task and payee.
    paid_tenant_usd: float = 0.0


@dataclass(frozen=True)
class Facts:
    """Everything computed about a call before the policies see it."""

    mode: Mode
    amount_usd: float | None
    payee: str | None
    payee_is_new: bool
    recipient_count: int
    external_recipients: int
    counterparties: tuple[tuple[str, str, str, bool], ...]  # (arg, kind, normalised value, internal)
    tainted: bool
    tainted_important_args: tuple[str, ...]
    taint: tuple[Finding, ...]  # args derived from untrusted content, as Tidegate computed them
    documentation_present: bool
    sensitive_paths: tuple[str, ...]
    reviewed: bool
    spend_task_usd: float
    spend_tenant_usd: float
    estimated_cost_usd: float
    task_budget_usd: float | None
    tenant_budget_usd: float | None
    record_id: str | None = None  # the system-of-record entry the call acts on (its `facts.record` arg)
    record_read: SystemRecord | None = None  # what a trusted read of that entry earlier in the task said
    reversible: bool = False  # the catalog names a tool that undoes the call
    irreversible: bool = False  # a write the catalog declares irreversible (no tool undoes it)
    confidence: float | None = None
    record_read_failed: FailedRead | None = None  # the entry was not read: the task's read of it failed, and why
    task_mode: Mode | None = None  # the mode the task's signed request asked for (None: no task learned); `mode` is at most it
    undo_not_granted: str | None = None  # the tool that would undo the call, not granted to the tenant: no rollback path
    paid_task_usd: float = 0.0  # what the task's allowed calls paid out before this one (`History.paid_task_usd`)
    paid_payee_usd: float = 0.0  # what the tenant paid this payee over the window before this call, any task
    paid_tenant_usd: float = 0.0  # what the tenant paid out over the window without a human before this call (with an amount)
    automation_tags: tuple[str, ...] = ()  # tags the call adds that the tenant's automations act on (`automation_tags`)
    # The instruction-like passages of the sources `taint` was read in (`Provenance.passages`): what the email said to the agent.
    untrusted_passages: tuple[Mapping[str, Any], ...] = ()

    def record(self) -> dict[str, Any]:
        """The facts as JSON-ready data for `action.decided.facts`."""
        doc = {name: getattr(self, name) for name in _FACT_NAMES}
        doc["tainted_important_args"] = list(self.tainted_important_args)
        doc["sensitive_paths"] = list(self.sensitive_paths)
        doc["automation_tags"] = list(self.automation_tags)
        doc["taint"] = [f.record() for f in self.taint]
        doc["untrusted_passages"] = [dict(p) for p in self.untrusted_passages]
        doc["record_read"] = asdict(self.record_read) if self.record_read is not None else None
        doc["record_read_failed"] = asdict(self.record_read_failed) if self.record_read_failed is not None else None
        doc["counterparties"] = [{"arg": a, "kind": k, "value": v, "internal": i} for a, k, v, i in self.counterparties]
        return doc


_FACT_NAMES = tuple(f.name for f in fields(Facts))


def arg_at(args: dict[str, Any], path: str) -> Any:
    """The value at a dot path in args, or None when absent."""
    value: Any = args
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def payee_of(spec: ToolSpec | None, args: dict[str, Any]) -> str | None:
    """The payee a call pays, when its tool declares one; the repository looks it up before deciding."""
    if spec is None:
        return None
    arg = spec.facts.payee or next((a for a, kind in spec.facts.counterparties.items() if kind == "payee"), None)
    if arg is None:
        return None
    value = arg_at(args, arg)
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) and str(value) else None


def stricter(mode: Mode, *others: Mode | None) -> Mode:
    """The strictest of the modes (None: not said): draft when any is draft."""
    return "draft" if "draft" in (mode, *others) else "autonomous"


def effective_mode(requested: Mode, tenant: TenantSettings) -> Mode:
    """Autonomy is a request: a tenant whose settings do not allow it runs in draft mode."""
    return "autonomous" if requested == "autonomous" and tenant.allow_autonomous else "draft"


_ADDRESSED = ("email", "chat_user", "chat_channel", "repository")  # kinds that receive what a call sends: its recipients
_OUTSIDE = ("email", "chat_user", "chat_channel", "url", "organisation", "repository")  # kinds the tenant's directory can vouch for


def _under(host: str, domains: list[str]) -> bool:
    return bool(host) and any(host == d.lower().strip(".") or host.endswith("." + d.lower().strip(".")) for d in domains if d)


def is_internal(identity: Identity, tenant: TenantSettings) -> bool:
    """Whether the tenant's directory says this counterparty is its own (an email domain, chat member or channel, site, organisation)."""
    kind, value = identity.kind, identity.value
    if kind == "email":
        return value in {c.strip().lower() for c in tenant.known_contacts} or (
            is_address(value) and _under(value.rsplit("@", 1)[1], tenant.internal_domains)
        )
    if kind == "chat_user":
        return value in {m.lstrip("@").casefold() for m in tenant.chat_members}
    if kind == "chat_channel":
        return value in {c.lstrip("#").casefold() for c in tenant.chat_channels}
    if kind == "url":
        return _under(value, tenant.allowed_sites + tenant.internal_domains)
    if kind in ("organisation", "repository"):  # a repository by its owner: one of the tenant's organisations
        return value in {" ".join(o.casefold().split()) for o in tenant.organisations}
    if kind == "payee":
        return value in tenant.known_payees
    return True  # paths are judged by the sensitive-path patterns, not the directory


def _sensitive(path: str, patterns: list[str]) -> bool:
    if path == ".." or path.startswith("../"):
        return True  # climbs out of the repository: never an ordinary change
    return any(fnmatch.fnmatchcase(path, pattern.casefold().lstrip("/")) for pattern in patterns)


def unseen_sources(flow: Flow) -> list[str]:
    """What the task read that the service had not seen when it decided: its request, the results of untrusted reads."""
    unseen = ["the task's request"] if flow.unseen_task else []
    return unseen + (["the results of " + ", ".join(flow.unseen_results)] if flow.unseen_results else [])


def tainted_unseen_only(call: Call, facts: Facts) -> bool:
    """Whether the call's tainted important args are so only because what the task read was not seen (`unseen_sources`).

    None of them traced to content seen, nor declared by the agent: where their values came from is not known, which the
    `tainted_argument` message then says instead of "came from content the task read" (leftovers22 #5).
    """
    known = tuple(dict.fromkeys([*call.tainted_args, *(t.arg for t in facts.taint if not t.unseen)]))
    return bool(facts.tainted_important_args) and not _tainted_important(known, list(facts.tainted_important_args))


def _tainted_important(tainted: tuple[str, ...], important: list[str]) -> tuple[str, ...]:
    hits = []
    for arg in important:
        if any(t == arg or t.startswith(arg + ".") or arg.startswith(t + ".") for t in tainted):
            hits.append(arg)
    return tuple(hits)


def unknown_tainted_args(call: Call) -> list[str]:
    """Paths in the agent's `tainted_args` that name nothing in args (an error, not silently ignored)."""
    if not call.tainted_args:
        return []
    paths = {p for p, _ in arg_leaves(call.args)}
    return [t for t in call.tainted_args if not any(p == t or p.startswith(t + ".") for p in paths)]


def _vouched(tenant: TenantSettings) -> Callable[[str], bool]:
    """Whether the tenant's directory vouches for a normalised value (its domains, sites, members, channels, organisations).

    Never its known payees: "known" says the tenant has paid them before, not that this request is theirs; a payee
    only untrusted content named stays tainted (only the request's trusted fields vouch for it).
    """
    hosts = [d.lower().strip(".") for d in tenant.internal_domains + tenant.allowed_sites]
    names = {" ".join(o.casefold().split()) for o in tenant.organisations}
    # A one-word organisation is also a word: the owner of the tenant's own repository (`acme` of `acme/web`).
    words = {m.lstrip("@#").casefold() for m in tenant.chat_members + tenant.chat_channels} | {n for n in names if " " not in n}
    contacts = {c.strip().lower() for c in tenant.known_contacts}

    def vouched(value: str) -> bool:
        kind, _, v = value.partition(":")
        if kind == "email":
            return v in contacts or (is_address(v) and _under(v.rsplit("@", 1)[-1], hosts[: len(tenant.internal_domains)]))
        if kind == "host":
            return _under(v, hosts)
        if kind in ("word", "id", "account"):
            return v.casefold() in words
        if kind == "name":
            return v in names or v.replace(" ", "") in words
        return False

    return vouched


def _acts(spec: ToolSpec) -> bool:
    """Whether a call of the tool sends data out or acts: every write, and a read that reaches an outside URL."""
    return spec.risk is not RiskClass.READ or any(k == "url" for k in spec.facts.declared_counterparties().values())


def _important(spec: ToolSpec) -> list[str]:
    """Args whose taint escalates: every counterparty (the payee included) and those the catalog lists as `important`.

    An amount is important only where the catalog says so: paid to a counterparty the tenant knows and
    under its threshold, an amount read in a bill is the bill's, and the threshold bounds the rest.
    """
    f = spec.facts
    declared = f.declared_counterparties()
    if spec.risk is RiskClass.READ:  # a read only matters where it reaches out
        return [a for a, k in declared.items() if k == "url"]
    return list(dict.fromkeys([*f.important, *declared]))


def _amount(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _automation_tags(args: Mapping[str, Any], labels: str | None, listed: list[str]) -> tuple[str, ...]:
    """The tags at the `labels` arg that the tenant's automations act on, case-folded, in the call's order."""
    if not labels or not listed:
        return ()
    watched = {t.casefold() for t in listed}
    added = [v.casefold() for v in values_at(args, labels) if isinstance(v, str)]
    return tuple(dict.fromkeys(t for t in added if t in watched))


def compute_facts(
    call: Call,
    spec: ToolSpec,
    tenant: TenantSettings,
    history: History,
    *,
    sensitive_patterns: list[str],
    tenant_budget_usd: float | None,
    undo_granted: bool = True,
) -> Facts:
    """The facts of `call`; every value is defined (absent inputs give neutral values), so no policy meets a missing attribute.

    `undo_granted`: whether the tenant may call the tool that undoes the call (catalog `undo.tool`); an undo it may not
    call would always be denied, so the call has no rollback path (not `reversible`).
    """
    f = spec.facts
    named = identities_of(call.args, f.declared_counterparties())
    recipients = [i for i in named if i.kind in _ADDRESSED]
    outside = [i for i in named if i.kind in _OUTSIDE and not is_internal(i, tenant)]
    paths = [i.value for i in named if i.kind == "path"]
    documentation = arg_at(call.args, f.documentation) if f.documentation else _MISSING
    payee = payee_of(spec, call.args)
    record = arg_at(call.args, f.record) if f.record else None
    record = str(record) if record not in (None, "") else None
    read = call.records.get(record) if record is not None else None
    taint = call.provenance.findings(call.args, f.declared_counterparties(), _vouched(tenant))
    if unseen := unseen_sources(call.flow):  # what those read is unknown: any counterparty may come from it (fail closed)
        source = " and ".join(unseen) + ", not seen yet"
        vouched = _vouched(tenant)
        taint += [
            Finding(i.arg, f"{i.kind}:{i.value}", source, unseen=True)
            for i in identities_of(call.args, f.declared_counterparties())
            if (i.kind == "payee" or not is_internal(i, tenant)) and not vouched(f"{i.kind}:{i.value}")  # a known payee is not vouched
        ]
    tainted_paths = tuple(dict.fromkeys([*call.tainted_args, *(t.arg for t in taint)]))
    important_taint = _tainted_important(tainted_paths, _important(spec)) if _acts(spec) else ()
    return Facts(
        mode=effective_mode(call.requested_mode, tenant),
        amount_usd=_amount(arg_at(call.args, f.amount)) if f.amount else None,
        payee=payee,
        payee_is_new=payee is not None and payee not in tenant.known_payees and not history.payee_known,
        recipient_count=len(recipients),
        external_recipients=len(outside),
        counterparties=tuple((i.arg, i.kind, i.value, is_internal(i, tenant)) for i in named),
        tainted=bool(important_taint),
        tainted_important_args=important_taint,
        taint=tuple(taint),
        untrusted_passages=tuple(call.provenance.passages(taint)),
        # A tool that names no documentation arg needs none; one that does needs a non-empty value.
        documentation_present=documentation is _MISSING or documentation not in (None, "", [], {}),
        sensitive_paths=tuple(p for p in paths if _sensitive(p, sensitive_patterns)),
        reviewed=f.reviewed,
        spend_task_usd=round(history.spend_task_usd, 6),
        spend_tenant_usd=round(history.spend_tenant_usd, 6),
        estimated_cost_usd=estimated_cost_usd(spec.cost_usd, call.model_cost_usd),
        task_budget_usd=call.task_budget_usd,
        tenant_budget_usd=tenant_budget_usd,
        record_id=record,
        record_read=read,
        reversible=spec.undo is not None and spec.undo.reversible and undo_granted,
        irreversible=spec.writes and spec.undo is not None and not spec.undo.reversible,
        confidence=call.confidence,
        record_read_failed=call.failed_reads.get(record) if record is not None and read is None else None,
        task_mode=call.task_mode,
        undo_not_granted=spec.undo.tool if spec.undo is not None and spec.undo.tool and not undo_granted else None,
        paid_task_usd=round(history.paid_task_usd, 6),
        paid_payee_usd=round(history.paid_payee_usd, 6) if payee is not None else 0.0,
        paid_tenant_usd=round(history.paid_tenant_usd, 6) if f.amount else 0.0,
        automation_tags=_automation_tags(call.args, f.labels, tenant.automation_tags),
    )
