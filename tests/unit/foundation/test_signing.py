"""Ed25519 keys: generated on first run with safe permissions, and nothing unsigned or altered verifies."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import schemas as s
from servicekit import Keyring, SigningKey, action_digest, approval_message, authorization_message


def test_key_is_created_once_private_and_stable(tmp_path: Path) -> None:
    first = SigningKey.load_or_create(tmp_path, "policy")
    again = SigningKey.load_or_create(tmp_path, "policy")
    assert first.key_id == again.key_id
    assert first.key_id.startswith("policy-")
    assert stat.S_IMODE((tmp_path / "policy" / "policy.key").stat().st_mode) == 0o600
    assert [p.name for p in (tmp_path / "policy").iterdir()] == ["policy.key"]  # the service's folder holds its private key alone
    assert (tmp_path / "policy.pub").exists()


def test_signature_verifies_only_for_the_same_bytes_and_key(tmp_path: Path) -> None:
    key = SigningKey.load_or_create(tmp_path, "policy")
    ring = Keyring.load(tmp_path, "policy")
    sig = key.sign(b"message")
    assert ring.verify(key.key_id, b"message", sig)
    assert not ring.verify(key.key_id, b"messagf", sig)
    assert not ring.verify("policy-000000000000", b"message", sig)
    assert not ring.verify(key.key_id, b"message", "not base64!!")


def test_a_key_of_another_name_is_not_trusted(tmp_path: Path) -> None:
    rogue = SigningKey.load_or_create(tmp_path, "approval")
    ring = Keyring.load(tmp_path, "policy")
    assert not ring.knows(rogue.key_id)
    assert not ring.verify(rogue.key_id, b"m", rogue.sign(b"m"))


def _authorized(args: dict[str, object], expires: datetime) -> s.ActionAuthorizedData:
    auth = s.Authorization(
        via="policy",
        policy_version="v1",
        action_digest=action_digest("acme", "issue_refund", args),
        issued_at=expires - timedelta(minutes=5),
        expires_at=expires,
        key_id="policy-x",
        signature="",
    )
    return s.ActionAuthorizedData(action_id="a-1", task_id="t-1", tenant_id="acme", tool="issue_refund", args=args, authorization=auth)


def test_authorization_message_covers_args_expiry_and_ignores_the_signature() -> None:
    when = datetime(2026, 11, 24, tzinfo=UTC)
    base = _authorized({"amount_usd": 10}, when)
    assert authorization_message(base) != authorization_message(_authorized({"amount_usd": 11}, when))
    assert authorization_message(base) != authorization_message(_authorized({"amount_usd": 10}, when + timedelta(seconds=1)))
    signed = base.model_copy(update={"authorization": base.authorization.model_copy(update={"signature": "abc"})})
    assert authorization_message(signed) == authorization_message(base)


def test_approval_message_binds_the_decision_type_and_approver() -> None:
    data = s.ApprovalData(
        approval_id="ap",
        action_id="a",
        task_id="t",
        tenant_id="acme",
        tool="issue_refund",
        args={},
        action_digest="d",
        approver="bob",
        expires_at=datetime(2026, 11, 24, tzinfo=UTC),
    )
    assert approval_message("tidegate.approval.granted", data) != approval_message("tidegate.approval.rejected", data)
    assert approval_message("tidegate.approval.granted", data) != approval_message(
        "tidegate.approval.granted", data.model_copy(update={"approver": "mallory"})
    )


def test_action_digest_depends_on_tenant_tool_and_args() -> None:
    assert action_digest("acme", "t", {"a": 1}) != action_digest("globex", "t", {"a": 1})
    assert action_digest("acme", "t", {"a": 1, "b": 2}) == action_digest("acme", "t", {"b": 2, "a": 1})
