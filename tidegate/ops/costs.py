"""Cost per outcome: what each completed task cost, what blocked, rejected and expired proposals cost, and human review time.

Computed from recorded events only (the task outcomes carry the planner's cost breakdown; proposals
carry model cost; results carry tool cost; approvals say who decided). Grouped by workflow, tenant
or tool. For `tool`, the unit is one executed call (its proposal's model cost plus the call's cost).

A task that closed completed with a refused action (`servicekit.task_outcomes`: handed to a human) is not a completed
outcome here: it is counted apart, as `completed_with_handoff`, and left out of the cost per completed outcome.
A request nobody answered is an expiry, counted apart from a human's rejection.

An outside agent's task (the client, an adapter, the MCP gateway: no planner behind it) has no outcome to count: its
calls are counted one by one instead (`outside_calls`: succeeded, failed, unknown, with what each cost), never as tasks.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from schemas import (
    ActionDecided,
    ActionProposed,
    ActionSucceeded,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRejected,
    ApprovalResolved,
    TaskCompleted,
    TaskFailed,
    TaskSubmitted,
)
from servicekit.costs import ReviewPrice
from servicekit.task_outcomes import outcome_of

__all__ = ["CostReport", "GroupCosts", "cost_report", "quantile", "save_chart"]

GroupBy = Literal["workflow", "tenant", "tool"]

_PLANNER = "tidegate/planner"  # the proposer of a planner task's proposals: `tidegate/planner/<strategy>`


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile of `values` (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class GroupCosts:
    """Costs of one workflow, tenant or tool."""

    name: str
    completed: list[float] = field(default_factory=list)
    handed_off: list[float] = field(default_factory=list)
    failed: list[float] = field(default_factory=list)
    blocked: int = 0
    blocked_usd: float = 0.0
    rejected: int = 0
    rejected_usd: float = 0.0
    expired: int = 0
    expired_usd: float = 0.0
    human_decisions: int = 0
    human_review_usd: float = 0.0
    outside_calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("succeeded", "failed", "unknown"), 0))
    outside_calls_usd: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "name": self.name,
            "completed": len(self.completed),
            "cost_per_completed_p50_usd": round(quantile(self.completed, 0.5), 6),
            "cost_per_completed_p95_usd": round(quantile(self.completed, 0.95), 6),
            "completed_total_usd": round(sum(self.completed), 6),
            "completed_with_handoff": len(self.handed_off),
            "completed_with_handoff_total_usd": round(sum(self.handed_off), 6),
            "failed": len(self.failed),
            "failed_total_usd": round(sum(self.failed), 6),
            "blocked_proposals": self.blocked,
            "blocked_usd": round(self.blocked_usd, 6),
            "rejected_proposals": self.rejected,
            "rejected_usd": round(self.rejected_usd, 6),
            "expired_proposals": self.expired,
            "expired_usd": round(self.expired_usd, 6),
            "human_decisions": self.human_decisions,
            "human_review_usd": round(self.human_review_usd, 6),
            "outside_agent_calls": dict(self.outside_calls),
            "outside_agent_calls_usd": round(self.outside_calls_usd, 6),
        }


@dataclass
class CostReport:
    """Costs of a window, by group."""

    by: str
    rate: ReviewPrice
    groups: dict[str, GroupCosts] = field(default_factory=dict)

    def group(self, name: str) -> GroupCosts:
        """The group called `name`, created on first use."""
        return self.groups.setdefault(name, GroupCosts(name))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        return {
            "by": self.by,
            "review_minutes_per_decision": self.rate.minutes_per_decision,
            "review_hourly_rate_usd": self.rate.hourly_rate_usd,
            "groups": [g.as_dict() for g in sorted(self.groups.values(), key=lambda g: g.name)],
        }


def cost_report(events: list[Any], *, by: GroupBy, rate: ReviewPrice | None = None) -> CostReport:
    """Aggregate recorded events (any order) into costs by `by`."""
    rate = rate or ReviewPrice()
    report = CostReport(by=by, rate=rate)
    workflow: dict[str, str] = {}
    proposals: dict[str, Any] = {}
    first_decision: dict[str, Any] = {}
    results: dict[str, Any] = {}
    outcomes: dict[str, Any] = {}
    decisions_by_humans: dict[str, Any] = {}
    for e in events:
        d = e.data
        if isinstance(e, TaskSubmitted):
            workflow[d.task_id] = d.workflow
        elif isinstance(e, TaskCompleted | TaskFailed):
            outcomes[d.task_id] = d
            workflow.setdefault(d.task_id, d.workflow)
        elif isinstance(e, ActionProposed):
            proposals.setdefault(d.action_id, d)
        elif isinstance(e, ActionDecided):
            if d.via == "policy":
                first_decision.setdefault(d.action_id, d)
        elif isinstance(e, ActionSucceeded) or e.type in ("tidegate.action.failed", "tidegate.action.unknown"):
            results.setdefault(d.action_id, d)
        elif isinstance(e, ApprovalGranted | ApprovalRejected | ApprovalExpired | ApprovalResolved):
            decisions_by_humans.setdefault(d.approval_id, e)

    def key_of(tenant: str, task: str, tool: str) -> str:
        if by == "tenant":
            return tenant
        if by == "workflow":
            return workflow.get(task, "unknown")
        return tool

    if by == "tool":
        for action_id, r in results.items():
            p = proposals.get(action_id)
            g = report.group(r.tool)
            cost = r.cost.usd + (p.cost.usd if p else 0.0)
            (g.completed if r.status == "succeeded" else g.failed).append(cost)
    else:
        for task_id, o in outcomes.items():
            g = report.group(key_of(o.tenant_id, task_id, ""))
            by_outcome = {"completed": g.completed, "completed_with_handoff": g.handed_off, "failed": g.failed}
            by_outcome[outcome_of(o.status, o.counts)].append(o.cost.total)
        for action_id, r in results.items():  # no outcome will count an outside agent's task: its calls, one by one
            p = proposals.get(action_id)
            if p is None or p.proposer.startswith(_PLANNER) or r.task_id in outcomes:
                continue  # a planner's call is counted with its task's outcome (a proposal before the window: not known whose)
            g = report.group(key_of(r.tenant_id, r.task_id, r.tool))
            g.outside_calls[r.status] += 1
            g.outside_calls_usd += r.cost.usd + p.cost.usd

    for action_id, dec in first_decision.items():
        if dec.outcome != "deny":
            continue
        p = proposals.get(action_id)
        g = report.group(key_of(dec.tenant_id, dec.task_id, dec.tool))
        g.blocked += 1
        g.blocked_usd += p.cost.usd if p else 0.0
    for e in decisions_by_humans.values():
        d = e.data
        g = report.group(key_of(d.tenant_id, d.task_id, d.tool))
        people = max(1, len(d.approvers)) if not isinstance(e, ApprovalExpired) else 0
        g.human_decisions += people
        g.human_review_usd += rate.usd(people)
        p = proposals.get(d.action_id)
        if isinstance(e, ApprovalRejected):  # a resolution is review work, not a refusal
            g.rejected += 1
            g.rejected_usd += (p.cost.usd if p else 0.0) + rate.usd(people)
        elif isinstance(e, ApprovalExpired):  # nobody decided: no review time, the proposal's cost is lost all the same
            g.expired += 1
            g.expired_usd += p.cost.usd if p else 0.0
    return report


def save_chart(report: CostReport, path: Path) -> Path:
    """A PNG: cost per completed outcome (p50 and p95) and where the rest of the money went, per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted(report.groups.values(), key=lambda g: g.name)
    names = [g.name for g in groups] or ["(no data)"]
    x = range(len(names))
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(11.0, 1.6 * len(names) + 5), 5.2), constrained_layout=True)
    p50 = [quantile(g.completed, 0.5) for g in groups] or [0.0]
    p95 = [quantile(g.completed, 0.95) for g in groups] or [0.0]
    width = 0.38

    def money(values: list[float]) -> list[str]:
        return [f"${v:.4g}" if v else "" for v in values]

    bars50 = left.bar([i - width / 2 for i in x], p50, width, label="p50", color="#4C78A8")
    bars95 = left.bar([i + width / 2 for i in x], p95, width, label="p95", color="#F58518")
    left.bar_label(bars50, labels=money(p50), fontsize=7, padding=2, rotation=90)
    left.bar_label(bars95, labels=money(p95), fontsize=7, padding=2, rotation=90)
    left.set_ylim(0, max([*p95, *p50, 1e-9]) * 1.35)
    left.yaxis.set_major_formatter(lambda v, _pos: f"${v:.4g}")
    left.set_title(f"Cost per completed {'outcome' if report.by != 'tool' else 'call'}, by {report.by}")
    left.set_ylabel("USD per outcome" if report.by != "tool" else "USD per executed call")
    left.set_xticks(list(x), names, rotation=20, ha="right")
    left.legend(loc="upper right", ncols=2)
    parts: dict[str, list[float]] = defaultdict(list)
    for g in groups:
        parts["completed work"].append(sum(g.completed))
        parts["handed-off tasks"].append(sum(g.handed_off))
        parts["failed tasks"].append(sum(g.failed))
        parts["blocked proposals"].append(g.blocked_usd)
        parts["rejected proposals (incl. review)"].append(g.rejected_usd)
        parts["expired proposals"].append(g.expired_usd)
        parts["outside agents' calls"].append(g.outside_calls_usd)
    colors = {"completed work": "#54A24B", "handed-off tasks": "#EECA3B", "failed tasks": "#B279A2", "blocked proposals": "#E45756",
              "rejected proposals (incl. review)": "#FF9DA6", "expired proposals": "#9D755D",
              "outside agents' calls": "#72B7B2"}  # fmt: skip
    bottom = [0.0] * len(groups)
    for label, values in parts.items():
        right.bar(list(x)[: len(values)], values, 0.6, bottom=bottom, label=label, color=colors[label])
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for i, total in enumerate(bottom):
        if total:
            right.annotate(f"${total:.4g}", (i, total), ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
    right.set_ylim(0, max([*bottom, 1e-9]) * 1.15)
    right.yaxis.set_major_formatter(lambda v, _pos: f"${v:.4g}")
    right.set_title(f"Where the money went, by {report.by}")
    right.set_ylabel(f"USD in window (review at ${report.rate.hourly_rate_usd:.0f}/h)")
    right.set_xticks(list(x), names, rotation=20, ha="right")
    right.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
