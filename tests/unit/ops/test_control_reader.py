"""The CLI's reader of `control`/`directory` obeys only what the services obey: a forged or replayed record never becomes current."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import schemas as s
from servicekit import ControlState, KitSettings, SigningKey, deployment_authority, service_key, sign_as_operator, sign_event
from tidegate.commands.tenant import tenant_record
from tidegate.ops.control import apply_trusted


@pytest.fixture
def kit(tmp_path: Path) -> KitSettings:
    (tmp_path / "keys").mkdir()  # a deployment's keys folder: `service_key` refuses one that is not there
    return KitSettings(keys_dir=tmp_path / "keys")


def tenant(settings: dict[str, object], set_by: str = "ops") -> s.ControlTenant:
    return s.ControlTenant.build(s.ControlTenantData(tenant_id="initech", settings=settings, set_by=set_by), source="tidegate/cli")


def wire(event: s.Envelope) -> bytes:
    return s.encode(event)


async def test_a_forged_tenant_record_never_becomes_current_nor_gets_merged(kit: KitSettings) -> None:
    authority = deployment_authority(kit)
    state = ControlState()
    genuine = sign_as_operator(kit, tenant({"allow_autonomous": False}))
    assert await apply_trusted(state, authority, "control", wire(genuine)) is None

    junk = json.loads(wire(tenant({"allow_autonomous": True}, set_by="mallory")))
    junk |= {"keyid": genuine.keyid, "signature": "junk", "sequence": 2**62}  # the operator's key id, a made-up signature
    mallory = SigningKey.load_or_create(kit.keys_dir / "elsewhere", "mallory")  # a key of its own, not on the allow-list
    unknown = sign_event(tenant({"allow_autonomous": True}), mallory, sequence=2**62)
    insider = sign_event(tenant({"allow_autonomous": True}), service_key(kit, "executor"), sequence=2**62)  # a service key
    accepted: list[s.Envelope] = []
    refused = [
        await apply_trusted(state, authority, "control", raw, accepted)
        for raw in (json.dumps(junk).encode(), wire(unknown), wire(insider), wire(genuine), b"{not json")
    ]
    assert [str(why).split(":")[0] for why in refused] == [
        "signature_invalid",
        "unknown_key",
        "signer_not_allowed",
        "control_replayed",
        "invalid",
    ]
    assert accepted == []
    assert state.tenants["initech"].settings == {"allow_autonomous": False}
    # what `tidegate tenant set initech --refund-threshold 100` merges and then signs with the operator key
    assert tenant_record(dict(state.tenants["initech"].settings), {"refund_threshold_usd": 100}, []) == {
        "allow_autonomous": False,
        "refund_threshold_usd": 100,
    }


async def test_a_directory_record_is_obeyed_from_the_approval_key_only(kit: KitSettings) -> None:
    authority = deployment_authority(kit)
    data = s.DirectoryUpdatedData(tenant_id="initech", directory=s.TenantDirectory(internal_domains=["initech.example"]), set_by="a")
    genuine = sign_event(s.DirectoryUpdated.build(data, source="tidegate/approval"), service_key(kit, "approval"), sequence=1)
    forged = sign_event(s.DirectoryUpdated.build(data, source="tidegate/approval"), service_key(kit, "policy"), sequence=2)
    state = ControlState()
    assert (await apply_trusted(state, authority, "directory", wire(forged)) or "").startswith("signer_not_allowed")
    assert "initech" not in state.directories
    assert await apply_trusted(state, authority, "directory", wire(genuine)) is None
    assert state.directories["initech"].directory.internal_domains == ["initech.example"]
