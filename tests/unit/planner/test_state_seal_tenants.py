"""The seal of a task's state binds its tenant: acme's state never proves globex's task of the same id (review 5, F4).

A proof made before migration 008 (no tenant in what it signed) still proves the state it sealed, for the tenant and
task its text names only, so tasks running across the upgrade go on and such a proof cannot be moved to another tenant.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from servicekit import SigningKey
from services.planner.state_seal import StateSeal

TASK = "squat-T1001"
DEPLOYMENT = "tidegate."


def _state(tenant: str) -> str:
    return json.dumps({"task_id": TASK, "tenant_id": tenant, "plan": [], "steps": []})


def _sealed_before_008(signer: SigningKey, state_json: str) -> tuple[str, str]:
    """A proof as the planner made them before migration 008: task, deployment and digest, no tenant."""
    claims = ["tidegate.planner.task_state/1", TASK, DEPLOYMENT, hashlib.sha256(state_json.encode()).hexdigest()]
    return signer.key_id, signer.sign(json.dumps(claims).encode())


def test_a_state_sealed_for_one_tenant_does_not_prove_another_tenants_task_of_the_same_id(tmp_path: Path) -> None:
    signer = SigningKey.load_or_create(tmp_path, "planner")
    seal = StateSeal(signer, tmp_path)
    acme = _state("acme")
    proof = seal.sign("acme", TASK, DEPLOYMENT, acme)
    assert seal.check("acme", TASK, DEPLOYMENT, acme, proof.key_id, proof.signature) is None
    copied = seal.check("globex", TASK, DEPLOYMENT, acme, proof.key_id, proof.signature)  # acme's row copied over globex's
    assert copied is not None
    assert copied.reason == "altered"


def test_a_proof_made_before_the_upgrade_still_proves_its_own_tenants_state_only(tmp_path: Path) -> None:
    signer = SigningKey.load_or_create(tmp_path, "planner")
    seal = StateSeal(signer, tmp_path)
    acme = _state("acme")
    key_id, signature = _sealed_before_008(signer, acme)
    assert seal.check("acme", TASK, DEPLOYMENT, acme, key_id, signature) is None
    assert seal.check("globex", TASK, DEPLOYMENT, acme, key_id, signature).reason == "altered"  # type: ignore[union-attr]
    assert seal.check("acme", "another-task", DEPLOYMENT, acme, key_id, signature).reason == "altered"  # type: ignore[union-attr]
    assert seal.check("acme", TASK, DEPLOYMENT, acme.replace("[]", '["x"]', 1), key_id, signature) is not None
