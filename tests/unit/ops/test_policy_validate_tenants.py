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
