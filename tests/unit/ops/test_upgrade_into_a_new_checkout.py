"""An upgrade into a new checkout, pointed at the running deployment's state, keeps its logins (upgrade probe F1).

The state of a deployment made by `tidegate infra up` lives in its checkout: `.infra/` (TIDEGATE_INFRA_DIR: Kafka's and
PostgreSQL's data and the Kafka logins) and `.tidegate/` (TIDEGATE_RUN_DIR: keys, the services' database logins, logs).
The platform engineer upgrading into a fresh checkout of the new release points those two at the old ones. The Kafka
logins were still looked for in the new checkout's `.infra` ("Unable to bootstrap … is `tidegate infra up` running?"
with the broker up), and the database logins in its `.tidegate/db`: `tidegate db migrate` found none and set a new
password on every service's role, so the old checkout's services, and a rollback to them, could no longer log in.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
import typer
from aiokafka.errors import KafkaConnectionError
from typer.testing import CliRunner

import tidegate.database
from servicekit import KitSettings
from servicekit.bus_auth import kafka_options
from servicekit.dbroles import credentials_file
from tidegate.cli import app
from tidegate.commands._common import run

USERS = ("planner", "policy", "approval", "executor", "audit", "systems")


@pytest.fixture
def old_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """The running release's state, as `infra up` and `db migrate` left it, and the new checkout's variables at it."""
    infra, run = tmp_path / "old" / ".infra", tmp_path / "old" / ".tidegate"
    creds = infra / "kafka" / "credentials"
    creds.mkdir(parents=True)
    (creds / "policy.properties").write_text(
        'sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="policy" password="kept";\n'
    )
    for user in USERS:
        path = credentials_file(run / "db", user)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"user": f"tidegate_{user}", "password": "old"}))
    for name in ("TIDEGATE_KAFKA_CREDENTIALS_DIR", "TIDEGATE_DB_CREDENTIALS_DIR", "TIDEGATE_KEYS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TIDEGATE_INFRA_DIR", str(infra))
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(run))
    return infra, run


def test_the_logins_are_found_where_the_two_state_folders_are(old_state: tuple[Path, Path]) -> None:
    infra, run = old_state
    kit = KitSettings()
    assert kit.kafka_credentials_dir == infra / "kafka" / "credentials"
    assert kit.db_credentials_dir == run / "db"
    assert kafka_options(kit, "policy")["sasl_plain_password"] == "kept"  # the service logs in to the broker it found


def test_db_migrate_in_the_new_checkout_gives_no_role_a_new_password(old_state: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    _, run = old_state
    seen: list[Path] = []

    async def migrate(cfg: Any) -> dict[str, list[str]]:  # provisioning keeps a stored password, makes a missing one
        seen.append(cfg.db_credentials_dir)
        return {"executor": []}

    monkeypatch.setattr(tidegate.database, "migrate", migrate)
    result = CliRunner().invoke(app, ["db", "migrate"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert seen == [run / "db"]
    assert "new password" not in result.output  # the old release's services keep logging in


def test_an_explicit_folder_still_wins(old_state: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_KAFKA_CREDENTIALS_DIR", str(tmp_path / "k"))
    monkeypatch.setenv("TIDEGATE_DB_CREDENTIALS_DIR", str(tmp_path / "d"))
    kit = KitSettings()
    assert (kit.kafka_credentials_dir, kit.db_credentials_dir) == (tmp_path / "k", tmp_path / "d")


async def _broker_closed() -> None:
    raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9)]")


def test_a_folder_with_no_kafka_login_is_named_not_a_broker_said_to_be_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The upgrader's first command in the new checkout read 'is `tidegate infra up` running?' with the broker up."""
    monkeypatch.delenv("TIDEGATE_KAFKA_PASSWORD", raising=False)
    monkeypatch.setenv("TIDEGATE_KAFKA_CREDENTIALS_DIR", str(tmp_path / "empty"))
    with pytest.raises(typer.Exit):
        run(_broker_closed())
    said = " ".join(capsys.readouterr().err.split())
    assert f"no Kafka login in {tmp_path / 'empty'}" in said
    assert "TIDEGATE_KAFKA_CREDENTIALS_DIR" in said
    assert "is `tidegate infra up` running" not in said


def test_with_a_login_there_the_broker_itself_is_what_to_check(old_state: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit):
        run(_broker_closed())
    assert "is `tidegate infra up` running?" in " ".join(capsys.readouterr().err.split())


@pytest.fixture
def no_client_folders(old_state: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    for name in ("TIDEGATE_CLIENT_STATE_DIR", "TIDEGATE_CLIENT_SERVICE_KEYS_DIR", "TIDEGATE_MCP_HTTP_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return old_state


def test_the_mcp_gateway_keeps_the_token_its_clients_hold(no_client_folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The upgrade probe (upgrade21 F1): run from the new checkout, the gateway made a new token in that checkout's empty
    `.tidegate/client` (every MCP client refused, 401), `mcp rotate-token` said there was no token yet, and `tidegate
    credentials` no longer listed the one the old checkout's gateway had handed out."""
    from tidegate.client import ClientSettings
    from tidegate.mcp_gateway import GatewaySettings
    from tidegate.mcp_gateway.bearer import former_token_file, http_token

    _, run_dir = no_client_folders
    held = run_dir / "client" / "mcp-gateway.token"
    held.parent.mkdir(parents=True)
    held.write_text("the-token-every-client-holds-0123\n")
    assert http_token(GatewaySettings(), ClientSettings())[0] == "the-token-every-client-holds-0123"

    rotated = CliRunner().invoke(app, ["mcp", "rotate-token"], env={"COLUMNS": "300"})
    assert rotated.exit_code == 0, rotated.output
    assert former_token_file(held).read_text().strip() == "the-token-every-client-holds-0123"  # still accepted until --finish
    from tidegate.commands import credentials as credentials_module

    monkeypatch.setattr(credentials_module, "in_database", lambda kit: credentials_module.InDatabase([]))  # no PostgreSQL here
    listed = CliRunner().invoke(app, ["credentials", "--json"], env={"COLUMNS": "300"})
    assert any(json.loads(line).get("name") == "mcp-gateway" for line in listed.output.splitlines() if line.startswith("{")), listed.output


def test_the_client_believes_the_deployments_keys_and_keeps_its_ledgers(
    no_client_folders: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Public keys looked for in the new checkout's `.tidegate/keys` (none there), and the ledgers in which governed
    tools record the calls they ran (what keeps a redelivered call from running twice) started empty."""
    from tidegate.client import ClientSettings

    _, run_dir = no_client_folders
    settings = ClientSettings()
    assert (settings.service_keys_dir, settings.state_dir) == (run_dir / "keys", run_dir / "client")
    monkeypatch.setenv("TIDEGATE_KEYS_DIR", str(tmp_path / "keys-elsewhere"))
    assert ClientSettings().service_keys_dir == tmp_path / "keys-elsewhere"  # the services' own keys folder, when set
    monkeypatch.setenv("TIDEGATE_CLIENT_STATE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("TIDEGATE_CLIENT_SERVICE_KEYS_DIR", str(tmp_path / "pub"))
    own = ClientSettings()  # the client's own settings come first
    assert (own.service_keys_dir, own.state_dir) == (tmp_path / "pub", tmp_path / "mine")
    assert ClientSettings(state_dir=tmp_path / "given").state_dir == tmp_path / "given"


def test_a_tool_served_from_the_new_checkout_logs_in_as_its_own_principal(old_state: tuple[Path, Path]) -> None:
    """`tool-<tool>.properties` was looked for in the new checkout's `.infra` alone: the tool was served with the agent's
    login instead, which the broker refuses the tool's topics (upgrade21 F6)."""
    from tidegate.client import ClientSettings

    governed = importlib.import_module("tidegate.client.governed")  # the module: `tidegate.client.governed` is the decorator

    infra, _ = old_state
    (infra / "kafka" / "credentials" / "tool-reorder_stock.properties").write_text(
        'sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="tool-reorder_stock" password="t";\n'
    )
    login = governed._own_login(ClientSettings(sasl_username="agent"), "reorder_stock")  # what `serve_tool` logs in as
    assert login is not None
    assert login.sasl_username == "tool-reorder_stock"
