"""The LangGraph example serves a tool of its own, declared as a deployment serves one (finding integrator4 #5).

Its old `issue_refund` was a built-in `python` tool: against a deployment the executor runs that itself, so serving it
could never work. `examples/integrations/catalog/refund_customer.yaml` is what to copy into the catalog.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from servicekit import REPO_ROOT, KitSettings, ToolCatalog
from tidegate.cli import app

EXAMPLES = REPO_ROOT / "examples" / "integrations"


def test_the_examples_tool_is_a_topic_tool_of_its_own_with_a_reply_key_and_tenants() -> None:
    spec = ToolCatalog.load(EXAMPLES / "catalog")["refund_customer"]
    assert (spec.kind, spec.reply_key_file, spec.tenants) == ("topic", "tools/refund_customer.pub", ["acme"])
    assert set(spec.args_schema["properties"]) == {"payee_id", "amount_usd"}  # the example function's parameters
    assert "refund_customer" not in ToolCatalog.load(REPO_ROOT / "catalog" / "tools")  # no built-in tool of that name
    assert "serve=[refund_customer]" in (EXAMPLES / "langgraph_agent.py").read_text(encoding="utf-8")


def test_keys_add_tool_makes_its_key_once_the_entry_is_in_the_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = tmp_path / "tools"
    shutil.copytree(REPO_ROOT / "catalog" / "tools", catalog)
    shutil.copy(EXAMPLES / "catalog" / "refund_customer.yaml", catalog)
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("TIDEGATE_TOOLS_DIR", str(catalog))
    made = CliRunner().invoke(app, ["keys", "add-tool", "refund_customer"])
    assert made.exit_code == 0, made.output
    assert (KitSettings().keys_dir / "tools" / "refund_customer" / "refund_customer.key").is_file()  # where the client reads it


def test_the_examples_folder_can_be_the_deployments_extra_catalog_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No copy into the checkout's catalog: `TIDEGATE_EXTRA_TOOLS_DIRS` names the example's folder, as a deployment names its own."""
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("TIDEGATE_EXTRA_TOOLS_DIRS", f'["{EXAMPLES / "catalog"}"]')
    assert "refund_customer" in ToolCatalog.load(*KitSettings().tool_dirs)
    made = CliRunner().invoke(app, ["keys", "add-tool", "refund_customer"])
    assert made.exit_code == 0, made.output
    assert (KitSettings().keys_dir / "tools" / "refund_customer" / "refund_customer.key").is_file()
