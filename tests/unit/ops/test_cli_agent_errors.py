"""`tidegate propose|submit|mcp serve|mcp import`: an ordinary mistake is one line naming what to fix, and a non-zero exit."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tidegate.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # one message, one line


def one_line_error(command: list[str], says: str) -> None:
    result = runner.invoke(app, command)
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert result.output.count("\n") == 1, result.output
    assert says in result.output, result.output


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (["propose", "--tool", "tag_ticket", "--args", "@/nowhere/args.json", "--wait", "0"], "--args: cannot read /nowhere/args.json"),
        (["submit", "--input", "@/nowhere/input.json"], "--input: cannot read /nowhere/input.json"),
        (["propose", "--tool", "tag_ticket", "--args", "{}", "--action-id", "a" * 300, "--wait", "0"], "--action-id: String should have"),
        (["propose", "--tool", "tag_ticket", "--args", "{}", "--tenant", "", "--wait", "0"], "--tenant: String should have at least 1"),
        (["submit", "--input", "{}", "--tenant", ""], "--tenant: String should have at least 1"),
        (["submit", "--ticket", "T-1001", "--tenant", ""], "--tenant: String should have at least 1"),
        (["submit", "--input", "{}", "--budget", "-1"], "--budget: Input should be greater than or equal to 0"),
        (["submit", "--ticket", "T-1001", "--budget", "-1"], "--budget: Input should be greater than or equal to 0"),  # a ticket's too
    ],
)
def test_propose_and_submit_name_the_flag_before_publishing(command: list[str], says: str) -> None:
    one_line_error(command, says)


def test_a_port_out_of_range_is_named() -> None:
    one_line_error(["mcp", "serve", "--http", "--port", "70000"], "--port is 0 to 65535")


def test_a_tools_setting_that_is_not_a_json_list_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_MCP_TOOLS", "tag_ticket,get_ticket")
    one_line_error(["mcp", "serve"], "TIDEGATE_MCP_TOOLS: Input should be a valid list")


def test_serve_reads_the_services_keys_dir_by_default_and_says_when_a_key_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TIDEGATE_CLIENT_SERVICE_KEYS_DIR", raising=False)
    monkeypatch.setenv("TIDEGATE_KEYS_DIR", str(tmp_path / "deployment-keys"))
    one_line_error(["mcp", "serve"], f"no public key of policy, executor in {tmp_path / 'deployment-keys'}")


def test_an_empty_command_is_named() -> None:
    one_line_error(["mcp", "import", "--tenant", "acme", "--command", ""], "--command is empty")


def test_import_asks_which_tenants_may_call_the_tools_it_writes() -> None:
    """An imported tool without `tenants` could be called by no tenant (an outside tool): the import asks before it connects."""
    result = runner.invoke(app, ["mcp", "import", "--url", "http://127.0.0.1:1/mcp"])
    assert result.exit_code == 2
    assert "Missing option '--tenant'" in result.output


def test_a_star_among_named_tenants_is_named() -> None:
    one_line_error(["mcp", "import", "--tenant", "*", "--tenant", "acme", "--url", "http://127.0.0.1:1/mcp"], '--tenant "*" grants every')


def test_an_upstream_not_reached_says_why_not_the_task_group() -> None:
    one_line_error(
        ["mcp", "import", "--tenant", "acme", "--url", "http://127.0.0.1:1/mcp"],
        "the upstream at http://127.0.0.1:1/mcp: ConnectError: All",
    )


def test_an_upstream_that_exits_says_it_closed_the_connection() -> None:
    import subprocess

    # a process of its own: a stdio upstream needs a real stderr, which CliRunner's capture is not
    cli = [sys.executable, "-c", "from tidegate.cli import app; app()"]
    done = subprocess.run(
        [*cli, "mcp", "import", "--tenant", "acme", "--command", f"{sys.executable} -c pass"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"the upstream `{sys.executable} -c pass` closed the connection" in done.stderr


def test_import_writes_into_the_catalog_the_gateway_serves(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import tidegate.mcp_gateway.importer as importer

    written_to: list[Path] = []

    async def import_upstream(upstream: Any, out_dir: Path, **options: Any) -> list[Path]:
        written_to.append(out_dir)
        return []

    monkeypatch.setattr(importer, "import_upstream", import_upstream)
    monkeypatch.setenv("TIDEGATE_MCP_TOOLS_DIR", str(tmp_path / "served"))
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["mcp", "import", "--tenant", "acme", "--url", "http://127.0.0.1:1/mcp"])
    assert result.exit_code == 0, result.output
    assert written_to == [tmp_path / "served"]


def test_topics_missing_under_the_clients_prefix_is_one_line_that_says_what_to_check() -> None:
    from tidegate.client.transport import TopicsMissing
    from tidegate.commands.mcp import _one_line

    said = _one_line(TopicsMissing("topics missing on the broker: nope.actions.decided (is TIDEGATE_CLIENT_TOPIC_PREFIX …)"), "x")
    assert said is not None
    assert "TIDEGATE_CLIENT_TOPIC_PREFIX" in said


def test_serve_without_a_client_key_says_so_instead_of_answering_every_call_pending(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A desktop host starts the gateway and hides its log: unsigned, every call was refused unread and answered `pending`."""
    from servicekit.signing import SigningKey

    keys = tmp_path / "deployment-keys"
    for service in ("policy", "executor", "approval"):
        SigningKey.load_or_create(keys, service)
    monkeypatch.delenv("TIDEGATE_CLIENT_SERVICE_KEYS_DIR", raising=False)
    monkeypatch.delenv("TIDEGATE_CLIENT_SIGNING_KEY_PATH", raising=False)
    monkeypatch.setenv("TIDEGATE_KEYS_DIR", str(keys))
    monkeypatch.setenv("TIDEGATE_CLIENT_STATE_DIR", str(tmp_path / "state"))
    one_line_error(["mcp", "serve"], "no TIDEGATE_CLIENT_SIGNING_KEY_PATH: the gateway's proposals would go out unsigned")
