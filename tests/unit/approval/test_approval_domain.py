"""The approval rules as pure functions: who may decide, N-of-M, edits, digests, expiry, escalation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas import ActionDecidedData, ActionResultData, ErrorInfo, Reason
from servicekit import Keyring, SigningKey, action_digest, approval_document
from services.approval import domain
from services.approval.domain import Approver, GroupsConfig, Refusal, Transition, Vote

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
GROUPS = GroupsConfig()
ARGS = {"payee_id": "cus_1", "amount_usd": 900.0, "order_id": "O-1"}


def decided(**over: Any) -> ActionDecidedData:
    args = over.pop("args", ARGS)
    fields: dict[str, Any] = {
        "action_id": "a-1",
        "task_id": "t-1",
        "tenant_id": "acme",
        "tool": "issue_refund",
        "args": args,
        "action_digest": action_digest("acme", over.get("tool", "issue_refund"), args),
        "outcome": "escalate",
        "reasons": [Reason(code="needs_human_approval", policy_id="refund-threshold", message="over 500")],
        "policy_version": "sha256:abc",
        "risk": "financial",
        "latency_ms": 0.2,
        "facts": {"payee_is_new": False},
        "requested_by": "alice@acme.example",
    }
    return ActionDecidedData(**(fields | over))


CATALOG_RISK = {"issue_refund": "financial", "delete_customer_data": "destructive"}  # what the service reads from its own catalog


def request(**over: Any) -> domain.ApprovalRecord:
    data = decided(**over)
    risk = CATALOG_RISK[data.tool]
    record = domain.request_from_decision(data, approval_id="ap-1", now=NOW, ttl=timedelta(hours=1), groups=GROUPS, risk=risk)
    assert record is not None
    return record


BOB = Approver(approver="bob@acme.example", tenant_id="acme", groups=frozenset({"finance"}))
CAROL = Approver(approver="carol@acme.example", tenant_id="acme", groups=frozenset({"finance", "security"}))
DAN = Approver(approver="dan@acme.example", tenant_id="acme", groups=frozenset({"security"}))


def approve(record: domain.ApprovalRecord, who: Approver, **vote: Any) -> Transition | Refusal:
    return domain.decide(record, who, Vote(decision="approve", seen_digest=record.action_digest, **vote), now=NOW, groups=GROUPS)


def test_only_an_escalation_by_policy_opens_a_request() -> None:
    assert request().status == "pending"
    assert request().expires_at == NOW + timedelta(hours=1)
    for over in ({"outcome": "allow"}, {"outcome": "deny"}, {"via": "approval", "approval_id": "ap-0"}):
        assert (
            domain.request_from_decision(decided(**over), approval_id="x", now=NOW, ttl=timedelta(hours=1), groups=GROUPS, risk="financial")
            is None
        )


def test_risk_and_quorum_come_from_the_catalog_not_from_the_events_claim() -> None:
    forged = decided(tool="delete_customer_data", args={"customer_id": "c1"}, risk="write_low")
    record = domain.request_from_decision(forged, approval_id="x", now=NOW, ttl=timedelta(hours=1), groups=GROUPS, risk="destructive")
    assert record is not None
    assert (record.risk, record.required_approvals) == ("destructive", 2)


def test_the_tenants_trigger_may_ask_for_more_approvers_never_fewer() -> None:
    more = decided(facts={"approvers_required": 3})
    record = domain.request_from_decision(more, approval_id="x", now=NOW, ttl=timedelta(hours=1), groups=GROUPS, risk="financial")
    assert record is not None
    assert record.required_approvals == 3
    fewer = decided(tool="delete_customer_data", args={"customer_id": "c1"}, facts={"approvers_required": 1})
    record = domain.request_from_decision(fewer, approval_id="y", now=NOW, ttl=timedelta(hours=1), groups=GROUPS, risk="destructive")
    assert record is not None
    assert record.required_approvals == 2
    for bad in ("3", True, -1):
        odd = decided(facts={"approvers_required": bad})
        record = domain.request_from_decision(odd, approval_id="z", now=NOW, ttl=timedelta(hours=1), groups=GROUPS, risk="financial")
        assert record is not None
        assert record.required_approvals == 1


def test_a_finance_approver_grants_a_financial_call() -> None:
    result = approve(request(), BOB, comment="ok")
    assert isinstance(result, Transition)
    assert result.event_type == "tidegate.approval.granted"
    assert result.record.status == "granted"
    assert result.record.approvers == ["bob@acme.example"]
    assert result.record.decided_by == "bob@acme.example"


@pytest.mark.parametrize(
    ("who", "code"),
    [
        (Approver(approver="alice@acme.example", tenant_id="acme", groups=frozenset({"finance"})), "four_eyes"),
        (Approver(approver="ALICE@acme.example", tenant_id="acme", groups=frozenset({"finance"})), "four_eyes"),
        (DAN, "not_in_group"),
    ],
)
def test_who_may_not_decide(who: Approver, code: str) -> None:
    result = approve(request(), who)
    assert isinstance(result, Refusal)
    assert (result.code, result.status) == (code, 403)


def test_another_tenants_approver_is_told_what_a_missing_id_would_tell() -> None:
    eve = Approver(approver="eve@globex.example", tenant_id="globex", groups=frozenset({"finance"}))
    result = approve(request(), eve)
    assert result == domain.not_found("ap-1")
    assert (result.code, result.status) == ("not_found", 404)


def test_an_unknown_requester_blocks_every_approval_and_only_an_operator_may_reject() -> None:
    record = request(requested_by=None)
    for who in (BOB, CAROL):
        refused = approve(record, who)
        assert isinstance(refused, Refusal)
        assert (refused.code, refused.status) == ("requester_unknown", 409)
        rejected = domain.decide(record, who, Vote(decision="reject"), now=NOW, groups=GROUPS)
        assert isinstance(rejected, Refusal)
        assert rejected.code == "requester_unknown"
    ops = Approver(approver="ops@tidegate.example", tenant_id="*", groups=frozenset({"finance"}), operator=True)
    refused = approve(record, ops)
    assert isinstance(refused, Refusal)
    assert refused.code == "requester_unknown"
    closed = domain.decide(record, ops, Vote(decision="reject", comment="requester unknown"), now=NOW, groups=GROUPS)
    assert isinstance(closed, Transition)
    assert closed.event_type == domain.REJECTED


def test_a_changed_call_is_refused_by_its_digest() -> None:
    record = request()
    result = domain.decide(record, BOB, Vote(decision="approve", seen_digest="0" * 64), now=NOW, groups=GROUPS)
    assert isinstance(result, Refusal)
    assert result.code == "digest_mismatch"
    tampered = record.model_copy(update={"args": {**ARGS, "amount_usd": 9000.0}})
    result = approve(tampered, BOB)
    assert isinstance(result, Refusal)
    assert result.code == "digest_mismatch"


def test_a_reproposal_with_other_args_replaces_the_call_and_clears_votes() -> None:
    old = request(tool="delete_customer_data", risk="destructive", args={"customer_id": "c1"})
    voted = approve(old, DAN)
    assert isinstance(voted, Transition)
    assert voted.record.status == "pending"
    fresh = request(tool="delete_customer_data", risk="destructive", args={"customer_id": "c2"})
    assert (
        domain.refresh_request(voted.record, request(tool="delete_customer_data", risk="destructive", args={"customer_id": "c1"})) is None
    )
    refreshed = domain.refresh_request(voted.record, fresh)
    assert refreshed is not None
    assert refreshed.action_digest == fresh.action_digest
    assert refreshed.approvers == []
    stale = approve(voted.record, CAROL)  # carol saw the old call
    assert isinstance(stale, Transition)
    result = domain.decide(refreshed, CAROL, Vote(decision="approve", seen_digest=old.action_digest), now=NOW, groups=GROUPS)
    assert isinstance(result, Refusal)
    assert result.code == "digest_mismatch"


def test_destructive_needs_two_distinct_approvers() -> None:
    record = request(tool="delete_customer_data", risk="destructive", args={"customer_id": "c1"})
    assert record.required_approvals == 2
    first = approve(record, DAN)
    assert isinstance(first, Transition)
    assert first.event_type is None
    assert first.record.approvers == ["dan@acme.example"]
    again = approve(first.record, DAN)
    assert isinstance(again, Refusal)
    assert again.code == "already_approved"
    second = approve(first.record, CAROL)
    assert isinstance(second, Transition)
    assert second.event_type == "tidegate.approval.granted"
    assert second.record.approvers == ["dan@acme.example", "carol@acme.example"]
    # the grant shows the groups each approver held, for the policy service to count against its own settings
    assert second.record.approver_groups == {"dan@acme.example": ["security"], "carol@acme.example": ["finance", "security"]}


def test_an_edit_restarts_the_count_with_its_author() -> None:
    record = request(tool="delete_customer_data", risk="destructive", args={"customer_id": "c1", "scope": "all"})
    first = approve(record, DAN)
    assert isinstance(first, Transition)
    edited = approve(first.record, CAROL, edited_args={"customer_id": "c1", "scope": "profile"})
    assert isinstance(edited, Transition)
    assert edited.event_type == domain.EDITED  # no bus event; a webhook message tells the chat another call awaits approval
    assert edited.record.approvers == ["carol@acme.example"]
    final = approve(edited.record, DAN, edited_args={"customer_id": "c1", "scope": "profile"})
    assert isinstance(final, Transition)
    assert final.event_type == "tidegate.approval.granted"
    assert final.record.edited_args == {"customer_id": "c1", "scope": "profile"}
    assert set(final.record.approver_groups) == {"carol@acme.example", "dan@acme.example"}


def test_one_reject_settles_and_nothing_follows_a_decision() -> None:
    record = request()
    rejected = domain.decide(record, BOB, Vote(decision="reject", comment="no"), now=NOW, groups=GROUPS)
    assert isinstance(rejected, Transition)
    assert rejected.event_type == "tidegate.approval.rejected"
    late = approve(rejected.record, CAROL)
    assert isinstance(late, Refusal)
    assert (late.code, late.status) == ("not_pending", 409)


def test_an_overdue_request_expires_and_cannot_be_approved() -> None:
    record = request()
    assert domain.expire(record, NOW + timedelta(minutes=59)) is None
    late = domain.decide(
        record, BOB, Vote(decision="approve", seen_digest=record.action_digest), now=NOW + timedelta(hours=1), groups=GROUPS
    )
    assert isinstance(late, Refusal)
    assert late.code == "expired"
    expired = domain.expire(record, NOW + timedelta(hours=1))
    assert expired is not None
    assert expired.event_type == "tidegate.approval.expired"
    assert expired.record.status == "expired"


def test_escalation_opens_the_request_to_the_second_group() -> None:
    record = request()
    lead = Approver(approver="lee@acme.example", tenant_id="acme", groups=frozenset({"finance-leads"}))
    assert isinstance(approve(record, lead), Refusal)
    assert domain.escalate(record, NOW + timedelta(minutes=5), timedelta(minutes=10)) is None
    assert domain.escalate(record, NOW + timedelta(minutes=5), None) is None
    escalated = domain.escalate(record, NOW + timedelta(minutes=10), timedelta(minutes=10))
    assert escalated is not None
    assert isinstance(approve(escalated, lead), Transition)


def test_the_signed_grant_verifies_with_the_policy_side_check(tmp_path: Path) -> None:
    key = SigningKey.load_or_create(tmp_path, "approval")
    granted = approve(request(), BOB, edited_args={**ARGS, "amount_usd": 450.0})
    assert isinstance(granted, Transition)
    data = domain.signed_decision(granted.record, "tidegate.approval.granted", key)
    assert data.args == ARGS
    assert data.action_digest == action_digest("acme", "issue_refund", ARGS)
    assert data.edited_args == {**ARGS, "amount_usd": 450.0}
    ring = Keyring.load(tmp_path, "approval")
    assert data.key_id is not None
    assert data.signature is not None
    assert ring.verify(data.key_id, approval_document("tidegate.approval.granted", data), data.signature)
    assert not ring.verify(data.key_id, approval_document("tidegate.approval.rejected", data), data.signature)
    forged = data.model_copy(update={"edited_args": {**ARGS, "amount_usd": 45000.0}})
    assert not ring.verify(data.key_id, approval_document("tidegate.approval.granted", forged), data.signature)
    assert data.approver_groups == {"bob@acme.example": ["finance"]}
    promoted = data.model_copy(update={"approver_groups": {"bob@acme.example": ["finance-leads"]}})
    assert not ring.verify(data.key_id, approval_document("tidegate.approval.granted", promoted), data.signature)


def test_an_unknown_outcome_becomes_a_follow_up_whose_resolution_is_an_event() -> None:
    result = ActionResultData(
        action_id="a-9",
        task_id="t-9",
        tenant_id="acme",
        tool="issue_refund",
        status="unknown",
        error=ErrorInfo(type="timeout", message="no answer"),
        attempts=1,
        duration_ms=10000,
    )
    record = domain.follow_up_from_result(
        result, approval_id="fu-1", now=NOW, ttl=timedelta(hours=1), risk="financial", requested_by="alice@acme.example", args=ARGS
    )
    assert record.kind == "follow_up"
    assert [r.code for r in record.reasons] == ["outcome_unknown"]
    edited = approve(record, BOB, edited_args=ARGS)
    assert isinstance(edited, Refusal)
    assert edited.status == 422
    done = approve(record, BOB)
    assert isinstance(done, Transition)
    assert done.event_type == domain.RESOLVED  # a signed finding, on the bus for the policy (budget) and the audit log
    assert (done.record.status, done.record.resolution) == ("resolved", "confirmed_done")
    assert done.record.approvers == [BOB.approver]
    expired = domain.expire(record, NOW + timedelta(hours=2))
    assert expired is not None
    assert expired.event_type is None


def test_groups_file_overrides_per_tenant(tmp_path: Path) -> None:
    path = tmp_path / "groups.yaml"
    path.write_text("tenants:\n  globex:\n    risk_groups: {financial: [treasury]}\n    required_approvals: {financial: 3}\n")
    config = GroupsConfig.load(path)
    assert config.allowed_groups("globex", "financial", escalated=False) == {"treasury"}
    assert config.required("globex", "financial") == 3
    assert config.allowed_groups("acme", "financial", escalated=False) == {"finance"}
    assert config.allowed_groups("acme", "no_such_class", escalated=False) == {"security"}


def test_cost_so_far_counts_spent_and_reserved() -> None:
    rows = [
        {"type": "tidegate.action.decided", "action_id": "a1", "outcome": "allow", "cost_usd": 0.01},
        {"type": "tidegate.action.succeeded", "action_id": "a1", "outcome": "succeeded", "cost_usd": 0.012},
        {"type": "tidegate.action.decided", "action_id": "a2", "outcome": "allow", "cost_usd": 0.02},
        {"type": "tidegate.action.decided", "action_id": "a3", "outcome": "escalate", "cost_usd": 0.5},
    ]
    cost = domain.cost_so_far(rows)
    assert cost["spent_usd"] == pytest.approx(0.012)
    assert cost["reserved_usd"] == pytest.approx(0.02)
    assert cost["events"]["tidegate.action.decided"] == 3


def test_cost_so_far_counts_one_result_per_action_whatever_its_event_ids() -> None:
    """A result re-published under new event ids (replayed authorizations) is one cost, not fourteen."""
    rows = [{"type": "tidegate.action.decided", "action_id": "a1", "outcome": "allow", "cost_usd": 0.01}] + [
        {"type": "tidegate.action.succeeded", "action_id": "a1", "outcome": "succeeded", "cost_usd": 0.5}
    ] * 14
    cost = domain.cost_so_far(rows)
    assert cost["spent_usd"] == pytest.approx(0.5)
    assert cost["reserved_usd"] == 0
    assert cost["events"]["tidegate.action.succeeded"] == 1


def test_a_refused_digest_or_a_late_vote_says_what_happened_and_what_to_do() -> None:
    """Probe approver F10: a digest cut where a narrow terminal wrapped `approve … --digest d4a4…` was refused "the call
    changed since you saw it": an approver at 2 a.m. read that the agent had changed the call. A vote after the expiry
    said "expired at 2026-…T11:00:00+00:00", not that nothing ran nor what happens next."""
    record = request()
    cut = domain.decide(record, BOB, Vote(decision="approve", seen_digest=record.action_digest[:40]), now=NOW, groups=GROUPS)
    assert isinstance(cut, Refusal)
    assert cut.code == "digest_mismatch"
    head = record.action_digest[:12]
    assert cut.message.startswith(f"the digest you sent ({head}…, 40 characters where a digest has 64) is not the call's ({head}…)")
    other = domain.decide(record, BOB, Vote(decision="approve", seen_digest="0" * 64), now=NOW, groups=GROUPS)
    assert isinstance(other, Refusal)
    assert other.message.startswith(f"the digest you sent (000000000000…) is not the call's ({head}…): the call changed since you read it")
    assert "or the digest was cut or mistyped" in cut.message
    assert "`tidegate approvals show ap-1`" in cut.message
    late = domain.decide(record, BOB, Vote(decision="reject"), now=NOW + timedelta(hours=2), groups=GROUPS)
    assert isinstance(late, Refusal)
    assert late.code == "expired"
    assert late.message == (
        "approval ap-1 expired at 2026-11-24T11:00:00+00:00 before anyone decided it: nothing ran, and it can no longer be decided "
        "(if the call is still wanted, the agent asks again, as a new request)"
    )
