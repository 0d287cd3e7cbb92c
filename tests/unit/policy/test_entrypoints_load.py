"""A python tool whose entrypoint does not load is said by `tidegate policy validate` and at the executor's start.

Connectors probe F13: a developer's tool file with a misspelt module passed `tidegate policy validate` ("✓ valid"),
every service started healthy, and the tool's first call failed `entrypoint_missing`.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from servicekit import REPO_ROOT
from tidegate.cli import app


def _python_tool(name: str, entrypoint: str) -> dict[str, object]:
    return {
        "name": name, "description": "Look an order up in my system of record.", "risk": "read", "kind": "python",
        "entrypoint": entrypoint, "untrusted_output": False, "idempotent": True,
        "args_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}},
    }  # fmt: skip


def test_validate_names_each_python_tool_whose_entrypoint_does_not_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setenv("TIDEGATE_KEYS_DIR", str(tmp_path / "keys"))
    (tmp_path / "keys" / "tools").mkdir(parents=True)
    (tmp_path / "keys" / "tools" / "update_inventory.pub").write_text("its public key")
    tools = tmp_path / "tools"
    shutil.copytree(REPO_ROOT / "catalog" / "tools", tools)
    for name, entrypoint in [
        ("my_lookup", "my_erp_tools:lookup"),  # the module is not importable
        ("my_typo", "systems.payments:lookup_ordr"),  # the module is, the function is not
        ("my_good", "systems.payments:lookup_order"),
        ("my_local", "my_local_tools:lookup"),  # beside where `tidegate up` runs: its services import from there
    ]:
        (tools / f"{name}.yaml").write_text(yaml.safe_dump(_python_tool(name, entrypoint)))

    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "my_local_tools.py").write_text("async def lookup(ctx, args):\n    return {}\n")
    monkeypatch.chdir(checkout)
    monkeypatch.setattr("sys.path", [p for p in sys.path if p not in ("", str(checkout))])  # as the console script runs

    result = CliRunner().invoke(app, ["policy", "validate", "--tools", str(tools)])

    assert result.exit_code == 0, result.output  # a warning: the pack itself is valid
    warned = {line.split(":")[0]: line for line in result.output.splitlines() if "cannot be loaded" in line}
    assert set(warned) == {"! tool my_lookup", "! tool my_typo"}
    assert "No module named 'my_erp_tools'" in warned["! tool my_lookup"]
    assert "module systems.payments has no function lookup_ordr" in warned["! tool my_typo"]
    assert "every call of it fails entrypoint_missing" in warned["! tool my_lookup"]
    assert "PYTHONPATH" in warned["! tool my_lookup"]


def test_the_executor_says_it_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import connectors as c
    from servicekit import KitSettings
    from servicekit.catalog import ToolCatalog
    from servicekit.catalog_checks import unloadable_entrypoints
    from services.executor.app import ExecutorDeps, build
    from services.executor.claims import InMemoryClaimStore

    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "my_lookup.yaml").write_text(yaml.safe_dump(_python_tool("my_lookup", "my_erp_tools:lookup")))
    (tmp_path / "keys").mkdir()
    kit = KitSettings(tools_dir=tools, keys_dir=tmp_path / "keys")
    with caplog.at_level("WARNING", logger="services.executor.app"):
        build(kit, deps=ExecutorDeps(claims=InMemoryClaimStore(), grants=c.InMemoryGrantStore()))
    said = [r.getMessage() for r in caplog.records if "cannot be loaded" in r.getMessage()]
    assert said == [f"executor: {w}" for w in unloadable_entrypoints(ToolCatalog.load(tools).tools)]
    assert said[0].startswith("executor: tool my_lookup: its entrypoint my_erp_tools:lookup cannot be loaded")
    assert unloadable_entrypoints(ToolCatalog.load(REPO_ROOT / "catalog" / "tools").tools) == []  # every shipped one loads
