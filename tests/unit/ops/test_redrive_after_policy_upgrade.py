"""The operator following upgrade note 22: a decision a release 21 policy dead-lettered is redriven once the policy is upgraded.

Release 22's approval service signs its decisions over `approval_document`, which a release 21 policy cannot verify: it
dead-letters them `approval_unauthenticated`, and note 22 tells the operator to redrive them once the policy is
upgraded. `redrive` refused every `approval_unauthenticated` dead letter as a refusal for authority, so the humans' grants
of that window were lost. One whose decision verifies with the approval keys on file, as a release 22 policy verifies
it, is redrivable now; one that does not verify (a forgery) is still refused, and so is any without the keys.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import schemas as s
from servicekit import Keyring, KitSettings, approval_document, service_key, sign_event
from tidegate.ops.redrive import DeadLetter, why_not

PREFIX = "tidegate."
AT = datetime(2026, 12, 7, 3, tzinfo=UTC)


@pytest.fixture
def kit(tmp_path: Path) -> KitSettings:
    (tmp_path / "keys").mkdir()
    return KitSettings(keys_dir=tmp_path / "keys")


def grant(kit: KitSettings, *, tampered: bool = False) -> bytes:
    """A grant as release 22's approval service sends it: its data signed over `approval_document`, the event by its key."""
    key = service_key(kit, "approval")
    data = s.ApprovalData(
        approval_id="ap-1", action_id="a-1", task_id="t-1", tenant_id="acme", tool="issue_refund", args={"amount": 900},
        action_digest="d" * 64, expires_at=AT + timedelta(hours=1), decided_at=AT, approver="bob", key_id=key.key_id,
    )  # fmt: skip
    data = data.model_copy(update={"signature": key.sign(approval_document("tidegate.approval.granted", data))})
    if tampered:  # the approval service's Kafka login and key, and a grant for more than the human approved
        data = data.model_copy(update={"args": {"amount": 9000}})
    return s.encode(sign_event(s.ApprovalGranted.build(data, source="tidegate/approval"), key))


def dead_letter(kit: KitSettings, raw: bytes) -> DeadLetter:
    """The release 21 policy's dead letter of `raw`: `approval_unauthenticated`."""
    data = s.EventRejectedData(
        tenant_id="acme", task_id="t-1", topic=PREFIX + "approvals", partition=0, offset=7, raw_value=raw.decode(), size=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(), code="approval_unauthenticated", error="signature does not verify", service="policy",
    )  # fmt: skip
    event = sign_event(s.EventRejected.build(data, source="tidegate/policy"), service_key(kit, "policy"))
    return DeadLetter(event.id, AT, "deadletter[0]@3", event)


def test_a_grant_the_former_policy_could_not_verify_is_redrivable_once_it_verifies(kit: KitSettings) -> None:
    dl = dead_letter(kit, grant(kit))
    assert why_not(dl, PREFIX, approval_keys=Keyring.load(kit.keys_dir, "approval")) is None


def test_a_grant_that_does_not_verify_is_still_refused(kit: KitSettings) -> None:
    dl = dead_letter(kit, grant(kit, tampered=True))
    why = why_not(dl, PREFIX, approval_keys=Keyring.load(kit.keys_dir, "approval"))
    assert why is not None
    assert "does not verify" in why


def test_without_the_approval_keys_no_decision_is_redriven(kit: KitSettings) -> None:
    dl = dead_letter(kit, grant(kit))
    assert why_not(dl, PREFIX) is not None
    other = KitSettings(keys_dir=kit.keys_dir.parent / "elsewhere")
    other.keys_dir.mkdir()
    service_key(other, "approval")  # another deployment's approval key
    assert why_not(dl, PREFIX, approval_keys=Keyring.load(other.keys_dir, "approval")) is not None
