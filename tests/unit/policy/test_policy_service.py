"""The policy service's use cases with the in-memory repository: signing, idempotency, budgets, payees, approvals, control."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from signers import as_operator

from schemas import (
    ActionFailed,
    ActionProposed,
    ActionProposedData,
    ActionResultData,
    ActionSucceeded,
    ApprovalData,
    ApprovalGranted,
    ApprovalRejected,
    ApprovalResolved,
    ControlBudget,
    ControlBudgetData,
    ControlKillswitch,
    ControlKillswitchData,
    ControlPolicy,
    ControlPolicyData,
    Envelope,
    ResultCost,
    decode,
    encode,
)
from servicekit import (
    REPO_ROOT,
    ControlState,
    EventOutlet,
    Keyring,
    Reject,
    SigningKey,
    ToolCatalog,
    action_digest,
    approval_document,
    approval_message,
    authorization_message,
)
from servicekit.received import receiving
from services.policy import InMemoryPolicyRepository
from services.policy.pack import PackSource, compile_pack
from services.policy.repository import Reservation, forget_tasks
from services.policy.service import PolicyService
from services.policy.settings import PolicySettings

CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
SOURCE = PackSource.from_dir(REPO_ROOT / "policies" / "default")
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


class Published:
    def __init__(self) -> None:
        self.events: list[tuple[str, Envelope]] = []

    async def __call__(self, topic: str, event: Envelope) -> None:
        self.events.append((topic, event))

    def on(self, topic: str) -> list[Any]:
        return [e for t, e in self.events if t == topic]


@pytest.fixture
def published() -> Published:
    return Published()


@pytest.fixture
def service(tmp_path: Path, published: Published) -> PolicyService:
    return PolicyService(
        catalog=CATALOG,
        pack=compile_pack(SOURCE, CATALOG),
        repo=InMemoryPolicyRepository(),
        signer=SigningKey.load_or_create(tmp_path, "policy"),
        keys_dir=tmp_path,
        control=ControlState(),
        publish_many=EventOutlet(published).publish_many,
        settings=PolicySettings(authorization_ttl_s=60, provenance_wait_s=0),  # no result is delivered in these tests
        clock=lambda: NOW,
    )


def proposed(
    tool: str, args: dict[str, Any], *, action_id: str = "a-1", task_id: str = "t-1", budget_usd: float | None = None, **kw: Any
) -> ActionProposed:
    data = ActionProposedData(
        action_id=action_id,
        task_id=task_id,
        tenant_id="acme",
        step=1,
        tool=tool,
        args=args,
        proposer="tests",
        mode="autonomous",
        budget_usd=budget_usd,
        **kw,
    )
    return ActionProposed.build(data, source="tests")


def refund(amount: float = 40.0, payee: str = "cus_1001") -> dict[str, Any]:
    return {"payee_id": payee, "amount_usd": amount, "order_id": "O-1"}


def approval(event_type: type[Envelope], decided: Any, key: SigningKey | None, **update: Any) -> Envelope:
    d = decided.data
    data = ApprovalData(
        approval_id="ap-1",
        action_id=d.action_id,
        task_id=d.task_id,
        tenant_id=d.tenant_id,
        tool=d.tool,
        args=d.args,
        action_digest=d.action_digest,
        approver="bob",
        approver_groups={"bob": ["finance"]},
        expires_at=NOW + timedelta(hours=1),
        decided_at=NOW,
        key_id=key.key_id if key else None,
    ).model_copy(update=update)
    if key is not None:
        data = data.model_copy(update={"signature": key.sign(approval_message(event_type.model_fields["type"].default, data))})
    return event_type.build(data, source="tidegate/approval")


async def test_allow_is_signed_for_exactly_the_call(service: PolicyService, published: Published, tmp_path: Path) -> None:
    await service.on_proposed(proposed("issue_refund", refund()))
    [decided] = published.on("actions.decided")
    [auth] = published.on("actions.authorized")
    assert decided.data.outcome == "allow"
    a = auth.data.authorization
    assert a.action_digest == action_digest("acme", "issue_refund", refund())
    assert (a.issued_at, a.expires_at) == (NOW, NOW + timedelta(seconds=60))
    assert Keyring.load(tmp_path, "policy").verify(a.key_id, authorization_message(auth.data), a.signature)
    tampered = auth.data.model_copy(update={"args": refund(4000.0)})
    assert not Keyring.load(tmp_path, "policy").verify(a.key_id, authorization_message(tampered), a.signature)
    assert auth.data.estimated_cost_usd == decided.data.estimated_cost_usd == 0.01


async def test_the_decision_carries_the_agents_rationale_for_the_approver(service: PolicyService, published: Published) -> None:
    """Probe oncall3 (F2): the approver could not see why the agent asked; the proposal's rationale rides on the decision."""
    why = "duplicate charge on order O-1"
    await service.on_proposed(proposed("issue_refund", refund(900.0), rationale=why))
    await service.on_proposed(proposed("issue_refund", refund(40.0), action_id="a-2"))
    escalated, allowed = published.on("actions.decided")
    assert (escalated.data.outcome, escalated.data.rationale) == ("escalate", why)
    assert (allowed.data.outcome, allowed.data.rationale) == ("allow", "")


async def test_redelivery_republishes_without_a_second_reservation(service: PolicyService, published: Published) -> None:
    repo = service.repo
    assert isinstance(repo, InMemoryPolicyRepository)
    await service.on_proposed(proposed("issue_refund", refund()))
    await service.on_proposed(proposed("issue_refund", refund()))  # redelivered
    with pytest.raises(Reject) as reused:
        await service.on_proposed(proposed("issue_refund", refund(45.0)))  # same action id, other args
    assert reused.value.code == "action_id_reused"
    first, second = published.on("actions.decided")
    assert first.id == second.id
    assert [e.data.args["amount_usd"] for e in published.on("actions.authorized")] == [40.0, 40.0]
    assert repo.spend[("acme", "t-1")] == pytest.approx(0.01)


async def test_a_decision_is_republished_to_its_own_requester_only(service: PolicyService, published: Published) -> None:
    """restore7 F2: anyone of the tenant re-proposing Alice's call made the policy publish her recorded decision and its
    authorization again (and the executor its kept result): thousands in a minute crowded what a start's check read."""
    await service.on_proposed(proposed("issue_refund", refund(), requested_by="alice@acme.example"))
    await service.on_proposed(proposed("issue_refund", refund(), requested_by="alice@acme.example"))  # asked again: answered
    with pytest.raises(Reject) as reused:
        await service.on_proposed(proposed("issue_refund", refund(), requested_by="mallory@acme.example"))
    assert reused.value.code == "action_id_reused"
    assert "already proposed for another requester" in reused.value.message
    first, again = published.on("actions.decided")
    assert first.id == again.id
    assert len(published.on("actions.authorized")) == 2  # Alice's two; nothing for Mallory


async def test_failure_releases_and_success_settles_and_teaches_the_payee(service: PolicyService, published: Published) -> None:
    repo = service.repo
    assert isinstance(repo, InMemoryPolicyRepository)
    for i in range(2):
        await service.on_proposed(proposed("issue_refund", refund(), action_id=f"a-{i}"))
    assert repo.spend[("acme", "*")] == pytest.approx(0.02)
    result = {"task_id": "t-1", "tenant_id": "acme", "tool": "issue_refund", "attempts": 1, "duration_ms": 1.0}
    await service.on_result(ActionFailed.build(ActionResultData(action_id="a-0", status="failed", **result), source="x"))
    assert repo.spend[("acme", "*")] == pytest.approx(0.01)
    await service.on_result(ActionFailed.build(ActionResultData(action_id="a-0", status="failed", **result), source="x"))  # redelivered
    assert repo.spend[("acme", "*")] == pytest.approx(0.01)

    # A new payee is denied until a refund to it succeeds (one authorized under an earlier pack, say).
    await service.on_proposed(proposed("issue_refund", refund(payee="cus_new"), action_id="a-new"))
    assert published.on("actions.decided")[-1].data.reasons[0].code == "new_payee_blocked"
    repo.reservations["a-9"] = (Reservation("a-9", "acme", "t-1", "issue_refund", refund(payee="cus_new"), 0.01), "reserved")
    await service.on_result(
        ActionSucceeded.build(ActionResultData(action_id="a-9", status="succeeded", cost=ResultCost(usd=0.005), **result), source="x")
    )
    await service.on_proposed(proposed("issue_refund", refund(payee="cus_new"), action_id="a-new-2"))
    last = published.on("actions.decided")[-1]
    assert (last.data.outcome, last.data.facts["payee_is_new"]) == ("allow", False)


async def test_budget_is_checked_against_task_and_tenant(service: PolicyService, published: Published) -> None:
    for i in range(3):
        await service.on_proposed(proposed("issue_refund", refund(), action_id=f"b-{i}", task_id="t-b", budget_usd=0.02))
    assert [e.data.outcome for e in published.on("actions.decided")] == ["allow", "allow", "deny"]
    await service.on_control(budget(0.025))
    await service.on_proposed(proposed("get_ticket", {"ticket_id": "T-1"}, action_id="b-read", task_id="t-other"))
    last = published.on("actions.decided")[-1]
    assert (last.data.outcome, last.data.reasons[0].code) == ("allow", "read_allowed")
    await service.on_proposed(proposed("issue_refund", refund(), action_id="b-more", task_id="t-other"))
    assert published.on("actions.decided")[-1].data.reasons[0].code == "budget_exceeded"


def budget(limit: float) -> Envelope:
    return as_operator(ControlBudget.build(ControlBudgetData(tenant_id="acme", limit_usd=limit, set_by="ops"), source="cli"))


async def test_grant_lifts_only_what_is_escalated(service: PolicyService, published: Published, tmp_path: Path) -> None:
    key = SigningKey.load_or_create(tmp_path, "approval")
    await service.on_proposed(proposed("issue_refund", refund(900.0)))
    escalated = published.on("actions.decided")[-1]
    assert escalated.data.outcome == "escalate"
    await service.on_approval(approval(ApprovalGranted, escalated, key))
    after = published.on("actions.decided")[-1]
    assert (after.data.outcome, after.data.via, after.data.approval_id) == ("allow", "approval", "ap-1")
    [auth] = published.on("actions.authorized")
    assert (auth.data.authorization.via, auth.data.authorization.approval_id) == ("approval", "ap-1")

    await service.on_proposed(proposed("delete_customer_data", {"customer_id": "cus_1"}, action_id="a-del"))
    denied = published.on("actions.decided")[-1]
    with pytest.raises(Reject) as exc:
        await service.on_approval(approval(ApprovalGranted, denied, key, approval_id="ap-2"))
    assert exc.value.code == "approval_unauthenticated"


async def test_a_grant_that_comes_after_its_task_was_forgotten_is_denied(
    service: PolicyService, published: Published, tmp_path: Path
) -> None:
    """A human's grant lifts an escalation, never the fail-closed denial of a task whose working state is gone."""
    key = SigningKey.load_or_create(tmp_path, "approval")
    await service.repo.learn("acme", "t-1", trusted={}, untrusted={"id:cus_1001": "a ticket"})
    await service.on_proposed(proposed("issue_refund", refund(900.0)))
    escalated = published.on("actions.decided")[-1]
    assert escalated.data.outcome == "escalate"
    assert (await forget_tasks(service.repo, datetime.now(UTC) + timedelta(seconds=1))).tasks == 1
    await service.on_approval(approval(ApprovalGranted, escalated, key))
    after = published.on("actions.decided")[-1]
    assert (after.data.outcome, after.data.via, [r.code.value for r in after.data.reasons]) == ("deny", "approval", ["task_expired"])
    assert published.on("actions.authorized") == []


async def test_unverifiable_approvals_are_rejected(service: PolicyService, published: Published, tmp_path: Path) -> None:
    SigningKey.load_or_create(tmp_path, "approval")
    impostor = SigningKey.load_or_create(tmp_path / "other", "approval")
    await service.on_proposed(proposed("issue_refund", refund(900.0)))
    escalated = published.on("actions.decided")[-1]
    for event in (
        approval(ApprovalGranted, escalated, impostor),
        approval(ApprovalGranted, escalated, None),
        approval(ApprovalRejected, escalated, impostor),
    ):
        with pytest.raises(Reject) as exc:
            await service.on_approval(event)
        assert exc.value.code == "approval_unauthenticated"
    assert published.on("actions.authorized") == []


async def test_signed_rejection_releases_and_publishes_nothing(service: PolicyService, published: Published, tmp_path: Path) -> None:
    key = SigningKey.load_or_create(tmp_path, "approval")
    await service.on_proposed(proposed("issue_refund", refund(900.0)))
    before = len(published.events)
    assert await service.on_approval(approval(ApprovalRejected, published.on("actions.decided")[-1], key)) is None
    assert len(published.events) == before


async def test_an_escalation_takes_one_answer_a_copied_or_restored_request_cannot_answer_it_again(
    service: PolicyService, published: Published, tmp_path: Path
) -> None:
    """As the approval service's database login: bob rejects; a copy of the request (another id) or the row set back to
    pending is granted by another approver, and the approval service signs that grant. The policy authorizes nothing."""
    key = SigningKey.load_or_create(tmp_path, "approval")
    await service.on_proposed(proposed("issue_refund", refund(900.0)))
    escalated = published.on("actions.decided")[-1]
    assert await service.on_approval(approval(ApprovalRejected, escalated, key)) is None
    for forged in (
        approval(ApprovalGranted, escalated, key, approval_id="ap-copy", approver="cy", approver_groups={"cy": ["finance"]}),
        approval(ApprovalGranted, escalated, key, approver="cy", approver_groups={"cy": ["finance"]}),
    ):
        with pytest.raises(Reject) as exc:
            await service.on_approval(forged)
        assert exc.value.code == "approval_unauthenticated"
        assert "already rejected by request ap-1" in str(exc.value)
    assert published.on("actions.authorized") == []
    # The rejection delivered again is the same answer: taken, nothing published.
    assert await service.on_approval(approval(ApprovalRejected, escalated, key)) is None


async def test_a_granted_call_is_authorized_once_and_its_reservation_kept_against_a_copy_of_its_request(
    service: PolicyService, published: Published, tmp_path: Path
) -> None:
    key = SigningKey.load_or_create(tmp_path, "approval")
    repo = service.repo
    assert isinstance(repo, InMemoryPolicyRepository)
    await service.on_proposed(proposed("issue_refund", refund(900.0)))
    escalated = published.on("actions.decided")[-1]
    await service.on_approval(approval(ApprovalGranted, escalated, key))
    [auth] = published.on("actions.authorized")
    await service.on_approval(approval(ApprovalGranted, escalated, key))  # a redelivery: the same answer, republished
    assert {e.id for e in published.on("actions.authorized")} == {auth.id}
    copy = "ap-copy"
    for forged in (
        approval(ApprovalGranted, escalated, key, approval_id=copy),
        approval(ApprovalRejected, escalated, key, approval_id=copy),
    ):
        with pytest.raises(Reject) as exc:
            await service.on_approval(forged)
        assert (exc.value.code, "already granted by request ap-1" in str(exc.value)) == ("approval_unauthenticated", True)
    assert {e.id for e in published.on("actions.authorized")} == {auth.id}
    assert repo.reservations[auth.data.action_id][1] == "reserved", "a rejection of the copy gave back the granted call's budget"


async def test_a_follow_up_resolution_spends_or_gives_back_what_an_unknown_outcome_held(
    service: PolicyService, published: Published, tmp_path: Path
) -> None:
    key = SigningKey.load_or_create(tmp_path, "approval")
    repo = service.repo
    assert isinstance(repo, InMemoryPolicyRepository)
    # Two refunds to a payee policy does not know yet, as under an earlier pack; both calls end unknown.
    for action_id in ("u-1", "u-2"):
        repo.reservations[action_id] = (Reservation(action_id, "acme", "t-1", "issue_refund", refund(payee="cus_new"), 0.01), "reserved")
        repo._add(repo.reservations[action_id][0], 0.01)
    await service.on_proposed(proposed("get_ticket", {"ticket_id": "T-1"}, action_id="r-1"))
    read = published.on("actions.decided")[-1]
    spent = repo.spend[("acme", "*")]

    def finding(action_id: str, resolution: str, signer: SigningKey | None) -> Envelope:
        return approval(
            ApprovalResolved,
            read,
            signer,
            approval_id=f"fu-{action_id}",
            action_id=action_id,
            tool="issue_refund",
            args=refund(payee="cus_new"),
            resolution=resolution,
        )

    with pytest.raises(Reject) as exc:  # a forged finding changes nothing
        await service.on_approval(finding("u-1", "confirmed_not_done", SigningKey.load_or_create(tmp_path / "other", "approval")))
    assert exc.value.code == "approval_unauthenticated"
    assert repo.spend[("acme", "*")] == pytest.approx(spent)

    await service.on_approval(finding("u-1", "confirmed_not_done", key))  # it did not happen: the money is free again
    assert repo.reservations["u-1"][1] == "released"
    assert repo.spend[("acme", "*")] == pytest.approx(spent - 0.01)
    await service.on_approval(finding("u-2", "confirmed_done", key))  # it happened: spent, and the payee is now known
    assert repo.reservations["u-2"][1] == "settled"
    assert repo.spend[("acme", "*")] == pytest.approx(spent - 0.01)
    await service.on_proposed(proposed("issue_refund", refund(payee="cus_new"), action_id="a-after"))
    assert published.on("actions.decided")[-1].data.facts["payee_is_new"] is False
    assert [e.type for _, e in published.events].count("tidegate.action.decided") == 2  # a finding never decides anything


async def test_control_kill_switch_and_pack_switch(service: PolicyService, published: Published) -> None:
    switch = as_operator(
        ControlKillswitch.build(
            ControlKillswitchData(tenant_id="*", tool="get_ticket", active=True, reason="r", set_by="ops"), source="cli"
        )
    )
    await service.on_control(switch)
    await service.on_proposed(proposed("get_ticket", {"ticket_id": "T-1"}, action_id="k-1"))
    assert published.on("actions.decided")[-1].data.reasons[0].code == "kill_switch"

    lowered = PackSource(
        files=SOURCE.files,
        settings={
            **SOURCE.settings,
            "tenants": {**SOURCE.settings["tenants"], "acme": {**SOURCE.settings["tenants"]["acme"], "refund_threshold_usd": 10}},
        },
    )
    await service.on_control(
        as_operator(
            ControlPolicy.build(
                ControlPolicyData(version=lowered.version, files=lowered.files, settings=lowered.settings, published_by="sec"), source="cli"
            )
        )
    )
    assert service.pack.version == lowered.version
    await service.on_proposed(proposed("issue_refund", refund(20.0), action_id="k-2"))
    assert published.on("actions.decided")[-1].data.outcome == "escalate"
    broken = as_operator(
        ControlPolicy.build(ControlPolicyData(version="sha256:x", files={"a.cedar": "permit("}, published_by="m"), source="cli")
    )
    await service.on_control(broken)
    assert service.pack.version == lowered.version


async def test_nothing_is_decided_before_control_is_read(service: PolicyService, published: Published) -> None:
    gate = asyncio.Event()

    async def ready() -> None:
        await gate.wait()

    service.ready = ready
    task = asyncio.create_task(service.on_proposed(proposed("get_ticket", {"ticket_id": "T-1"})))
    await asyncio.sleep(0.01)
    assert published.events == []
    gate.set()
    await task
    assert len(published.on("actions.decided")) == 1


# --- a decision signed over its document (release 22): no upgrade order for a field the approval service adds -----------


def as_received(event: Envelope, **data_fields: Any) -> tuple[Envelope, bytes]:
    """`event` as the bus hands it to the handler, and the bytes it came in: its data with `data_fields` added on the way."""
    document = json.loads(encode(event))
    document["data"] |= data_fields
    raw = json.dumps(document).encode()
    return decode("approvals", raw), raw


async def handled(service: PolicyService, event: Envelope, raw: bytes) -> None:
    """`service.on_approval(event)` as the bus runs it for the record `raw` (`servicekit.received`)."""
    with receiving([event], [cast(Any, SimpleNamespace(value=raw))]):
        await service.on_approval(event)


def document_signed(event_type: type[Envelope], decided: Any, key: SigningKey, approval_id: str = "ap-1", **added: Any) -> Envelope:
    """A grant as the approval service signs it since release 22 (`approval_document`); its document holds `added`, signed too."""
    unsigned = approval(event_type, decided, None, approval_id=approval_id).data.model_copy(update={"key_id": key.key_id})
    document = unsigned.model_dump(mode="json", exclude_none=True) | added
    signature = key.sign(approval_document(event_type.model_fields["type"].default, document))
    return event_type.build(unsigned.model_copy(update={"signature": signature}), source="tidegate/approval")


async def test_a_grant_signed_over_its_document_verifies_with_a_field_a_newer_approval_service_added(
    service: PolicyService, published: Published, tmp_path: Path
) -> None:
    """A newer approval service signs a field this release does not know: the grant verifies (the field is ignored), in any order."""
    key = SigningKey.load_or_create(tmp_path, "approval")
    await service.on_proposed(proposed("issue_refund", refund(900.0)))
    escalated = published.on("actions.decided")[-1]
    newer, raw = as_received(
        document_signed(ApprovalGranted, escalated, key, quorum_note="a later release's"), quorum_note="a later release's"
    )
    await handled(service, newer, raw)
    assert [e.data.authorization.approval_id for e in published.on("actions.authorized")] == ["ap-1"]


async def test_an_old_and_a_new_format_grant_both_verify(service: PolicyService, published: Published, tmp_path: Path) -> None:
    """A grant signed before release 22 (`approval_message`, in flight across the upgrade) and one signed since (its document)."""
    key = SigningKey.load_or_create(tmp_path, "approval")
    for action_id in ("a-old", "a-new"):
        await service.on_proposed(proposed("issue_refund", refund(900.0), action_id=action_id))
        escalated = published.on("actions.decided")[-1]
        event = (
            approval(ApprovalGranted, escalated, key, approval_id="ap-old")
            if action_id == "a-old"
            else document_signed(ApprovalGranted, escalated, key, approval_id="ap-new")
        )
        await handled(service, event, encode(event))
        if action_id == "a-new":  # outside a consume path too (a restart's replay): the data as this release dumps it
            await service.on_approval(event)
    assert sorted(e.data.action_id for e in published.on("actions.authorized")) == ["a-new", "a-new", "a-old"]


async def test_a_field_added_on_the_way_to_a_document_signed_grant_breaks_it(
    service: PolicyService, published: Published, tmp_path: Path
) -> None:
    """Unsigned fields added to a grant signed over its document: one the policy reads (a second approver) or one it ignores."""
    key = SigningKey.load_or_create(tmp_path, "approval")
    await service.on_proposed(proposed("issue_refund", refund(900.0)))
    escalated = published.on("actions.decided")[-1]
    genuine = document_signed(ApprovalGranted, escalated, key)
    for added in ({"approvers": ["mallory"]}, {"review_reason": "should_not_need_approval"}, {"unknown_to_this_release": True}):
        event, raw = as_received(genuine, **added)
        with pytest.raises(Reject) as exc:
            await handled(service, event, raw)
        assert exc.value.code == "approval_unauthenticated", added
    assert published.on("actions.authorized") == []


async def test_a_field_this_release_does_not_know_added_to_an_old_format_grant_is_ignored(
    service: PolicyService, published: Published, tmp_path: Path
) -> None:
    """An old-format grant signed only the fields it names: one added that this release does not parse changes nothing."""
    key = SigningKey.load_or_create(tmp_path, "approval")
    await service.on_proposed(proposed("issue_refund", refund(900.0)))
    escalated = published.on("actions.decided")[-1]
    event, raw = as_received(approval(ApprovalGranted, escalated, key), unknown_to_this_release=True)
    await handled(service, event, raw)
    assert len(published.on("actions.authorized")) == 1
    forged, raw = as_received(approval(ApprovalGranted, escalated, key, approval_id="ap-2"), approvers=["mallory"])
    with pytest.raises(Reject) as exc:  # a field it signs, added: refused
        await handled(service, forged, raw)
    assert exc.value.code == "approval_unauthenticated"
