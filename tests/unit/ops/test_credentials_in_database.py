"""`tidegate credentials` lists the approval service's approver tokens and says what it cannot date (upgrade21 F7).

The database is stubbed here (the real read: tests/integration/approval/test_credentials_lists_tokens.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from servicekit import KitSettings
from tidegate.cli import app
from tidegate.commands import credentials as credentials_module
from tidegate.commands.credentials import TOKENS, Credential, InDatabase

DAY_S = 86_400


@pytest.fixture(autouse=True)
def _empty_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("TIDEGATE_INFRA_DIR", str(tmp_path / "infra"))
    monkeypatch.setenv("TIDEGATE_CLIENT_STATE_DIR", str(tmp_path / "client"))


def _database(found: InDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(credentials_module, "in_database", lambda kit: found)


def test_an_old_approver_token_is_due_with_the_command_that_rotates_it(monkeypatch: pytest.MonkeyPatch) -> None:
    old = Credential("approver token", "tok_old", TOKENS, time.time() - 120 * DAY_S, "tidegate approvals token rotate tok_old", "x")
    _database(InDatabase([old], endpoints=2), monkeypatch)
    listed = CliRunner().invoke(app, ["credentials", "--max-age-days", "90"], env={"COLUMNS": "300"})
    assert listed.exit_code == 1, listed.output
    line = next(line for line in listed.stdout.splitlines() if "tok_old" in line)
    assert line.startswith("DUE  approver token")
    assert "rotate: tidegate approvals token rotate tok_old" in line
    assert "2 webhook endpoint(s) enabled: their secrets' age is not recorded" in listed.stderr
    assert "/api/v1/webhooks/endpoints/{id}/rotate" in listed.stderr
    as_json = CliRunner().invoke(app, ["credentials", "--json"])
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]  # stdout: JSON lines alone
    assert [r["name"] for r in rows if r["kind"] == "approver token"] == ["tok_old"]


def test_a_database_not_read_is_said_and_the_files_are_still_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    async def unreachable(kit: KitSettings) -> InDatabase:
        raise OSError("Connect call failed ('127.0.0.1', 1)")

    monkeypatch.setattr(credentials_module, "_read_database", unreachable)
    listed = CliRunner().invoke(app, ["credentials"], env={"COLUMNS": "300"})
    assert listed.exit_code == 4, listed.output  # leftovers22 #3: was 0, which a cron job read as "nothing due"
    assert "approver tokens and webhook endpoints not listed: the database was not read" in listed.stderr
    assert "Connect call failed" in listed.stderr


@pytest.mark.parametrize(
    "failure",
    [
        OSError("Connect call failed ('127.0.0.1', 55432)"),  # PostgreSQL down
        ValueError('password authentication failed for user "tidegate"'),  # a wrong password (any error of the read)
    ],
)
def test_a_cron_job_is_told_by_the_exit_status_that_the_database_was_not_read(failure: Exception, monkeypatch: pytest.MonkeyPatch) -> None:
    """leftovers22 #3: the operator's cron job runs `tidegate credentials` and alerts on a non-zero exit. With the database
    down or its password wrong it exited 0: the job read "nothing due" while no approver token had been looked at."""

    async def unreadable(kit: KitSettings) -> InDatabase:
        raise failure

    monkeypatch.setattr(credentials_module, "_read_database", unreadable)
    for args in (["credentials"], ["credentials", "--json"]):
        listed = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
        assert listed.exit_code == 4, listed.output
        assert str(failure) in listed.stderr  # what could not be read, and why
        assert "none of them is counted due" in listed.stderr
        assert "run it again" in listed.stderr
    old_key = Credential("signing key", "policy", Path("policy.key"), time.time() - 120 * DAY_S, "tidegate keys rotate policy")
    monkeypatch.setattr(credentials_module, "credentials_of", lambda kit: [old_key])
    due = CliRunner().invoke(app, ["credentials", "--max-age-days", "90"], env={"COLUMNS": "300"})
    assert due.exit_code == 5, due.output  # both: a file's credential due, and the database not read
    assert next(line for line in due.stdout.splitlines() if "policy" in line).startswith("DUE  signing key")
    assert "4 when the database could not be read" in CliRunner().invoke(app, ["credentials", "--help"], env={"COLUMNS": "300"}).stdout


def test_webhook_secrets_are_listed_with_their_age_and_where_they_rotate(monkeypatch: pytest.MonkeyPatch) -> None:
    """leftovers22 #2: the platform engineer's 90-day policy covers the chat tools' webhook secrets too. Before, the table
    listed tokens and keys with their age and DUE marks, and for webhook endpoints only a count on stderr."""
    now = time.time()
    where = "approval.webhook_endpoints"
    fresh = Credential("webhook secret", "acme/chat", where, now - 3 * DAY_S, "POST /api/v1/webhooks/endpoints/chat/rotate?tenant_id=acme")
    old = Credential(
        "webhook secret", "acme/pager", where, now - 120 * DAY_S, "POST /api/v1/webhooks/endpoints/pager/rotate?tenant_id=acme"
    )
    undated = Credential(
        "webhook secret", "beta/chat", where, None, "POST /api/v1/webhooks/endpoints/chat/rotate?tenant_id=beta", "set before"
    )
    _database(InDatabase([], endpoints=1, secrets=[fresh, old, undated]), monkeypatch)
    listed = CliRunner().invoke(app, ["credentials", "--max-age-days", "90"], env={"COLUMNS": "300"})
    assert listed.exit_code == 1, listed.output
    lines = {line.split()[3]: line for line in listed.stdout.splitlines() if "webhook secret" in line}
    assert lines["acme/chat"].startswith("ok   webhook secret")
    assert "3.0 days" in lines["acme/chat"]
    assert lines["acme/pager"].startswith("DUE  webhook secret")
    assert "rotate: POST /api/v1/webhooks/endpoints/pager/rotate?tenant_id=acme" in lines["acme/pager"]
    assert lines["beta/chat"].startswith("DUE  webhook secret")  # an age not recorded is no proof it is recent
    assert "set unknown" in lines["beta/chat"]
    assert "2 of 3 older than 90 days" in listed.stdout
    rows = [json.loads(line) for line in CliRunner().invoke(app, ["credentials", "--json"]).stdout.splitlines()]
    by_name = {r["name"]: r for r in rows if r["kind"] == "webhook secret"}
    assert (by_name["beta/chat"]["set_at"], by_name["beta/chat"]["age_days"], by_name["beta/chat"]["due"]) == (None, None, True)
    assert by_name["acme/chat"]["due"] is False


def test_an_undated_secret_of_the_webhooks_file_is_told_to_change_in_the_file_not_by_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """upgrader F2: upgrading 21 → 22, the platform engineer's `credentials` listed every endpoint DUE (no recorded age) and
    said on stderr to rotate each with `POST …/rotate`, which answers an endpoint of TIDEGATE_APPROVAL_WEBHOOKS_FILE
    409 operator_endpoint: its secret is changed in the file, and the approval service restarted."""

    class Connection:
        async def fetch(self, query: str) -> list[dict[str, object]]:
            if "webhook_endpoints" in query:
                return [
                    {"tenant_id": "*", "endpoint_id": "ops-hook", "source": "file", "secret_set_at": None},
                    {"tenant_id": "acme", "endpoint_id": "chat", "source": "api", "secret_set_at": None},
                ]
            return []

        async def close(self) -> None:
            return None

    async def connect(*args: object, **kwargs: object) -> Connection:
        return Connection()

    import asyncpg

    monkeypatch.setattr(asyncpg, "connect", connect)
    listed = CliRunner().invoke(app, ["credentials"], env={"COLUMNS": "300"})
    assert listed.exit_code == 1, listed.output
    told = " ".join(listed.stderr.split())
    assert "2 webhook endpoint(s) enabled: their secrets' age is not recorded" in told
    assert "1 registered over the API: rotate each with `POST /api/v1/webhooks/endpoints/{id}/rotate?tenant_id=`" in told
    assert "1 of TIDEGATE_APPROVAL_WEBHOOKS_FILE: give each a new `secret` there" in told
    assert "restart the approval service" in told
    line = next(line for line in listed.stdout.splitlines() if "*/ops-hook" in line)
    assert "rotate: in TIDEGATE_APPROVAL_WEBHOOKS_FILE" in line
