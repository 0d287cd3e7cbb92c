"""Prometheus metrics of every service, recorded generically by the bus from the events themselves.

No service code records a metric: `Bus.publish` calls `observe_published` with each outgoing event
and `Bus.handle_record` calls `observe_handled` with each handled one. A fact is counted where its
event is *published* (a decision by the policy service, a result by the executor, an outcome by the
planner), so summing a metric over every service's endpoint counts each fact once.

Names live in `METRICS` (name → help), the registry that `deploy/prometheus/alerts.yml` is checked
against; labels stay low in cardinality (tenant, tool, outcome, reason code, service, event type). Two labels carry a value an
agent chooses, a proposal's `tool` and a task's `workflow`: an unknown tool is counted `uncatalogued`, a task failed for
an unknown workflow `unknown`, and each label keeps at most `LABEL_VALUES_KEPT` distinct values (of at most
`LABEL_VALUE_MAX` printable characters), any other counted `other`, so made-up names cannot grow a service's memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from schemas import (
    ActionAuthorized,
    ActionDecided,
    ActionFailed,
    ActionProposed,
    ActionSucceeded,
    ActionUnknown,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    ApprovalResolved,
    EventRejected,
    TaskCompleted,
    TaskFailed,
)
from servicekit.task_outcomes import outcome_of

__all__ = [
    "LABEL_VALUES_KEPT",
    "LABEL_VALUE_MAX",
    "METRICS",
    "observe_audit_checkpoint_refused",
    "observe_audit_checkpoints",
    "observe_audit_conflict",
    "observe_audit_restore",
    "observe_broker_silence",
    "observe_database_retry",
    "observe_handled",
    "observe_published",
    "observe_repeats_unanswered",
    "observe_retaken",
    "observe_row_refused",
    "observe_webhook_owed",
]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_FANOUT_BUCKETS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 25, 50)
_COST_BUCKETS = (0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

EVENTS_PUBLISHED = Counter("tidegate_events_published", "Events published, by service and event type.", ["service", "event_type"])
EVENTS_HANDLED = Counter(
    "tidegate_events_handled",
    "Events consumed, by service, event type and result (ok, rejected, error).",
    ["service", "event_type", "result"],
)
HANDLER_LATENCY = Histogram(
    "tidegate_handler_latency_seconds",
    "Time a handler took per event, by service and event type.",
    ["service", "event_type"],
    buckets=_LATENCY_BUCKETS,
)
DECISIONS = Counter(
    "tidegate_decisions",
    "Policy decisions, by tenant, tool, outcome (allow, deny, escalate) and first reason code.",
    ["tenant", "tool", "outcome", "reason", "via"],
)
DECISION_LATENCY = Histogram(
    "tidegate_decision_latency_seconds",
    "Time the policy service took to decide, as recorded in action.decided.",
    ["outcome"],
    buckets=_LATENCY_BUCKETS,
)
AUTHORIZATIONS = Counter(
    "tidegate_authorizations", "Signed authorizations, by tenant, tool and via (policy, approval).", ["tenant", "tool", "via"]
)
APPROVALS = Counter(
    "tidegate_approvals", "Approval events, by tenant, tool and kind (requested, granted, rejected, expired).", ["tenant", "tool", "kind"]
)
RESULTS = Counter(
    "tidegate_action_results",
    "Results of authorized actions, by tenant, tool and status: succeeded, failed, unknown (calls made), or refused (the executor "
    "refused the authorization before any call: expired, kill switch, invalid args, unknown tool; by reason in "
    "tidegate_action_refusals_total). A refusal is not the tool's failure.",
    ["tenant", "tool", "status"],
)
REFUSALS = Counter(
    "tidegate_action_refusals",
    "Authorizations the executor refused before making any call, by tenant, tool and reason (authorization_expired: it was "
    "not run within its lifetime, e.g. the executor was down; kill_switch, invalid_args, unknown_tool).",
    ["tenant", "tool", "reason"],
)
RETRIES = Counter(
    "tidegate_action_retries", "Extra attempts of tool calls (attempts - 1 of each result), by tenant and tool.", ["tenant", "tool"]
)
TOOL_LATENCY = Histogram(
    "tidegate_tool_call_seconds",
    "Wall time of a tool call, as recorded in its result (duration_ms: the attempts of the executor that ended it).",
    ["tool", "status"],
    buckets=_LATENCY_BUCKETS,
)
SPEND = Counter("tidegate_spend_usd", "Money spent, USD: `model` (proposals), `tool` (results), by tenant.", ["tenant", "kind"])
OUTCOMES = Counter(
    "tidegate_task_outcomes",
    "Task outcomes, by tenant, workflow and status (completed, completed_with_handoff: completed with a refused action, failed).",
    ["tenant", "workflow", "status"],
)
TASK_COST = Histogram(
    "tidegate_task_cost_usd",
    "Total cost of a task (model, tools, retries, orchestration, human review), USD.",
    ["tenant", "workflow"],
    buckets=_COST_BUCKETS,
)
FANOUT = Histogram(
    "tidegate_task_tool_calls",
    "Tool calls executed per task (succeeded + failed + unknown).",
    ["tenant", "workflow"],
    buckets=_FANOUT_BUCKETS,
)
HUMAN_TOUCHES = Counter("tidegate_human_touches", "Human decisions tasks needed, by tenant and workflow.", ["tenant", "workflow"])
DEAD_LETTERS = Counter(
    "tidegate_dead_letters", "Messages sent to the dead-letter topic, by rejecting service and reason code.", ["service", "code"]
)
RETAKEN = Counter(
    "tidegate_policy_decisions_retaken",
    "Policy decisions taken again under the tenant's lock because another copy reserved spend since the snapshot, by tenant.",
    ["tenant"],
)
REPEATS_UNANSWERED = Counter(
    "tidegate_policy_repeats_unanswered",
    "Proposals of a call already decided that the policy service did not answer again, by tenant: it had published that "
    "action's decision less than TIDEGATE_POLICY_REPEAT_ANSWER_INTERVAL_S before (the answer is on actions.decided).",
    ["tenant"],
)

SHADOW = Counter(
    "tidegate_policy_shadow",
    'Decisions on which a `@mode("shadow")` policy fired, by tenant, tool, live outcome, the outcome it would have given, and flipped.',
    ["tenant", "tool", "outcome", "shadow_outcome", "flipped"],
)

APPROVAL_DECISION_SECONDS = Histogram(
    "tidegate_approval_decision_seconds",
    "Time from an approval request to a human's decision, by tenant, risk class and decision (granted, rejected).",
    ["tenant", "risk", "decision"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 86400),
)
APPROVALS_PENDING = Gauge(
    "tidegate_approvals_pending", "Approval requests waiting for a human, by tenant and risk class.", ["tenant", "risk"]
)
APPROVALS_PAST_SLO = Gauge(
    "tidegate_approvals_pending_past_slo",
    "Approval requests pending longer than the decision SLO (TIDEGATE_APPROVAL_DECISION_SLO_S), by tenant and risk class.",
    ["tenant", "risk"],
)
WEBHOOK_DELIVERIES = Counter(
    "tidegate_webhook_deliveries",
    "Webhook delivery attempts of the approval service, by tenant and status: delivered, retried (failed, tried again "
    "later) or failed (given up: out of attempts, or the request expired first).",
    ["tenant", "status"],
)
WEBHOOK_OWED = Gauge(
    "tidegate_webhook_messages_owed",
    "Approval requests still pending that a webhook endpoint whose row is refused has no message of, by tenant and endpoint: "
    "sent once an admin or operator registers the endpoint again.",
    ["tenant", "endpoint"],
)

ROWS_REFUSED = Counter(
    "tidegate_rows_refused",
    "Rows of a service's own database refused as authority because their proof (a signature by a key the database does not "
    "hold) is missing (`unsigned`) or does not verify (`invalid`), by service and table.",
    ["service", "table", "reason"],
)

BROKER_SILENT = Gauge(
    "tidegate_broker_silent_seconds",
    "Seconds since the broker last answered this service's checks (end offsets or metadata, every 5 s), while it does not; "
    "0 once it answers. By service.",
    ["service"],
)

CLOCK_OFFSET = Gauge(
    "tidegate_clock_offset_seconds",
    "How far this service's clock is from the broker's (positive: ahead), as the broker's append time in each produce "
    "acknowledgement bounds it (the bound nearest zero: never more than the true offset); past TIDEGATE_MAX_CLOCK_SKEW_S "
    "/health is 503. By service.",
    ["service"],
)

DATABASE_RETRIES = Counter(
    "tidegate_database_retries",
    "Transient database errors a service met handling a record and retried after (PostgreSQL down, restarting, refusing "
    "connections or the service's login), and its own unanswered asks of the database during an outage (every 2 s), by "
    "service: while it climbs the service waits on its database, its /health still 200.",
    ["service"],
)

AUDIT_CONFLICTS = Counter(
    "tidegate_audit_conflicts",
    "Records the bus delivered at a position the audit log is past that the log does not hold as delivered (the row there "
    "holds other content, or none): tamper evidence, recorded in audit.conflicts; a redelivery of a conflict an operator acknowledged "
    "is not counted again (`tidegate audit conflicts ack`). By topic.",
    ["topic"],
)

AUDIT_INVALID_RECORDS = Counter(
    "tidegate_audit_invalid_records",
    "Records the audit service stored as not valid events (not JSON, not its topic's contract, a signature that does not verify), "
    "by topic and reason code: kept raw in the log, as every record. `dead_lettered`: `true` on a topic a service consumes, "
    "which dead-letters the record too (counted in tidegate_dead_letters_total); `false` on one only the audit reads (the "
    "dead-letter topic, task outcomes, checkpoints), where this is its only trace.",
    ["topic", "reason", "dead_lettered"],
)

AUDIT_CHECKPOINTS_REFUSED = Counter(
    "tidegate_audit_checkpoints_refused",
    "Checkpoints the audit service signed that the database did not store, though no other copy of the service had taken "
    "their id (something refuses inserts into audit.checkpoints: a trigger, a rule, a revoked grant): the heads stay unsigned "
    "and every verify mode would accept a rewrite of them. Tried again at every tick, counted at each.",
)

AUDIT_CHECKPOINT_AGE = Gauge(
    "tidegate_audit_checkpoint_age_seconds",
    "Seconds since the newest checkpoint stored in audit.checkpoints was taken (none stored: since the audit service "
    "started), as the audit service saw it at its last tick.",
)

AUDIT_UNSIGNED_ROWS = Gauge(
    "tidegate_audit_unsigned_rows",
    "Rows of the audit log past the heads the newest stored checkpoint signed (its own checkpoint topic's chain left out): "
    "recorded, not signed yet.",
)

AUDIT_CHECKPOINT_INTERVAL = Gauge(
    "tidegate_audit_checkpoint_interval_seconds",
    "How often the audit service checks its chain heads and signs them if they moved (TIDEGATE_AUDIT_CHECKPOINT_INTERVAL_S).",
)

AUDIT_RESTORES = Counter(
    "tidegate_audit_restores",
    "Starts of the audit service that found its database behind the checkpoints published on the bus and took it for a "
    "restored backup (audit.restores): a restore the operators did, or checkpoints deleted from the database.",
)

_ALL: tuple[Any, ...] = (
    EVENTS_PUBLISHED, EVENTS_HANDLED, HANDLER_LATENCY, DECISIONS, DECISION_LATENCY, AUTHORIZATIONS, APPROVALS, RESULTS, REFUSALS, RETRIES,
    TOOL_LATENCY, SPEND, OUTCOMES, TASK_COST, FANOUT, HUMAN_TOUCHES, DEAD_LETTERS, RETAKEN, REPEATS_UNANSWERED, SHADOW,
    APPROVAL_DECISION_SECONDS, APPROVALS_PENDING, APPROVALS_PAST_SLO, WEBHOOK_DELIVERIES, BROKER_SILENT, CLOCK_OFFSET, AUDIT_CONFLICTS,
    ROWS_REFUSED, WEBHOOK_OWED, DATABASE_RETRIES, AUDIT_INVALID_RECORDS, AUDIT_CHECKPOINTS_REFUSED, AUDIT_CHECKPOINT_AGE,
    AUDIT_UNSIGNED_ROWS, AUDIT_CHECKPOINT_INTERVAL, AUDIT_RESTORES,
)  # fmt: skip

METRICS: dict[str, str] = {m._name + ("_total" if isinstance(m, Counter) else ""): m._documentation for m in _ALL}
"""Every exported metric family: exposition name (`_total` for counters; histograms add `_bucket`, `_sum`, `_count`) → help."""

_APPROVAL_KINDS = {
    ApprovalRequested: "requested",
    ApprovalGranted: "granted",
    ApprovalRejected: "rejected",
    ApprovalExpired: "expired",
    ApprovalResolved: "resolved",
}


LABEL_VALUES_KEPT = 200  # distinct values one agent-chosen label (`tool`, `workflow`) keeps in a process; later ones are `other`
LABEL_VALUE_MAX = 100  # characters of such a value; a longer one is `other`
_UNKNOWN_TOOL_RULE = "builtin:unknown-tool"  # the policy's denial of a tool its catalog does not name
_kept_values: dict[str, set[str]] = {}


def _bounded(label: str, value: str) -> str:
    """`value` as `label` may carry it: kept while the label has fewer than `LABEL_VALUES_KEPT` values, else `other`.

    A workflow is the name a task's submitter typed, a decision's tool the one a proposal named: one agent making up
    thousands a second would otherwise add series (each kept for the life of the process, served on every scrape)
    until the service runs out of memory.
    """
    kept = _kept_values.setdefault(label, set())
    if value in kept:
        return value
    if len(kept) >= LABEL_VALUES_KEPT or len(value) > LABEL_VALUE_MAX or not value.isprintable():
        return "other"
    kept.add(value)
    return value


def _decided_tool(data: Any) -> str:
    """A decision's tool label: `uncatalogued` when the policy denied it as a tool no catalog names."""
    if any(r.policy_id == _UNKNOWN_TOOL_RULE for r in data.reasons):
        return "uncatalogued"
    return _bounded("tool", data.tool)


def _workflow(data: Any) -> str:
    """A task outcome's workflow label: `unknown` when the planner failed it for a workflow it has no playbook of."""
    return "unknown" if data.reason == "unknown_workflow" else _bounded("workflow", data.workflow)


def _short(event_type: str) -> str:
    return event_type.removeprefix("tidegate.")


def observe_published(service: str, event: Any) -> None:
    """Count what one published event says; never raises (metrics must not break publishing)."""
    with contextlib.suppress(Exception):  # a metric is never worth a failed publish
        _observe(service, event)


def _observe(service: str, event: Any) -> None:
    event_type = getattr(event, "type", "unknown")
    published = _published.get((service, event_type))
    if published is None:
        published = _published[(service, event_type)] = EVENTS_PUBLISHED.labels(service, _short(event_type))
    published.inc()
    data = event.data
    if isinstance(event, ActionDecided):
        reason = data.reasons[0].code if data.reasons else "none"
        tool = _decided_tool(data)
        DECISIONS.labels(data.tenant_id, tool, data.outcome, str(reason), data.via).inc()
        DECISION_LATENCY.labels(data.outcome).observe(data.latency_ms / 1000.0)
        shadow = data.facts.get("shadow") if isinstance(data.facts, dict) else None
        if isinstance(shadow, dict) and shadow.get("fired"):
            flipped = "true" if shadow.get("flipped") else "false"
            SHADOW.labels(data.tenant_id, tool, data.outcome, str(shadow.get("outcome")), flipped).inc()
    elif isinstance(event, ActionProposed):
        if data.cost.usd:
            SPEND.labels(data.tenant_id, "model").inc(data.cost.usd)
    elif isinstance(event, ActionAuthorized):
        AUTHORIZATIONS.labels(data.tenant_id, data.tool, data.authorization.via).inc()
    elif isinstance(event, ActionSucceeded | ActionFailed | ActionUnknown):
        if (refusal := data.refusal) is not None:  # no call was made: neither the tool's failure nor a call's latency
            RESULTS.labels(data.tenant_id, data.tool, "refused").inc()
            REFUSALS.labels(data.tenant_id, data.tool, refusal).inc()
            return
        RESULTS.labels(data.tenant_id, data.tool, data.status).inc()
        if data.attempts > 1:
            RETRIES.labels(data.tenant_id, data.tool).inc(data.attempts - 1)
        TOOL_LATENCY.labels(data.tool, data.status).observe(data.duration_ms / 1000.0)
        if data.cost.usd:
            SPEND.labels(data.tenant_id, "tool").inc(data.cost.usd)
    elif isinstance(event, TaskCompleted | TaskFailed):
        workflow = _workflow(data)
        OUTCOMES.labels(data.tenant_id, workflow, outcome_of(data.status, data.counts)).inc()  # a hand-off apart
        TASK_COST.labels(data.tenant_id, workflow).observe(data.cost.total)
        c = data.counts
        FANOUT.labels(data.tenant_id, workflow).observe(c.succeeded + c.failed + c.unknown)
        if data.human_touches:
            HUMAN_TOUCHES.labels(data.tenant_id, workflow).inc(data.human_touches)
    elif isinstance(event, EventRejected):
        DEAD_LETTERS.labels(data.service, data.code).inc()
    elif type(event) in _APPROVAL_KINDS:
        APPROVALS.labels(data.tenant_id, data.tool, _APPROVAL_KINDS[type(event)]).inc()


# The labelled series every event touches, looked up once per label values (`labels` takes a lock and builds a
# key each time). The values come from the service's name and the catalog's types: a few dozen at most.
_handled: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_published: dict[tuple[str, str], Any] = {}


def observe_handled(service: str, event_type: str, seconds: float, result: str) -> None:
    """Count one handled event and its handler's latency; `result` is `ok`, `rejected` or `error`."""
    series = _handled.get((service, event_type, result))
    if series is None:
        short = _short(event_type)
        series = _handled[(service, event_type, result)] = (
            EVENTS_HANDLED.labels(service, short, result),
            HANDLER_LATENCY.labels(service, short),
        )
    series[0].inc()
    series[1].observe(seconds)


def observe_retaken(tenant: str, count: int) -> None:
    """Count decisions the policy service took again under a tenant's lock (copies competing for one tenant)."""
    with contextlib.suppress(Exception):
        RETAKEN.labels(tenant).inc(count)


def observe_repeats_unanswered(tenant: str, count: int) -> None:
    """Count proposals of decided calls the policy service did not answer again (their answer was published lately)."""
    with contextlib.suppress(Exception):
        REPEATS_UNANSWERED.labels(tenant).inc(count)


def observe_broker_silence(service: str, silent_s: Callable[[], float]) -> None:
    """Read `service`'s broker silence (`Liveness.silent_s`) at each scrape."""
    BROKER_SILENT.labels(service).set_function(silent_s)


def observe_clock_offset(service: str, clock: Any) -> None:
    """Read `service`'s clock offset from the broker's (`servicekit.clock.BrokerClock.offset_s`) at each scrape."""
    CLOCK_OFFSET.labels(service).set_function(lambda: clock.offset_s)


def observe_database_retry(service: str) -> None:
    """Count a transient database error `service` retried after (`servicekit.db.discard_broken_connections` sees each)."""
    with contextlib.suppress(Exception):
        DATABASE_RETRIES.labels(service).inc()


def observe_human_decision(tenant: str, risk: str, decision: str, seconds: float) -> None:
    """Time a human took to decide a request."""
    with contextlib.suppress(Exception):
        APPROVAL_DECISION_SECONDS.labels(tenant, risk, decision).observe(max(seconds, 0.0))


def observe_webhook_delivery(tenant: str, status: str) -> None:
    """Count one webhook delivery attempt's outcome (`delivered`, `retried` or `failed`) for the endpoint's tenant."""
    with contextlib.suppress(Exception):
        WEBHOOK_DELIVERIES.labels(tenant, status).inc()


def observe_webhook_owed(owed: dict[tuple[str, str], int]) -> None:
    """Set the owed-messages gauge from each refused endpoint's count, (tenant, endpoint) → count (others go to 0)."""
    with contextlib.suppress(Exception):
        for labels in [tuple(s.labels.values()) for m in WEBHOOK_OWED.collect() for s in m.samples]:
            WEBHOOK_OWED.labels(*labels).set(0)
        for (tenant, endpoint), count in owed.items():
            WEBHOOK_OWED.labels(tenant, endpoint).set(count)


def observe_row_refused(service: str, table: str, reason: str) -> None:
    """Count one row of `service`'s own schema refused as authority.

    `reason`: `unsigned` or `invalid`; connector grants (`connectors._access`) and the approval's webhook endpoints and tokens
    (`services.approval._pins`) also `rolled_back` and `unpinned`.
    """
    with contextlib.suppress(Exception):
        ROWS_REFUSED.labels(service, table, reason).inc()


def observe_audit_conflict(topic: str) -> None:
    """Count one conflict the audit service found (`services/audit/chain.py` `Conflict`)."""
    with contextlib.suppress(Exception):
        AUDIT_CONFLICTS.labels(topic).inc()


def observe_audit_invalid_record(topic: str, reason: str, *, dead_lettered: bool) -> None:
    """Count one record the audit service stored as not valid (`services/audit/handlers.py` `Recorder`); `reason` a code."""
    with contextlib.suppress(Exception):
        AUDIT_INVALID_RECORDS.labels(topic, reason, "true" if dead_lettered else "false").inc()


def observe_audit_checkpoint_refused() -> None:
    """Count one checkpoint the database did not store though its id was free (`services/audit/handlers.py` `Checkpointer`)."""
    with contextlib.suppress(Exception):
        AUDIT_CHECKPOINTS_REFUSED.inc()


def observe_audit_checkpoints(age_s: float, unsigned_rows: int, interval_s: float) -> None:
    """Set the age of the newest stored checkpoint, the rows past it and the checkpoint interval (the audit's checkpointer)."""
    with contextlib.suppress(Exception):
        AUDIT_CHECKPOINT_AGE.set(age_s)
        AUDIT_UNSIGNED_ROWS.set(unsigned_rows)
        AUDIT_CHECKPOINT_INTERVAL.set(interval_s)


def observe_audit_restore() -> None:
    """Count one start that took the audit's database for a restored backup (`Checkpointer.continue_after`)."""
    with contextlib.suppress(Exception):
        AUDIT_RESTORES.inc()


def observe_queue(by_tenant: dict[str, dict[str, dict[str, float]]]) -> None:
    """Set the pending and past-SLO gauges from each tenant's queue by risk class (gauges of a queue now empty go to 0)."""
    with contextlib.suppress(Exception):
        for gauge in (APPROVALS_PENDING, APPROVALS_PAST_SLO):
            for labels in [tuple(s.labels.values()) for m in gauge.collect() for s in m.samples]:
                gauge.labels(*labels).set(0)
        for tenant, risks in by_tenant.items():
            for risk, row in risks.items():
                APPROVALS_PENDING.labels(tenant, risk).set(row["pending"])
                APPROVALS_PAST_SLO.labels(tenant, risk).set(row["past_slo"])
