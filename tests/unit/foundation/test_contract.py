"""The wire contract: every event round-trips, bad input is refused, generated documents match the models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import schemas as s
from schemas.export import render
from servicekit import REPO_ROOT

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def sample_events() -> list[tuple[str, s.Envelope]]:
    """One valid event of every type, with the catalog topic it travels on."""
    src = "tidegate/test"
    approval = s.ApprovalData(approval_id="ap-1", action_id="a-1", task_id="t-1", tenant_id="acme", tool="issue_refund",
                              args={"payee_id": "cus_1", "amount_usd": 900.0, "order_id": "O-1"}, action_digest="d" * 64,
                              expires_at=NOW + timedelta(hours=1))
    result = s.ActionResultData(action_id="a-1", task_id="t-1", tenant_id="acme", tool="tag_ticket", status="succeeded",
                                result={"ok": True}, attempts=1, duration_ms=3.5)
    outcome = s.TaskOutcomeData(task_id="t-1", tenant_id="acme", workflow="support_triage", status="completed",
                                summary="tagged and drafted", duration_ms=1200.0)
    auth = s.Authorization(via="policy", policy_version="sha256:abc", action_digest="d" * 64, issued_at=NOW,
                           expires_at=NOW + timedelta(minutes=5), key_id="policy-1", signature="sig")
    return [
        ("tasks", s.TaskSubmitted.build(s.TaskSubmittedData(task_id="t-1", tenant_id="acme", workflow="support_triage",
                                                             input={"body": "refund please"}, untrusted=["body"],
                                                             requested_by="alice@acme.example"), source=src)),
        ("actions.proposed", s.ActionProposed.build(s.ActionProposedData(action_id="a-1", task_id="t-1", tenant_id="acme", step=1,
                                                                         tool="tag_ticket", args={"ticket_id": "T-1", "tags": ["x"]},
                                                                         proposer="tidegate/planner/playbook"), source=src)),
        ("actions.decided", s.ActionDecided.build(s.ActionDecidedData(
            action_id="a-1", task_id="t-1", tenant_id="acme", tool="tag_ticket", args={}, action_digest="d" * 64, outcome="deny",
            reasons=[s.Reason(code=s.ReasonCode.NO_PERMIT, policy_id="default")], policy_version="sha256:abc", latency_ms=0.2),
            source=src)),
        ("approvals", s.ApprovalRequested.build(approval, source=src)),
        ("approvals", s.ApprovalGranted.build(approval.model_copy(update={"approver": "bob"}), source=src)),
        ("approvals", s.ApprovalRejected.build(approval, source=src)),
        ("approvals", s.ApprovalExpired.build(approval, source=src)),
        ("actions.authorized", s.ActionAuthorized.build(s.ActionAuthorizedData(action_id="a-1", task_id="t-1", tenant_id="acme",
                                                                               tool="tag_ticket", args={}, authorization=auth), source=src)),
        ("actions.results", s.ActionSucceeded.build(result, source=src)),
        ("actions.results", s.ActionFailed.build(result.model_copy(update={"status": "failed"}), source=src)),
        ("actions.results", s.ActionUnknown.build(result.model_copy(update={"status": "unknown"}), source=src)),
        ("tasks.outcomes", s.TaskCompleted.build(outcome, source=src)),
        ("tasks.outcomes", s.TaskFailed.build(outcome.model_copy(update={"status": "failed"}), source=src)),
        ("control", s.ControlKillswitch.build(s.ControlKillswitchData(tenant_id="acme", tool="issue_refund", active=True, set_by="ops"),
                                              source=src)),
        ("control", s.ControlPolicy.build(s.ControlPolicyData(version="sha256:abc", files={"a.cedar": "permit(principal, action, resource);"},
                                                              published_by="ops"), source=src)),
        ("control", s.ControlBudget.build(s.ControlBudgetData(tenant_id="acme", limit_usd=100.0, set_by="ops"), source=src)),
        ("deadletter", s.EventRejected.build(s.EventRejectedData(topic="tidegate.tasks", partition=0, offset=7, raw_value="{",
                                                                 code="invalid_event", error="bad", service="planner"), source=src)),
        ("tools.update_inventory.requests", s.ToolInvocation.build(s.ToolInvocationData(
            action_id="a-1", task_id="t-1", tenant_id="acme", tool="update_inventory", args={}, idempotency_key="a-1",
            deadline=NOW, reply_topic="tidegate.tools.update_inventory.replies"), source=src)),
        ("tools.update_inventory.replies", s.ToolReply.build(s.ToolReplyData(action_id="a-1", task_id="t-1", tenant_id="acme",
                                                                             tool="update_inventory", ok=True, result={}), source=src)),
        ("audit.checkpoints", s.AuditCheckpoint.build(s.AuditCheckpointData(checkpoint_id=1, heads={}, rows=0, key_id="audit-1",
                                                                            signature="sig"), source=src)),
    ]


def test_every_event_type_has_a_sample() -> None:
    sampled = {event.type for _, event in sample_events()}
    declared = {str(m.model_fields["type"].default) for spec in s.TOPICS.values() for m in spec.events}
    declared |= {"tidegate.tool.invocation", "tidegate.tool.reply"}
    assert sampled == declared


@pytest.mark.parametrize(("topic", "event"), sample_events(), ids=lambda v: v if isinstance(v, str) else v.type)
def test_event_round_trips_through_its_topic(topic: str, event: s.Envelope) -> None:
    raw = s.encode(event)
    back = s.decode(topic, raw)
    assert back == event
    assert type(s.decode_any(raw)) is type(event)
    assert s.headers_for(event)["content-type"] == "application/cloudevents+json"


def test_task_scoped_events_are_keyed_by_task_id() -> None:
    event = dict(sample_events())["actions.proposed"]
    assert event.subject == "t-1"
    assert event.key == b"t-1"
    assert event.tenantid == "acme"


def test_control_records_are_keyed_by_scope_for_compaction() -> None:
    by_type = {e.type: e for _, e in sample_events()}
    assert by_type["tidegate.control.killswitch"].key == b"killswitch:acme:issue_refund"
    assert by_type["tidegate.control.policy"].key == b"policy"
    assert by_type["tidegate.control.budget"].key == b"budget:acme"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"not json", "Invalid JSON"),
        (b'{"specversion": "1.0"}', "Field required"),
        (b'{"type": "tidegate.task.submitted", "source": "x", "tenantid": "a", "data": {}}', "tasks"),
    ],
)
def test_invalid_messages_are_refused_with_a_reason(raw: bytes, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        s.decode("actions.proposed", raw)
    assert info.value.errors()


def test_an_event_on_the_wrong_topic_is_refused() -> None:
    proposed = dict(sample_events())["actions.proposed"]
    with pytest.raises(ValidationError):
        s.decode("actions.authorized", s.encode(proposed))


def test_traceparent_must_be_w3c() -> None:
    with pytest.raises(ValidationError):
        s.TaskSubmitted(source="x", tenantid="acme", traceparent="nonsense",
                        data=dict(sample_events())["tasks"].data)


def test_canonical_json_is_independent_of_key_order_and_rejects_nan() -> None:
    assert s.canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == s.canonical_json({"a": [1, {"c": 3, "d": 2}], "b": 1})
    assert s.digest({"x": "é"}) == s.digest({"x": "é"})
    with pytest.raises(ValueError, match="Out of range"):
        s.canonical_json({"x": float("nan")})


def test_topic_names_carry_the_prefix_and_control_is_compacted() -> None:
    assert s.TOPICS["tasks"].full_name("sandbox.") == "sandbox.tasks"
    assert s.TOPICS["control"].kafka_config()["cleanup.policy"] == "compact"
    assert s.topic_spec("tools.inventory.requests").events == (s.ToolInvocation,)
    with pytest.raises(KeyError):
        s.topic_spec("nope")


def test_reason_codes_of_the_design_exist() -> None:
    required = {"needs_human_approval", "new_payee_blocked", "bulk_email_blocked", "human_only", "kill_switch", "budget_exceeded",
                "tainted_argument", "no_permit", "invalid_args", "approval_rejected", "approval_expired"}
    assert required <= {c.value for c in s.ReasonCode}


def test_generated_contract_documents_match_the_models() -> None:
    """docs/contract is generated by `make contract`; this fails when the models drift from it."""
    out = REPO_ROOT / "docs" / "contract"
    rendered = render()
    on_disk = {str(p.relative_to(out)): p.read_text() for p in out.rglob("*.json")}
    stale = sorted(k for k in rendered if on_disk.get(k) != rendered[k])
    extra = sorted(set(on_disk) - set(rendered))
    assert not stale and not extra, f"run `make contract`: stale {stale}, not generated any more {extra}"


def test_asyncapi_document_lists_every_topic() -> None:
    import json

    doc: dict[str, Any] = json.loads((REPO_ROOT / "docs" / "contract" / "asyncapi.json").read_text())
    assert doc["asyncapi"].startswith("3.")
    addresses = {c["address"] for c in doc["channels"].values()}
    assert {f"tidegate.{name}" for name in s.TOPICS} <= addresses
    assert Path(REPO_ROOT / "docs" / "contract" / "jsonschema" / "tidegate.action.proposed.json").exists()
