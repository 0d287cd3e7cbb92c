"""A decision always fits what the bus takes: a call whose decision would not is denied `too_large`, carrying its digest, not its args.

Without the bound, a proposal of 0.53–1 MiB passed every check, its decision (args about twice: as proposed, and
as counterparties in the facts) was larger than the broker takes, and the proposer never heard back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from schemas import ActionDecided, ActionProposed, ActionProposedData, RiskClass, decode
from servicekit import REPO_ROOT, ControlState, SigningKey, ToolCatalog, action_digest
from services.policy import InMemoryPolicyRepository
from services.policy.authorization import build_record
from services.policy.engine import Verdict
from services.policy.facts import Call
from services.policy.pack import PackSource, compile_pack
from services.policy.service import PolicyService
from services.policy.settings import DEFAULT_MAX_DECISION_BYTES, PolicySettings

CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
NOW = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)


async def _nowhere(records: list[Any]) -> None:
    return None


@pytest.fixture
def service(tmp_path: Path) -> PolicyService:
    return PolicyService(
        catalog=CATALOG,
        pack=compile_pack(PackSource.from_dir(REPO_ROOT / "policies" / "default"), CATALOG),
        repo=InMemoryPolicyRepository(),
        signer=SigningKey.load_or_create(tmp_path, "policy"),
        keys_dir=tmp_path,
        control=ControlState(),
        publish_many=_nowhere,
        settings=PolicySettings(provenance_wait_s=0),
        clock=lambda: NOW,
    )


def _proposed(tool: str, args: dict[str, Any], action_id: str) -> ActionProposed:
    data = ActionProposedData(
        action_id=action_id, task_id="t-1", tenant_id="acme", step=1, tool=tool, args=args, proposer="tests", mode="autonomous"
    )
    return ActionProposed.build(data, source="tests")


def _mailing(recipients: int) -> dict[str, Any]:
    """A valid `send_email` (its schema takes up to 10,000 recipients): about 50 bytes of args a recipient."""
    return {"to": [f"customer-{i:06d}@customers.example" for i in range(recipients)], "subject": "News", "body": "Hello"}


async def test_a_valid_call_whose_decision_would_not_fit_is_denied_too_large_with_its_digest_and_no_args(service: PolicyService) -> None:
    args = _mailing(10_000)  # 0.36 MB of args, valid: its decision would be more than twice that
    record = await service.on_proposed(_proposed("send_email", args, "a-big"))

    assert len(record.decided_event.encode()) <= DEFAULT_MAX_DECISION_BYTES
    decided = decode("actions.decided", record.decided_event.encode())
    assert isinstance(decided, ActionDecided)
    assert (decided.data.outcome, [r.code.value for r in decided.data.reasons]) == ("deny", ["too_large"])
    assert decided.data.args == {}
    assert decided.data.action_digest == action_digest("acme", "send_email", args)  # the call it answers, by digest
    assert decided.data.facts["args_bytes"] > 350_000
    assert decided.data.facts["decision_bytes"] > DEFAULT_MAX_DECISION_BYTES
    assert "TIDEGATE_POLICY_MAX_DECISION_BYTES" in decided.data.reasons[0].message
    assert record.authorized_event is None
    assert record.reservation is None
    assert record.proposal.args == args  # the call is kept whole where the policy stores its decisions


async def test_a_decision_that_fits_is_unchanged(service: PolicyService) -> None:
    args = _mailing(3)
    decided = decode("actions.decided", (await service.on_proposed(_proposed("send_email", args, "a-small"))).decided_event.encode())
    assert decided.data.args == args
    assert "too_large" not in [r.code.value for r in decided.data.reasons]


def test_an_allow_whose_authorization_would_not_fit_is_denied_and_reserves_nothing(tmp_path: Path) -> None:
    args = {"ticket_id": "T-1", "note": "x" * 70_000}  # over the smallest bound the setting takes (64 KiB)
    call = Call(tenant_id="acme", task_id="t-1", tool="add_internal_note", args=args, proposer="tests")
    allow = Verdict(outcome="allow", reasons=(), policy_version="v1", risk=RiskClass.WRITE_LOW, facts={"mode": "draft"})
    proposal = _proposed("add_internal_note", args, "a-1").data
    common: dict[str, Any] = dict(
        key="a-1", verdict=allow, call=call, proposal=proposal, action_id="a-1", step=1, requested_by=None, via="policy",
        approval_id=None, signer=SigningKey.load_or_create(tmp_path, "policy"), now=NOW, ttl_s=60, latency_ms=1.0, traceparent=None,
    )  # fmt: skip

    fits = build_record(**common, max_bytes=768 * 1024)
    assert fits.outcome == "allow"
    assert fits.authorized_event is not None
    assert fits.reservation is not None

    denied = build_record(**common, max_bytes=64 * 1024)
    assert denied.outcome == "deny"
    assert denied.authorized_event is None
    assert denied.reservation is None
    assert len(denied.decided_event.encode()) <= 64 * 1024
    assert [r.code.value for r in decode("actions.decided", denied.decided_event.encode()).data.reasons] == ["too_large"]


def test_the_bound_counts_bytes_not_characters(tmp_path: Path) -> None:
    """A decision of many non-ASCII characters is measured as the broker measures it: in UTF-8 bytes."""
    args = {"ticket_id": "T-1", "note": "€" * 30_000}  # 30,000 characters, 90,000 bytes
    call = Call(tenant_id="acme", task_id="t-1", tool="add_internal_note", args=args, proposer="tests")
    deny = Verdict(outcome="deny", reasons=(), policy_version="v1", risk=RiskClass.WRITE_LOW, facts={"mode": "draft"})
    record = build_record(
        key="a-1", verdict=deny, call=call, proposal=_proposed("add_internal_note", args, "a-1").data, action_id="a-1", step=1,
        requested_by=None, via="policy", approval_id=None, signer=SigningKey.load_or_create(tmp_path, "policy"), now=NOW, ttl_s=60,
        latency_ms=1.0, traceparent=None, max_bytes=64 * 1024,
    )  # fmt: skip
    assert [r.code.value for r in decode("actions.decided", record.decided_event.encode()).data.reasons] == ["too_large"]
