"""`tidegate policy validate` warns about a tool served outside the deployment whose catalog entry names no tenants."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from servicekit import REPO_ROOT
from tidegate.cli import app

runner = CliRunner()
UNNAMED = {"name": "acme_lookup", "description": "d", "risk": "read", "kind": "mcp", "untrusted_output": True,
           "mcp": {"url": "http://127.0.0.1:9/mcp", "tool": "lookup"}, "args_schema": {"type": "object"}}  # fmt: skip


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COLUMNS", "400")
    shutil.copytree(REPO_ROOT / "catalog" / "tools", tmp_path / "tools")
    return tmp_path / "tools"


def test_the_repos_catalog_names_the_tenants_of_every_outside_tool(tools: Path) -> None:
    result = runner.invoke(app, ["policy", "validate", "--tools", str(tools)])
    assert result.exit_code == 0, result.output
    assert "names no `tenants`" not in result.output


def test_an_outside_tool_without_tenants_is_warned_about_and_the_pack_stays_valid(tools: Path) -> None:
    (tools / "acme_lookup.yaml").write_text(yaml.safe_dump(UNNAMED))
    own = UNNAMED | {"name": "own_lookup", "kind": "python", "mcp": None, "entrypoint": "services.executor.systems.tickets:get_ticket"}
    (tools / "own_lookup.yaml").write_text(yaml.safe_dump(own))
    result = runner.invoke(app, ["policy", "validate", "--tools", str(tools)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "names no `tenants`" in line]
    assert len(warnings) == 1, result.output
    assert "tool acme_lookup (kind mcp, served outside the deployment)" in warnings[0]
    assert "denied tool_not_granted" in warnings[0]


def test_a_reply_key_file_that_does_not_exist_is_warned_about(tools: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Governance probe F4: the operator named tools/issue_store_credit.pub, which did not exist; validate said `✓` and nothing else."""
    keys = tmp_path / "keys"
    monkeypatch.setenv("TIDEGATE_KEYS_DIR", str(keys))
    (keys / "tools").mkdir(parents=True)
    (tools / "update_inventory.yaml").unlink()  # the shipped topic tool, whose key its service makes on its first run
    credit = UNNAMED | {"name": "issue_store_credit", "kind": "topic", "mcp": None, "tenants": ["initrode"]}
    (tools / "issue_store_credit.yaml").write_text(yaml.safe_dump(credit | {"reply_key_file": "tools/issue_store_credit.pub"}))
    result = runner.invoke(app, ["policy", "validate", "--tools", str(tools)])
    assert result.exit_code == 0, result.output
    [warning] = [line for line in result.output.splitlines() if "reply_key_file" in line]
    assert f"tool issue_store_credit: its reply_key_file tools/issue_store_credit.pub does not exist under {keys}" in warning
    assert "every reply of it is refused" in warning
    (keys / "tools" / "issue_store_credit.pub").write_text("a public key")
    again = runner.invoke(app, ["policy", "validate", "--tools", str(tools)])
    assert "reply_key_file" not in again.output
