"""Your own tools kept in a folder of your own (`TIDEGATE_EXTRA_TOOLS_DIRS`), not written into the checkout's catalog.

Integrator probe: "own tools must go into the checkout's catalog": a developer governing their agent had to copy
their tool's YAML into `catalog/tools/` of the Tidegate checkout, where an upgrade (`git pull`) collides with it.
Every service, the MCP gateway and the commands now read the extra folders after `tools_dir`; a tool declared
twice is refused naming both files, a folder that does not exist is refused naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic_settings import SettingsError
from typer.testing import CliRunner

from servicekit import REPO_ROOT, CatalogError, KitSettings, ToolCatalog
from servicekit.settings import settings_problems
from services.policy.engine import Call, Controls, History, decide
from services.policy.pack import PackSource, compile_pack
from tidegate.cli import app
from tidegate.mcp_gateway.settings import GatewaySettings

SHIPPED = REPO_ROOT / "catalog" / "tools"


def _my_tool(folder: Path, name: str = "lookup_my_order") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "name": name, "description": "Look an order up in my own system of record.", "risk": "read", "kind": "http",
        "url": "https://orders.example/lookup", "method": "GET", "tenants": ["acme"], "untrusted_output": False,
        "idempotent": True,
        "args_schema": {"type": "object", "additionalProperties": False, "required": ["order_id"],
                        "properties": {"order_id": {"type": "string", "pattern": "^O-[0-9]+$"}}},
    }  # fmt: skip
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_tool_in_an_extra_folder_is_in_the_catalog_beside_the_shipped_ones(tmp_path: Path) -> None:
    _my_tool(tmp_path / "mine")
    catalog = ToolCatalog.load(SHIPPED, tmp_path / "mine")
    assert "lookup_my_order" in catalog
    assert set(ToolCatalog.load(SHIPPED)) < set(catalog)
    assert catalog.arg_errors("lookup_my_order", {"order_id": "not-an-order"})


def test_the_policy_decides_a_call_of_it_instead_of_denying_an_unknown_tool(tmp_path: Path) -> None:
    _my_tool(tmp_path / "mine")
    call = Call("acme", "t", "lookup_my_order", {"order_id": "O-1"}, "me", mode="autonomous")
    policies = PackSource.from_dir(REPO_ROOT / "policies" / "default")
    without = decide(compile_pack(policies, ToolCatalog.load(SHIPPED)), call, History(), Controls())
    assert [(r.code, r.policy_id) for r in without.reasons] == [("no_permit", "builtin:unknown-tool")]
    kit = KitSettings(extra_tools_dirs=[tmp_path / "mine"])
    with_mine = decide(compile_pack(policies, ToolCatalog.load(*kit.tool_dirs)), call, History(), Controls())
    assert "builtin:unknown-tool" not in {r.policy_id for r in with_mine.reasons}
    assert with_mine.outcome == "allow", with_mine.reasons  # a trusted read the tenant may call


def test_a_tool_declared_in_two_folders_is_refused_naming_both_files(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "tag.yaml").write_text((SHIPPED / "tag_ticket.yaml").read_text())  # shadows the shipped tag_ticket
    with pytest.raises(CatalogError) as raised:
        ToolCatalog.load(SHIPPED, tmp_path / "mine")
    assert str(tmp_path / "mine" / "tag.yaml") in str(raised.value)
    assert str(SHIPPED / "tag_ticket.yaml") in str(raised.value)
    assert "'tag_ticket' is declared twice" in str(raised.value)


def test_an_extra_folder_that_does_not_exist_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=f"tool catalog directory {tmp_path / 'mistyped'} does not exist"):
        ToolCatalog.load(SHIPPED, tmp_path / "mistyped")


def test_an_empty_extra_folder_adds_nothing_and_is_not_an_error(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    assert set(ToolCatalog.load(SHIPPED, tmp_path / "mine")) == set(ToolCatalog.load(SHIPPED))


def test_the_setting_is_a_json_list_in_the_environment_and_a_bad_one_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_EXTRA_TOOLS_DIRS", json.dumps([str(tmp_path / "a"), str(tmp_path / "b")]))
    assert KitSettings().tool_dirs == (KitSettings().tools_dir, tmp_path / "a", tmp_path / "b")
    monkeypatch.setenv("TIDEGATE_MCP_EXTRA_TOOLS_DIRS", json.dumps([str(tmp_path / "a")]))
    assert GatewaySettings().tool_dirs == (GatewaySettings().tools_dir, tmp_path / "a")
    monkeypatch.setenv("TIDEGATE_EXTRA_TOOLS_DIRS", str(tmp_path / "a"))  # a bare path, not a JSON list
    with pytest.raises(SettingsError) as raised:
        KitSettings()
    problems = settings_problems(raised.value)
    assert problems
    assert problems[0].startswith("TIDEGATE_EXTRA_TOOLS_DIRS: Input should be JSON"), problems


def test_the_commands_read_the_extra_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setenv("TIDEGATE_KEYS_DIR", str(tmp_path / "keys"))
    _my_tool(tmp_path / "mine")
    monkeypatch.setenv("TIDEGATE_EXTRA_TOOLS_DIRS", json.dumps([str(tmp_path / "mine")]))
    validated = CliRunner().invoke(app, ["policy", "validate"])
    assert validated.exit_code == 0, validated.output
    (tmp_path / "mine" / "tag.yaml").write_text((SHIPPED / "tag_ticket.yaml").read_text())
    refused = CliRunner().invoke(app, ["policy", "validate"])
    assert refused.exit_code != 0
    assert "declared twice" in refused.output
    assert "tag.yaml" in refused.output


@pytest.mark.parametrize("command", [["keys", "list"], ["connectors", "list"]])
def test_a_command_given_a_missing_extra_folder_says_so_in_one_line(tmp_path: Path, command: list[str]) -> None:
    """The integrator who mistyped the folder: one line naming it and the setting, exit 2; before, a 60-line traceback."""
    import os
    import subprocess
    import sys

    missing = tmp_path / "my-agent" / "tools"
    env = os.environ | {"TIDEGATE_EXTRA_TOOLS_DIRS": json.dumps([str(missing)]), "TIDEGATE_KEYS_DIR": str(tmp_path / "keys")}
    done = subprocess.run(
        [sys.executable, "-c", "from tidegate.cli import main; main()", *command],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"tool catalog directory {missing} does not exist" in done.stderr
    assert "TIDEGATE_EXTRA_TOOLS_DIRS" in done.stderr
    assert "Traceback" not in done.stderr
    assert "╭" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
