"""A dead letter names the service that refused the record, and only that service's key may say so.

The reviewer's F5: `event.rejected` could be signed by any service's key whatever service its data named. An insider
with one service's key (the planner's, say) and its bus login wrote dead letters saying the policy had refused a
proposal, or the executor an authorization, that they had in fact allowed and run; the audit log recorded them as
valid, and `tidegate audit search --dead-letters` showed them as the policy's or the executor's refusals.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import schemas as s
from servicekit import SERVICES, KitSettings, deployment_authority, service_key, sign_event


@pytest.fixture
def kit(tmp_path: Path) -> KitSettings:
    (tmp_path / "keys").mkdir()
    return KitSettings(keys_dir=tmp_path / "keys")


def dead_letter(service: str) -> s.EventRejected:
    raw = '{"type": "tidegate.action.authorized"}'
    data = s.EventRejectedData(
        tenant_id="acme", task_id="t-1", topic="tidegate.actions.authorized", partition=0, offset=7, key="t-1", raw_value=raw,
        size=len(raw), sha256=hashlib.sha256(raw.encode()).hexdigest(), code="authorization_replayed",
        error="differs and is not executed", service=service,
    )  # fmt: skip
    return s.EventRejected.build(data, source=f"tidegate/{service}")


def verdict(kit: KitSettings, event: s.EventRejected, *, history: bool = False) -> str | None:
    raw = s.encode(event)
    refusal = deployment_authority(kit, history=history).check(raw, s.decode_any(raw))
    return None if refusal is None else refusal.code


def test_a_service_key_signs_dead_letters_in_its_own_name_only(kit: KitSettings) -> None:
    for signer in SERVICES:
        key = service_key(kit, signer)
        for named in SERVICES:
            expected = None if named == signer else "signer_not_allowed"
            assert verdict(kit, sign_event(dead_letter(named), key)) == expected, (signer, named)


def test_the_audit_log_reads_a_dead_letter_forged_in_the_executors_name_as_not_valid(kit: KitSettings) -> None:
    forged = sign_event(dead_letter("executor"), service_key(kit, "planner"))
    assert verdict(kit, forged, history=True) == "signer_not_allowed"
