"""The client signs exactly the bytes the services verify, with the key an operator registered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas import ActionDecided, ActionDecidedData, ActionProposed, ActionProposedData, ToolReply, ToolReplyData, decode, encode
from servicekit import KitSettings, client_key, client_private_key, deployment_authority, service_key, sign_event
from servicekit.signing import SigningKey, rotate
from tidegate.client import ClientSettings, KeySigner, signer_for
from tidegate.client.trust import Trust, TrustNotWired


def _proposal(requested_by: str) -> ActionProposed:
    data = ActionProposedData(
        action_id="a-1", task_id="t-1", tenant_id="acme", step=1, tool="tag_ticket",
        args={"ticket_id": "T-1", "tags": ["x"]}, proposer="external:client", requested_by=requested_by,
    )  # fmt: skip
    return ActionProposed.build(data, source="urn:test")


def test_a_registered_client_key_signs_what_the_services_accept(tmp_path: Path) -> None:
    kit = KitSettings(run_dir=tmp_path)
    client_key(kit, "acme", "bot@acme.example")  # what `tidegate clients add acme bot@acme.example` registers
    signer = signer_for(ClientSettings(signing_key_path=client_private_key(kit, "acme", "bot@acme.example"), principal="bot@acme.example"))
    assert isinstance(signer, KeySigner)
    authority = deployment_authority(kit)

    event = signer.sign(_proposal("bot@acme.example"))
    assert authority.check(encode(event), event) is None

    tampered = event.model_copy(update={"data": event.data.model_copy(update={"args": {"ticket_id": "T-2", "tags": ["x"]}})})
    refusal = authority.check(encode(tampered), tampered)
    assert refusal is not None
    assert refusal.code == "signature_invalid"

    someone_else = signer.sign(_proposal("ceo@acme.example"))  # the key's principal is not the requester
    refusal = authority.check(encode(someone_else), someone_else)
    assert refusal is not None
    assert refusal.code == "signer_not_allowed"


def test_a_governed_tools_reply_is_signed_with_that_tools_key(tmp_path: Path) -> None:
    kit = KitSettings(run_dir=tmp_path)
    client_key(kit, "acme", "bot@acme.example")
    tools_dir = tmp_path / "tool-keys"
    SigningKey.load_or_create(tools_dir, "bench_echo")  # the tool service's key; the catalog names its .pub
    signer = KeySigner(client_private_key(kit, "acme", "bot@acme.example"), "bot@acme.example", tools_dir / "bench_echo")
    reply = ToolReply.build(
        ToolReplyData(action_id="a-1", task_id="t-1", tenant_id="acme", tool="bench_echo", ok=True, result={}), source="urn:test"
    )
    signed = signer.sign(reply)
    assert signed.keyid is not None
    assert signed.keyid.startswith("bench_echo-")
    from servicekit.authority import authority_for

    authority = authority_for(kit.keys_dir, kit.operator_keys_dir, kit.client_keys_dir)
    authority.tool_keys["bench_echo"] = tools_dir / "bench_echo.pub"
    authority.reload()
    assert authority.check(encode(signed), signed) is None


def _decided(kit: KitSettings, service: str) -> ActionDecided:
    data = ActionDecidedData.model_validate(
        {"action_id": "a-1", "task_id": "t-1", "tenant_id": "acme", "tool": "tag_ticket", "args": {}, "action_digest": "d",
         "outcome": "allow", "reasons": [], "policy_version": "v1", "latency_ms": 0.0}
    )  # fmt: skip
    event = sign_event(ActionDecided.build(data, source="tidegate/policy"), service_key(kit, service))
    return decode("actions.decided", encode(event))  # as the client reads it off the wire


def test_the_client_believes_what_the_services_sign_with_the_deployments_keys_and_finds_a_rotated_key(tmp_path: Path) -> None:
    kit = KitSettings(run_dir=tmp_path)
    for service in ("policy", "approval", "executor"):
        service_key(kit, service)  # what the services make on first start
    trust = Trust.load(kit.keys_dir)
    trust.require()
    assert trust.believes(_decided(kit, "policy"))
    assert not trust.believes(_decided(kit, "executor"))  # a genuine key, of a service that may not decide
    rotate(kit.keys_dir, "policy")  # `tidegate keys rotate policy` while the client runs
    assert trust.believes(_decided(kit, "policy"))


def test_a_client_without_the_deployments_keys_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(TrustNotWired, match="TIDEGATE_CLIENT_SERVICE_KEYS_DIR"):
        Trust.load(tmp_path).require()


def test_the_client_believes_nothing_new_from_a_stolen_retired_key_after_the_grace(tmp_path: Path) -> None:
    """As the services do: a copy of a rotated-out policy key, stolen before the rotation, decides nothing for the client."""
    kit = KitSettings(run_dir=tmp_path)
    for service in ("policy", "approval", "executor"):
        service_key(kit, service)
    stolen = service_key(kit, "policy")  # the attacker's copy, taken before the rotation
    rotate(kit.keys_dir, "policy", now=datetime.now(UTC) - timedelta(hours=1))  # retired an hour ago
    forged = sign_event(_decided(kit, "approval").model_copy(update={"keyid": None, "signature": None}), stolen)
    assert not Trust.load(kit.keys_dir, retired_grace_s=600).believes(forged)
    assert Trust.load(kit.keys_dir, retired_grace_s=7200).believes(forged)  # still within a longer grace: believed, as before
    assert Trust.load(kit.keys_dir).believes(_decided(kit, "policy"))  # the new key is believed
