"""One valid example of every event type, with the catalog topic it travels on.

Integrators can start from these; the test suites round-trip each through its topic.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import schemas as s
from schemas.envelope import Envelope

__all__ = ["sample_events"]

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def sample_events() -> list[tuple[str, Envelope]]:
    """One valid event of every type, with the catalog topic it travels on."""
    src = "tidegate/test"
    approval = s.ApprovalData(
        approval_id="ap-1",
        action_id="a-1",
        task_id="t-1",
        tenant_id="acme",
        tool="issue_refund",
        args={"payee_id": "cus_1", "amount_usd": 900.0, "order_id": "O-1"},
        action_digest="d" * 64,
        expires_at=NOW + timedelta(hours=1),
    )
    result = s.ActionResultData(
        action_id="a-1",
        task_id="t-1",
        tenant_id="acme",
        tool="tag_ticket",
        status="succeeded",
        result={"ok": True},
        attempts=1,
        duration_ms=3.5,
    )
    outcome = s.TaskOutcomeData(
        task_id="t-1", tenant_id="acme", workflow="support_triage", status="completed", summary="tagged and drafted", duration_ms=1200.0
    )
    auth = s.Authorization(
        via="policy",
        policy_version="sha256:abc",
        action_digest="d" * 64,
        issued_at=NOW,
        expires_at=NOW + timedelta(minutes=5),
        key_id="policy-1",
        signature="sig",
    )
    return [
        (
            "tasks",
            s.TaskSubmitted.build(
                s.TaskSubmittedData(
                    task_id="t-1",
                    tenant_id="acme",
                    workflow="support_triage",
                    input={"body": "refund please"},
                    untrusted=["body"],
                    requested_by="alice@acme.example",
                ),
                source=src,
            ),
        ),
        (
            "actions.proposed",
            s.ActionProposed.build(
                s.ActionProposedData(
                    action_id="a-1",
                    task_id="t-1",
                    tenant_id="acme",
                    step=1,
                    tool="tag_ticket",
                    args={"ticket_id": "T-1", "tags": ["x"]},
                    proposer="tidegate/planner/playbook",
                ),
                source=src,
            ),
        ),
        (
            "actions.decided",
            s.ActionDecided.build(
                s.ActionDecidedData(
                    action_id="a-1",
                    task_id="t-1",
                    tenant_id="acme",
                    tool="tag_ticket",
                    args={},
                    action_digest="d" * 64,
                    outcome="deny",
                    reasons=[s.Reason(code=s.ReasonCode.NO_PERMIT, policy_id="default")],
                    policy_version="sha256:abc",
                    latency_ms=0.2,
                ),
                source=src,
            ),
        ),
        ("approvals", s.ApprovalRequested.build(approval, source=src)),
        ("approvals", s.ApprovalGranted.build(approval.model_copy(update={"approver": "bob"}), source=src)),
        ("approvals", s.ApprovalRejected.build(approval, source=src)),
        ("approvals", s.ApprovalExpired.build(approval, source=src)),
        (
            "approvals",
            s.ApprovalResolved.build(
                approval.model_copy(update={"approver": "bob", "approvers": ["bob"], "resolution": "confirmed_done"}), source=src
            ),
        ),
        (
            "actions.authorized",
            s.ActionAuthorized.build(
                s.ActionAuthorizedData(action_id="a-1", task_id="t-1", tenant_id="acme", tool="tag_ticket", args={}, authorization=auth),
                source=src,
            ),
        ),
        ("actions.results", s.ActionSucceeded.build(result, source=src)),
        ("actions.results", s.ActionFailed.build(result.model_copy(update={"status": "failed"}), source=src)),
        ("actions.results", s.ActionUnknown.build(result.model_copy(update={"status": "unknown"}), source=src)),
        ("tasks.outcomes", s.TaskCompleted.build(outcome, source=src)),
        ("tasks.outcomes", s.TaskFailed.build(outcome.model_copy(update={"status": "failed"}), source=src)),
        (
            "control",
            s.ControlKillswitch.build(
                s.ControlKillswitchData(tenant_id="acme", tool="issue_refund", active=True, set_by="ops"), source=src
            ),
        ),
        (
            "control",
            s.ControlPolicy.build(
                s.ControlPolicyData(version="sha256:abc", files={"a.cedar": "permit(principal, action, resource);"}, published_by="ops"),
                source=src,
            ),
        ),
        ("control", s.ControlBudget.build(s.ControlBudgetData(tenant_id="acme", limit_usd=100.0, set_by="ops"), source=src)),
        (
            "control",
            s.ControlTenant.build(
                s.ControlTenantData(
                    tenant_id="acme", settings={"allow_autonomous": True, "internal_domains": ["acme.example"]}, set_by="ops"
                ),
                source=src,
            ),
        ),
        (
            "control",
            s.ControlRedrive.build(
                s.ControlRedriveData(
                    tenant_id="acme",
                    task_id="t-1",
                    dead_letter_id="e-1",
                    topic="tidegate.actions.proposed",
                    partition=2,
                    offset=41,
                    sha256="0" * 64,
                    code="handler_error",
                    service="policy",
                    reason="INC-7: fixed in 1.4.2",
                    set_by="oncall",
                ),
                source=src,
            ),
        ),
        (
            "control",
            s.ControlConnectorGrant.build(
                s.ControlConnectorGrantData(tenant_id="acme", connector="zendesk", grant_sha256="0" * 64, set_by="oncall"), source=src
            ),
        ),
        (
            "control",
            s.ControlTokenRevoked.build(s.TokenRevokedData(tenant_id="acme", token_id="tok_3f9a0c1d2e4b", set_by="oncall"), source=src),
        ),
        (
            "directory",
            s.DirectoryUpdated.build(
                s.DirectoryUpdatedData(
                    tenant_id="acme",
                    directory=s.TenantDirectory(internal_domains=["acme.example"], known_contacts=["ap@supplier.example"]),
                    set_by="root@acme.example",
                ),
                source="tidegate/approval",
            ),
        ),
        (
            "directory",
            s.DirectoryEndpoint.build(
                s.DirectoryEndpointData(tenant_id="acme", endpoint_id="chat", row_sha256="0" * 64, set_by="root@acme.example"),
                source="tidegate/approval",
            ),
        ),
        (
            "directory",
            s.DirectoryTokenRevoked.build(
                s.TokenRevokedData(tenant_id="acme", token_id="tok_3f9a0c1d2e4b", set_by="approval"), source="tidegate/approval"
            ),
        ),
        (
            "deadletter",
            s.EventRejected.build(
                s.EventRejectedData(
                    topic="tidegate.tasks", partition=0, offset=7, raw_value="{", code="invalid_event", error="bad", service="planner"
                ),
                source=src,
            ),
        ),
        (
            "tools.update_inventory.requests",
            s.ToolInvocation.build(
                s.ToolInvocationData(
                    action_id="a-1",
                    task_id="t-1",
                    tenant_id="acme",
                    tool="update_inventory",
                    args={},
                    idempotency_key="a-1",
                    deadline=NOW,
                    reply_topic="tidegate.tools.update_inventory.replies",
                ),
                source=src,
            ),
        ),
        (
            "tools.update_inventory.replies",
            s.ToolReply.build(
                s.ToolReplyData(action_id="a-1", task_id="t-1", tenant_id="acme", tool="update_inventory", ok=True, result={}), source=src
            ),
        ),
        (
            "audit.checkpoints",
            s.AuditCheckpoint.build(
                s.AuditCheckpointData(checkpoint_id=1, heads={}, rows=0, key_id="audit-1", signature="sig"), source=src
            ),
        ),
    ]
