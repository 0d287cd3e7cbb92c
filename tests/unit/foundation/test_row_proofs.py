"""The kit's one row seal (`servicekit.row_proofs`): what every row that grants is signed and checked with.

The approval's tokens, ballots and endpoints, the policy's known payees and the operators' connector grants are
sealed by it. Their stored signatures were made by the code each had before the kit held it: the proofs below were
made by that code (deterministic Ed25519, fixed keys) and must still verify, byte for byte, or every stored row of
a deployment would be refused after the upgrade.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import REGISTRY

import connectors as c
from servicekit.authority import Authority
from servicekit.row_proofs import (
    ALTERED,
    NOT_ALLOWED,
    UNKNOWN_KEY,
    UNSIGNED,
    RowSeal,
    ServiceKeys,
    operator_named,
    operator_not_denied,
)
from servicekit.signing import SigningKey, retire
from servicekit.vault import Sealed
from services.approval._row_proofs import approval_seals
from services.policy.payees import PayeeSeal


def _key(name: str, seed: str) -> SigningKey:
    return SigningKey(name, Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed.encode()).digest()))


SERVICE, OPERATOR, POLICY = _key("approval", "approval-seed"), _key("ops", "ops-seed"), _key("policy", "policy-seed")

TOKEN = {
    "token_id": "t-1",
    "token_sha256": "ab" * 32,
    "approver": "ann@acme.example",
    "tenant_id": "acme",
    "groups": ["finance"],
    "operator": False,
    "created_at": 1700000000000000,
    "expires_at": 1702592000000000,
}
BALLOT = {
    "approval_id": "ap-1",
    "action_id": "a-1",
    "tenant_id": "acme",
    "tool": "refund",
    "action_digest": "cd" * 32,
    "edited_args": None,
    "approver": "ann@acme.example",
    "groups": ["finance"],
    "via": "token",
}
ENDPOINT = {
    "tenant_id": "acme",
    "endpoint_id": "chat",
    "url": "https://chat.acme.example/hook",
    "approvers": ["ann@acme.example"],
    "enabled": True,
    "source": "api",
    "secret_key_id": "0123456789abcdef",
    "secret_sha256": "ef" * 32,
}
GRANT = c.Grant(
    "acme",
    "zendesk",
    True,
    frozenset({"zendesk_get_ticket"}),
    {"base_url": "https://acme.zendesk.example"},
    Sealed("0123456789abcdef", b"ciphertext"),
)
SIGNED_AT = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)

# Made by the code before `servicekit.row_proofs` (approval's `_row_proofs.RowSeal`, policy's `PayeeSeal`, `connectors._proof`).
OLD_TOKEN = ("ops-3c39293a7d29", "0IPEoYZsLlQKNzDiRmvIHTq60XEVadK6lg0K3Zzar-uMHRPZKEqVHvvYTVE9uNDI6-SWNXAYjZt92myi4V8dCw")
OLD_BALLOT = ("approval-628a4df7186a", "o9AVEwSIH_7cycIf1wXDZTjY66uKUqJ7jGGEgVumcOys-1QrZKOjX38YXLzwxam-wFS7BT665W7D-ajFKpHVCw")
OLD_ENDPOINT = ("approval-628a4df7186a", "NQlWlPevDXvtEvmrscPlP5EF0EwKtQb5i-C2LpOvwatW4-qGGFvt4ojTSTB4Y9Src1IbEljNBzicbdWrLRDECw")
OLD_PAYEE = ("policy-be82c61f3787", "SmEarKgntqCgNKqCGOzM8VCpxfU8d_p1SnXif9jgjXz73WZx0Xm1jqT63-wkkbJzOCkztK4A6rL4MhNDRW19BQ")
OLD_GRANT = ("ops-3c39293a7d29", "WoOdwZGRGFldWDaYCcPjOO_8gcSE3FhYPQTcuL2c_4Z5EEWTGaFABRuoPWsdhIiwUEwOh1ue_z4P7_2gPUSNBA")


def _publish(path: Path, key: SigningKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    public = key.private.public_key()
    path.write_bytes(public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """A deployment's public keys: the approval service's and the policy's, and operator `ops` on the allow-list."""
    keys = tmp_path / "keys"
    _publish(keys / "approval.pub", SERVICE)
    _publish(keys / "policy.pub", POLICY)
    _publish(keys / "operators" / "ops.pub", OPERATOR)
    return keys


def _authority(keys: Path) -> Authority:
    return Authority(keys, keys / "operators", keys / "clients", recheck_s=0.0)


def test_proofs_the_former_code_stored_still_verify_and_the_kit_makes_the_same(keys: Path) -> None:
    seals = approval_seals(_authority(keys), service_key=SERVICE)
    assert seals.tokens.why_not(TOKEN, *OLD_TOKEN) is None
    assert seals.ballots.why_not(BALLOT, *OLD_BALLOT) is None
    assert seals.endpoints.why_not(ENDPOINT, *OLD_ENDPOINT) is None
    assert (seals.ballots.sign(BALLOT).key_id, seals.ballots.sign(BALLOT).signature) == OLD_BALLOT
    assert (seals.endpoints.sign(ENDPOINT).key_id, seals.endpoints.sign(ENDPOINT).signature) == OLD_ENDPOINT
    by_operator = approval_seals(_authority(keys), operator_key=OPERATOR)
    assert (by_operator.tokens.sign(TOKEN).key_id, by_operator.tokens.sign(TOKEN).signature) == OLD_TOKEN

    payees = PayeeSeal(POLICY, keys)
    assert payees.known("acme", "cus_42", *OLD_PAYEE)
    assert (payees.prove("acme", "cus_42").key_id, payees.prove("acme", "cus_42").signature) == OLD_PAYEE

    stored = c.Grant(**{**GRANT.__dict__, "proof": c.GrantProof(*OLD_GRANT, "ops", SIGNED_AT)})
    c.GrantVerifier(_authority(keys)).check(stored)  # raises if refused
    assert c.GrantSigner(OPERATOR, clock=lambda: SIGNED_AT).sign(GRANT).proof == stored.proof


def test_each_changed_claim_breaks_the_former_proofs(keys: Path) -> None:
    seals = approval_seals(_authority(keys), service_key=SERVICE)
    assert seals.tokens.why_not({**TOKEN, "groups": ["finance", "admins"]}, *OLD_TOKEN) is not None
    assert seals.ballots.why_not({**BALLOT, "approver": "mallory@acme.example"}, *OLD_BALLOT) is not None
    assert seals.endpoints.why_not({**ENDPOINT, "url": "https://evil.example"}, *OLD_ENDPOINT) is not None
    assert seals.endpoints.why_not(ENDPOINT, *OLD_BALLOT) is not None  # another row's proof (and another domain)
    assert not PayeeSeal(POLICY, keys).known("acme", "acct_attacker_99", *OLD_PAYEE)
    old_proof = c.GrantProof(*OLD_GRANT, "ops", SIGNED_AT)
    moved = c.Grant(**{**GRANT.__dict__, "connection": {"base_url": "http://127.0.0.1:1"}, "proof": old_proof})
    with pytest.raises(c.GrantRefused) as refused:
        c.GrantVerifier(_authority(keys)).check(moved)
    assert refused.value.code == c.GRANT_TAMPERED


def _seal(keys: Path, **kwargs: Any) -> RowSeal:
    only_approval = kwargs.pop("may_sign", lambda p, claims: p.kind == "service" and p.name == "approval")
    return RowSeal("approval", "things", b"tidegate-test-thing\n", SERVICE, _authority(keys), only_approval, **kwargs)


def test_a_check_says_why_a_row_is_refused(keys: Path, tmp_path: Path) -> None:
    seal = _seal(keys)
    proof = seal.sign({"n": 1})
    assert seal.check({"n": 1}, proof.key_id, proof.signature) is None
    assert seal.check({"n": 1}, None, proof.signature).reason == UNSIGNED  # type: ignore[union-attr]
    assert seal.check({"n": 1}, "approval-000000000000", proof.signature).reason == UNKNOWN_KEY  # type: ignore[union-attr]
    assert seal.check({"n": 2}, proof.key_id, proof.signature).reason == ALTERED  # type: ignore[union-attr]
    assert seal.check({"n": 1}, proof.key_id, "not-base64!").reason == ALTERED  # type: ignore[union-attr]
    by_operator = RowSeal("approval", "things", b"tidegate-test-thing\n", OPERATOR).sign({"n": 1})
    refused = seal.check({"n": 1}, by_operator.key_id, by_operator.signature)
    assert refused is not None
    assert (refused.reason, refused.why) == (NOT_ALLOWED, "operator ops may not sign it")
    only_operators = _seal(keys, trusts=lambda p, claims: p.kind == "operator")
    assert only_operators.check({"n": 1}, proof.key_id, proof.signature).reason == UNKNOWN_KEY  # type: ignore[union-attr]


def test_a_row_an_operator_signs_counts_only_by_the_operator_it_names_with_a_key_not_taken_away(keys: Path) -> None:
    seal = RowSeal("audit", "things", b"tidegate-test-thing\n", OPERATOR, _authority(keys), operator_not_denied, operator_named("by"))
    proof = seal.sign({"by": "ops"})
    assert seal.check({"by": "ops"}, proof.key_id, proof.signature) is None
    assert seal.check({"by": "ann"}, proof.key_id, proof.signature).reason == UNKNOWN_KEY  # type: ignore[union-attr]  # not whom it names
    by_service = RowSeal("audit", "things", b"tidegate-test-thing\n", SERVICE).sign({"by": "approval"})
    assert seal.check({"by": "approval"}, by_service.key_id, by_service.signature).reason == UNKNOWN_KEY  # type: ignore[union-attr]  # no operator
    retire(keys / "operators", "ops", grace=True)  # `tidegate keys rotate operator`: what the old key signed stands
    assert seal.check({"by": "ops"}, proof.key_id, proof.signature) is None
    _publish(keys / "operators" / "ops.pub", OPERATOR)
    retire(keys / "operators", "ops", grace=False)  # `tidegate keys deny-operator`
    refused = seal.check({"by": "ops"}, proof.key_id, proof.signature)
    assert refused is not None
    assert refused.reason == NOT_ALLOWED


def _refused(service: str, table: str, reason: str) -> float:
    return REGISTRY.get_sample_value("tidegate_rows_refused_total", {"service": service, "table": table, "reason": reason}) or 0.0


def test_a_refusal_is_logged_and_counted_under_the_service_that_owns_the_row(keys: Path, caplog: pytest.LogCaptureFixture) -> None:
    for service in ("executor", "approval"):
        seal = RowSeal(service, "things", b"d\n", SERVICE, _authority(keys))
        before = _refused(service, "things", "invalid"), _refused(service, "things", "unsigned")
        with caplog.at_level(logging.WARNING, logger="servicekit.row_proofs"):
            seal.refused("thing 7", "unsigned", "write it again")
            seal.refused("thing 8", "its signature does not verify", "write it again")
        assert (_refused(service, "things", "invalid"), _refused(service, "things", "unsigned")) == (before[0] + 1, before[1] + 1)
        assert f"{service}: thing 7 refused: unsigned; write it again" in caplog.text


def test_a_seal_that_logs_once_still_counts_every_read(keys: Path, caplog: pytest.LogCaptureFixture) -> None:
    seal = _seal(keys, log_once=True)
    before = _refused("approval", "things", "invalid")
    with caplog.at_level(logging.WARNING, logger="servicekit.row_proofs"):
        for _ in range(3):
            seal.refused("thing 7", "altered", "fix", row=("thing", 7))
    assert _refused("approval", "things", "invalid") == before + 3
    assert caplog.text.count("thing 7 refused") == 1


def test_service_keys_find_a_key_rotated_since_start_at_most_once_per_reload_window(keys: Path) -> None:
    now = [0.0]
    holders = ServiceKeys(keys, "policy", reload_s=5.0, monotonic=lambda: now[0])
    assert [p.name for p in holders.principals(OLD_PAYEE[0])] == ["policy"]
    retire(keys, "policy")  # the key is kept as retired, and a new one is published
    newer = _key("policy", "policy-seed-2")
    _publish(keys / "policy.pub", newer)
    assert holders.principals(newer.key_id) == []  # within the window: the disk is not read again
    now[0] = 5.0
    assert [p.name for p in holders.principals(newer.key_id)] == ["policy"]
    assert holders.principals(OLD_PAYEE[0])[0].retired_at is not None  # the retired key still verifies what it signed
