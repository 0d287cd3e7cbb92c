"""What the client and the gateway keep on disk (tool results, signed proposals with their args) is readable by its owner only."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tidegate.client import ClientSettings, MemoryTransport, SqliteLedger, SqliteProposals
from tidegate.client.scripted import ScriptedTidegate
from tidegate.mcp_gateway import GatewaySettings
from tidegate.mcp_gateway.run import gateway, state_file
from tidegate.mcp_gateway.tasks import SqliteActionTasks, StateOfAnotherTenant


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def _umask_as_usual() -> Iterator[None]:
    """The usual umask (022): a file made without a mode would be world-readable."""
    before = os.umask(0o022)
    yield
    os.umask(before)


KEEPERS: dict[str, Callable[[Path], Any]] = {
    "governed-tool-ledger": SqliteLedger,
    "proposals": SqliteProposals,
    "gateway-tasks": SqliteActionTasks,
}


@pytest.mark.parametrize("keeper", KEEPERS.values(), ids=KEEPERS.keys())
def test_a_ledger_is_made_0600_in_folders_made_0700(tmp_path: Path, keeper: Callable[[Path], Any]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o755)
    path = home / "state" / "client" / "ledger.sqlite3"
    kept = keeper(str(path))  # a path as a string, as an environment variable gives it, is a path too
    try:
        kept.lookup("x") if hasattr(kept, "lookup") else kept.bind("x", "task")  # a write or read: the journal comes and goes
    finally:
        kept.close()
    assert mode(path) == 0o600
    assert mode(path.parent) == mode(path.parent.parent) == 0o700
    assert mode(home) == 0o755  # a folder it did not make is left as it is


@pytest.mark.parametrize("keeper", KEEPERS.values(), ids=KEEPERS.keys())
def test_a_ledger_an_older_version_left_world_readable_is_made_0600(tmp_path: Path, keeper: Callable[[Path], Any]) -> None:
    path = tmp_path / "old.sqlite3"
    path.touch(mode=0o644)
    keeper(path).close()
    assert mode(path) == 0o600


async def test_the_gateways_state_file_is_its_owners_only(tmp_path: Path) -> None:
    bus = MemoryTransport()
    ScriptedTidegate(bus, lambda p: ("allow", "ok"))  # only its keys, for the client to trust
    settings = ClientSettings(state_dir=tmp_path / "client")
    async with gateway(GatewaySettings(), settings, [], transport=bus):
        pass
    assert mode(state_file(settings)) == 0o600
    assert mode(settings.state_dir) == 0o700


def test_a_gateways_state_file_is_one_tenants(tmp_path: Path) -> None:
    """Two tenants' gateways on one checkout shared one state file: one answered a poll of the other's action id."""
    path = tmp_path / "state" / "mcp-gateway.tidegate.sqlite3"
    SqliteActionTasks(path).close()  # a file from before: no owner yet, the first tenant's gateway to open it takes it
    SqliteActionTasks(path, tenant="acme").close()
    SqliteActionTasks(path, tenant="acme").close()  # the same tenant's gateway, restarted
    with pytest.raises(StateOfAnotherTenant, match="give each tenant's gateway a TIDEGATE_CLIENT_STATE_DIR of its own"):
        SqliteActionTasks(path, tenant="globex")
