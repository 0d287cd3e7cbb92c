"""`tidegate keys rotate --leaked`: the operator who suspects a key leaked cuts the thief's copy off now, not in ten minutes.

Acting as the thief: a copy of the policy's private key taken before the rotation, used to sign a decision afterwards.
Before `--leaked` existed the only choices were `keys rotate` (the copy still signs for `TIDEGATE_RETIRED_KEY_GRACE_S`,
600 s) or deleting the retired `.pub` as the docs said, which made everything the key had ever signed unverifiable.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import schemas as s
from schemas import ActionDecided, ActionDecidedData, decode, encode
from servicekit import KitSettings, deployment_authority, next_sequence, operator_key, service_key, sign_event
from servicekit.signing import SigningKey
from tidegate.cli import app
from tidegate.client.trust import Trust

runner = CliRunner()


@pytest.fixture
def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KitSettings:
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path / "run"))
    kit = KitSettings()
    for service in ("policy", "approval", "executor"):
        service_key(kit, service)
    return kit


def _decision(key: SigningKey) -> ActionDecided:
    data = ActionDecidedData.model_validate(
        {"action_id": "a-1", "task_id": "t-1", "tenant_id": "acme", "tool": "issue_refund", "args": {"amount": 9000},
         "action_digest": "d", "outcome": "allow", "reasons": [], "policy_version": "v1", "latency_ms": 0.0}
    )  # fmt: skip
    return decode("actions.decided", encode(sign_event(ActionDecided.build(data, source="tidegate/policy"), key)))


def _stolen_copy(kit: KitSettings, tmp_path: Path) -> SigningKey:
    """What the thief took: the policy's private key file, copied off the host before the operator noticed."""
    loot = tmp_path / "loot"
    (loot / "policy").mkdir(parents=True)
    shutil.copy(kit.keys_dir / "policy" / "policy.key", loot / "policy" / "policy.key")
    shutil.copy(kit.keys_dir / "policy.pub", loot / "policy.pub")
    return SigningKey.load_or_create(loot, "policy")


def _refusal(kit: KitSettings, event: ActionDecided, *, appended_ms: int | None = None, history: bool = False) -> str | None:
    refusal = deployment_authority(kit, history=history).check(encode(event), event, appended_ms=appended_ms)
    return None if refusal is None else refusal.code


def test_a_leaked_service_key_signs_nothing_once_rotated_with_leaked_and_what_it_signed_before_still_verifies(
    kit: KitSettings, tmp_path: Path
) -> None:
    stolen = _stolen_copy(kit, tmp_path)
    genuine = _decision(service_key(kit, "policy"))  # in flight when the leak is found: appended before the rotation
    before_ms = int(time.time() * 1000)

    rotated = runner.invoke(app, ["keys", "rotate", "policy", "--leaked"])
    assert rotated.exit_code == 0, rotated.output
    assert "without grace" in rotated.output, rotated.output
    assert "done:" in rotated.output, rotated.output

    forged = _decision(stolen)  # the thief signs an allow of a refund after the rotation
    assert forged.keyid == genuine.keyid
    assert _refusal(kit, forged) == "signer_retired"  # a live service, judging at the broker's time: refused now
    assert _refusal(kit, forged, appended_ms=int(time.time() * 1000)) == "signer_retired"
    assert not Trust.load(kit.keys_dir).believes(forged)  # nor does an outside agent's client believe it
    # What the broker appended before the rotation stays valid, for the services and for the audit's history reader.
    assert _refusal(kit, genuine, appended_ms=before_ms) is None
    assert _refusal(kit, genuine, appended_ms=before_ms, history=True) is None
    # The running policy signs with the new key: believed everywhere.
    fresh = _decision(service_key(kit, "policy"))
    assert fresh.keyid != genuine.keyid
    assert _refusal(kit, fresh) is None
    assert Trust.load(kit.keys_dir).believes(fresh)
    assert f"{genuine.keyid}  denied" in runner.invoke(app, ["keys", "list"]).output


def test_a_plain_rotation_still_gives_the_old_key_its_grace(kit: KitSettings, tmp_path: Path) -> None:
    """What `--leaked` changes: without it the stolen copy still signs for the grace (keys in flight must verify)."""
    stolen = _stolen_copy(kit, tmp_path)
    assert runner.invoke(app, ["keys", "rotate", "policy"]).exit_code == 0
    assert _refusal(kit, _decision(stolen)) is None


def test_a_leaked_rotation_also_ends_the_grace_of_a_key_rotated_just_before(kit: KitSettings, tmp_path: Path) -> None:
    """Rotated a minute ago, then the leak is found: the key retired a minute ago may be the one that leaked."""
    stolen = _stolen_copy(kit, tmp_path)
    assert runner.invoke(app, ["keys", "rotate", "policy"]).exit_code == 0
    assert runner.invoke(app, ["keys", "rotate", "policy", "--leaked"]).exit_code == 0
    assert _refusal(kit, _decision(stolen)) == "signer_retired"


def test_a_leaked_operator_key_signs_no_control_record_once_rotated(kit: KitSettings, tmp_path: Path) -> None:
    operator_key(kit)  # the CLI's operator key, made on first use
    loot = tmp_path / "oploot"
    loot.mkdir()
    shutil.copy(kit.operator_private_keys_dir / f"{kit.operator}.key", loot / f"{kit.operator}.key")
    stolen = SigningKey.load_or_create(tmp_path / "oppub", kit.operator, loot)
    assert runner.invoke(app, ["keys", "rotate", "operator", "--leaked"]).exit_code == 0
    clear = s.ControlKillswitchData(tenant_id="acme", tool="*", active=False, reason="cleared by the thief", set_by=kit.operator)
    record = sign_event(s.ControlKillswitch.build(clear, source="tidegate/cli"), stolen, sequence=next_sequence())
    refusal = deployment_authority(kit).check(s.encode(record), record)
    assert refusal is not None
    assert refusal.code == "signer_retired"
