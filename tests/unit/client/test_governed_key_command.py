"""`tidegate keys add-tool`: the reply key a governed function signs with, made where the client and the executor look."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import schemas as s
from servicekit import KitSettings, SigningKey, ToolCatalog, client_key, client_private_key, deployment_authority
from tidegate.cli import app
from tidegate.client import KeySigner

runner = CliRunner()


@pytest.fixture
def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KitSettings:
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    return KitSettings()


def reply() -> s.ToolReply:
    data = s.ToolReplyData(action_id="a", task_id="t", tenant_id="acme", tool="update_inventory", ok=True)
    return s.ToolReply.build(data, source="urn:tidegate:client:tests")


def test_the_key_add_tool_makes_is_the_one_a_served_function_signs_with_and_the_executor_accepts(kit: KitSettings) -> None:
    made = runner.invoke(app, ["keys", "add-tool", "update_inventory"])
    assert made.exit_code == 0, made.output
    folder = kit.keys_dir / "tools"
    assert f"TIDEGATE_CLIENT_TOOL_KEYS_DIR={folder}" in made.output.replace("\n", "")
    client_key(kit, "acme", "agent@acme.example")
    signer = KeySigner(client_private_key(kit, "acme", "agent@acme.example"), "agent@acme.example", tool_keys_dir=folder)
    signed = signer.sign(reply())
    authority = deployment_authority(kit, ToolCatalog.load(kit.tools_dir))  # as the executor verifies replies
    assert authority.check(s.encode(signed), signed) is None
    again = runner.invoke(app, ["keys", "add-tool", "update_inventory"])
    assert "kept" in again.output
    assert signer.sign(reply()).keyid == signed.keyid


def test_add_tool_refuses_a_tool_not_served_over_kafka_and_never_replaces_an_outside_services_key(kit: KitSettings, tmp_path: Path) -> None:
    assert "not a `topic` tool" in runner.invoke(app, ["keys", "add-tool", "issue_refund"]).output
    outside = SigningKey.load_or_create(tmp_path / "warehouse", "update_inventory")  # the warehouse team keeps its private key
    public = kit.keys_dir / "tools" / "update_inventory.pub"
    public.parent.mkdir(parents=True)
    public.write_bytes((tmp_path / "warehouse" / "update_inventory.pub").read_bytes())
    refused = runner.invoke(app, ["keys", "add-tool", "update_inventory"])
    assert refused.exit_code != 0
    assert "served elsewhere" in refused.output
    assert public.read_bytes() == (tmp_path / "warehouse" / "update_inventory.pub").read_bytes()
    assert outside.key_id.startswith("update_inventory-")
