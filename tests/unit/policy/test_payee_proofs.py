"""A stored known payee counts only with its policy key's proof (`services.policy.payees.PayeeSeal`).

The rows are written by the policy's own database login, which an attacker may hold; the proof is made with the
policy's signing key, which the database does not hold. A key retired by `tidegate keys rotate` still proves what it
signed. The end-to-end attack (the login inserts a row, the decision stays a deny) is tests/security/test_policy_login.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from servicekit import SigningKey, rotate
from services.policy.payees import PayeeSeal


def _refused() -> float:
    return sum(
        REGISTRY.get_sample_value("tidegate_rows_refused_total", {"service": "policy", "table": "known_payees", "reason": reason}) or 0.0
        for reason in ("unsigned", "invalid")
    )


@pytest.fixture
def seal(tmp_path: Path) -> PayeeSeal:
    return PayeeSeal(SigningKey.load_or_create(tmp_path, "policy"), tmp_path)


def test_a_payee_the_policy_proved_is_known_and_only_for_its_tenant_and_payee(seal: PayeeSeal) -> None:
    proof = seal.prove("acme", "cus_42")
    assert seal.known("acme", "cus_42", proof.key_id, proof.signature)
    assert not seal.known("globex", "cus_42", proof.key_id, proof.signature)  # another tenant's row with acme's proof
    assert not seal.known("acme", "acct_attacker_99", proof.key_id, proof.signature)  # the proof moved to another payee


def test_a_row_without_proof_or_with_a_forged_one_is_refused_logged_once_and_counted(
    seal: PayeeSeal, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    attacker = SigningKey.load_or_create(tmp_path / "elsewhere", "policy")  # a key of the same name that is not the deployment's
    forged = attacker.sign(b'["tidegate.policy.known_payee/1", "acme", "acct_attacker_99"]')
    before = _refused()
    with caplog.at_level(logging.WARNING, logger="services.policy.payees"):
        for _ in range(3):
            assert not seal.known("acme", "acct_attacker_99", None, None)  # the finding's INSERT: no proof at all
            assert not seal.known("acme", "acct_attacker_99", attacker.key_id, forged)
            assert not seal.known("acme", "acct_attacker_99", seal.prove("acme", "other").key_id, "not-base64!")
    assert _refused() - before == 9  # every read counts
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3  # once per row
    assert "counted as a new payee" in lines[0]
    assert "has no proof" in lines[0]
    assert "tidegate tenant set acme --payee" in lines[0]


def test_what_a_retired_key_signed_still_proves_a_payee(tmp_path: Path) -> None:
    signer = SigningKey.load_or_create(tmp_path, "policy")
    old = PayeeSeal(signer, tmp_path).prove("acme", "cus_42")
    rotate(tmp_path, "policy")  # `tidegate keys rotate policy`: the old private key is gone, its public key stays
    after = PayeeSeal(SigningKey.load_or_create(tmp_path, "policy"), tmp_path)
    assert after.prove("acme", "cus_42").key_id != old.key_id
    assert after.known("acme", "cus_42", old.key_id, old.signature)


def test_a_seal_that_started_before_a_rotation_proves_with_the_new_key_and_knows_the_old(tmp_path: Path) -> None:
    signer = SigningKey.load_or_create(tmp_path, "policy")
    signer_recheck = SigningKey(signer.name, signer.private, path=tmp_path / "policy" / "policy.key", recheck_s=0)
    seal = PayeeSeal(signer_recheck, tmp_path)
    old = seal.prove("acme", "cus_42")
    rotate(tmp_path, "policy")
    new = seal.prove("acme", "cus_43")  # the running service follows its key file (`SigningKey`)
    assert new.key_id != old.key_id
    assert seal.known("acme", "cus_42", old.key_id, old.signature)
    assert seal.known("acme", "cus_43", new.key_id, new.signature)
