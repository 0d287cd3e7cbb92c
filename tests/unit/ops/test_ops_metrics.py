"""The bus records Prometheus metrics from the events it publishes and handles, with no service code involved."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from fake_producer import KeepingProducer
from prometheus_client import REGISTRY

import schemas as s
from servicekit import REPO_ROOT, Bus, Reject
from servicekit.metrics import METRICS


@dataclass
class FakeRecord:
    topic: str
    value: bytes
    partition: int = 0
    offset: int = 7
    key: bytes | None = b"t-1"
    headers: tuple[tuple[str, bytes], ...] = ()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def bus(service: str) -> Bus:
    return Bus(KeepingProducer(), service, "unused:1", "p.")


def decided(tenant: str, outcome: str, code: str) -> s.ActionDecided:
    data = s.ActionDecidedData(
        action_id="a-1", task_id="t-1", tenant_id=tenant, tool="issue_refund", args={}, action_digest="d", outcome=outcome,  # type: ignore[arg-type]
        reasons=[s.Reason(code=s.ReasonCode(code), policy_id="p")], policy_version="v", latency_ms=3.0,
    )  # fmt: skip
    return s.ActionDecided.build(data, source="tidegate/policy")


async def test_decisions_are_counted_by_outcome_and_reason() -> None:
    before = sample(
        "tidegate_decisions_total", tenant="m-acme", tool="issue_refund", outcome="escalate", reason="needs_human_approval", via="policy"
    )
    await bus("policy").publish("actions.decided", decided("m-acme", "escalate", "needs_human_approval"))
    await bus("policy").publish("actions.decided", decided("m-acme", "escalate", "needs_human_approval"))
    await bus("policy").publish("actions.decided", decided("m-acme", "allow", "within_threshold"))
    after = sample(
        "tidegate_decisions_total", tenant="m-acme", tool="issue_refund", outcome="escalate", reason="needs_human_approval", via="policy"
    )
    assert after - before == 2
    assert (
        sample("tidegate_decisions_total", tenant="m-acme", tool="issue_refund", outcome="allow", reason="within_threshold", via="policy")
        >= 1
    )


async def test_results_count_status_retries_and_spend() -> None:
    data = s.ActionResultData(
        action_id="a-2", task_id="t-2", tenant_id="m-res", tool="send_email", status="succeeded", attempts=3, duration_ms=40.0,
        cost=s.ResultCost(usd=0.25),
    )  # fmt: skip
    await bus("executor").publish("actions.results", s.ActionSucceeded.build(data, source="tidegate/executor"))
    assert sample("tidegate_action_results_total", tenant="m-res", tool="send_email", status="succeeded") == 1
    assert sample("tidegate_action_retries_total", tenant="m-res", tool="send_email") == 2
    assert sample("tidegate_spend_usd_total", tenant="m-res", kind="tool") == 0.25


async def test_outcomes_observe_cost_and_fanout() -> None:
    data = s.TaskOutcomeData(
        task_id="t-3", tenant_id="m-out", workflow="wf", status="completed", summary="ok", duration_ms=1.0, human_touches=1,
        counts=s.ActionCounts(succeeded=3, failed=1), cost=s.TaskCost(total=0.07),
    )  # fmt: skip
    await bus("planner").publish("tasks.outcomes", s.TaskCompleted.build(data, source="tidegate/planner"))
    assert sample("tidegate_task_tool_calls_sum", tenant="m-out", workflow="wf") == 4
    assert sample("tidegate_task_cost_usd_sum", tenant="m-out", workflow="wf") == 0.07
    assert sample("tidegate_task_outcomes_total", tenant="m-out", workflow="wf", status="completed") == 1


async def test_handler_latency_and_dead_letters_by_code() -> None:
    b = bus("m-svc")
    proposal = s.ActionProposedData(action_id="a", task_id="t", tenant_id="acme", step=1, tool="tag_ticket", args={}, proposer="x")
    raw = s.encode(s.ActionProposed.build(proposal, source="x"))

    async def ok(event: Any) -> None:
        return None

    async def refuse(event: Any) -> None:
        raise Reject(s.ReasonCode.INVALID_ARGS, "no")

    await b.handle_record("actions.proposed", FakeRecord("p.actions.proposed", raw), ok)  # type: ignore[arg-type]
    await b.handle_record("actions.proposed", FakeRecord("p.actions.proposed", raw), refuse)  # type: ignore[arg-type]
    assert sample("tidegate_handler_latency_seconds_count", service="m-svc", event_type="action.proposed") == 2
    assert sample("tidegate_events_handled_total", service="m-svc", event_type="action.proposed", result="rejected") == 1
    assert sample("tidegate_dead_letters_total", service="m-svc", code="invalid_args") == 1


# --- alert rules ---------------------------------------------------------------------------------

ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"


def exported(name: str) -> bool:
    for suffix in ("", "_bucket", "_sum", "_count"):
        if suffix and not name.endswith(suffix):
            continue
        if name.removesuffix(suffix) in METRICS if suffix else name in METRICS:
            return True
    return False


def test_alert_rules_are_well_formed_and_use_only_exported_metrics() -> None:
    doc = yaml.safe_load(Path(ALERTS).read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert {"TidegateRetrySpike", "TidegateEscalationSpike", "TidegateSpendAnomaly", "TidegateDeadLetters", "TidegateServiceDown"} <= names
    assert len(names) == len(rules), "alert names are unique"
    for group in doc["groups"]:
        assert group["name"]
        assert group["rules"]
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "page")
        assert rule["annotations"]["summary"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        metrics = re.findall(r"\btidegate_[a-z_]+", rule["expr"])
        scrape_only = set(re.findall(r"\b(up|process_start_time_seconds)\{", rule["expr"]))  # Prometheus's, the client's
        assert metrics or scrape_only, f"{rule['alert']} uses no Tidegate metric"
        unknown = [m for m in metrics if not exported(m)]
        assert not unknown, f"{rule['alert']} uses metrics we do not export: {unknown}"


def test_the_check_catches_an_unknown_metric() -> None:
    assert exported("tidegate_decisions_total")
    assert exported("tidegate_task_cost_usd_bucket")
    assert not exported("tidegate_decisions")
    assert not exported("tidegate_made_up_total")


async def test_an_authorization_refused_before_any_call_is_counted_refused_with_its_reason_not_as_the_tools_failure() -> None:
    """An executor down longer than the authorizations live booked every expiry as a failure of the tool (outside probe, F1)."""
    refused = s.ActionResultData(
        action_id="a-9", task_id="t-9", tenant_id="m-ref", tool="tag_ticket", status="failed", attempts=0, duration_ms=0.0,
        error=s.ErrorInfo(type="authorization_expired", message="authorization expired at 2026-01-01T00:05:00+00:00"),
    )  # fmt: skip
    failed = refused.model_copy(update={"action_id": "a-10", "attempts": 1, "error": s.ErrorInfo(type="http_500", message="boom")})
    await bus("executor").publish("actions.results", s.ActionFailed.build(refused, source="tidegate/executor"))
    await bus("executor").publish("actions.results", s.ActionFailed.build(failed, source="tidegate/executor"))
    assert sample("tidegate_action_results_total", tenant="m-ref", tool="tag_ticket", status="refused") == 1
    assert sample("tidegate_action_results_total", tenant="m-ref", tool="tag_ticket", status="failed") == 1  # the call made
    assert sample("tidegate_action_refusals_total", tenant="m-ref", tool="tag_ticket", reason="authorization_expired") == 1
    assert sample("tidegate_tool_call_seconds_count", tool="tag_ticket", status="failed") == 1  # no latency of a call never made
