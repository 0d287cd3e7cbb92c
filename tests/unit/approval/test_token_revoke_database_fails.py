"""`tidegate approvals token revoke` when PostgreSQL fails on the way (leftovers22 #4).

The operator revokes a leaked token and the database write fails (PostgreSQL stopped, a failover, a DSN whose login may
not write the table). Before, the command printed a Python traceback: nothing said whether the token still worked, nor
what to run. Here the operator's repository is stubbed (no Kafka, no PostgreSQL): its revocation is published on
`control` first, then the row's write fails, or the failure comes before anything is published.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from typer.testing import CliRunner

from tidegate.cli import app
from tidegate.commands import _approvals_tokens

TOKEN = "tok_3f1a9c2b7d10"


class _Pins:
    def __init__(self) -> None:
        self.revoked_ids: set[str] = set()

    def revoked(self, token_id: str) -> bool:
        return token_id in self.revoked_ids


class _Repo:
    """The operator's repository whose database fails: after publishing the revocation (`published`), or before."""

    def __init__(self, *, published: bool) -> None:
        self.token_pins = _Pins()
        self.published = published

    async def revoke_token(self, token_id: str) -> bool:
        if self.published:
            self.token_pins.revoked_ids.add(token_id)  # the record is out on `control`: the services refuse the token
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")
        raise asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command")


def _stub(monkeypatch: pytest.MonkeyPatch, repo: _Repo | None) -> None:
    @asynccontextmanager
    async def operator_repo(*, revocations: bool = True) -> AsyncIterator[Any]:
        if repo is None:
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 55432)")
        yield repo

    monkeypatch.setattr(_approvals_tokens, "_operator_repo", operator_repo)


def _revoke() -> Any:
    return CliRunner().invoke(app, ["approvals", "token", "revoke", TOKEN], env={"COLUMNS": "400"})


def _said(result: Any) -> str:
    return " ".join(result.output.split())


def test_a_row_write_that_fails_after_the_revocation_is_out_says_the_token_is_revoked_and_what_to_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _stub(monkeypatch, _Repo(published=True))
    result = _revoke()
    said = _said(result)
    assert result.exit_code == 1, said
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)  # no traceback
    assert "Traceback" not in result.output
    assert f"token {TOKEN} IS revoked" in said
    assert "ConnectionDoesNotExistError: connection was closed in the middle of operation" in said  # what failed
    assert "its row still says live" in said  # the state it is in
    assert f"run `tidegate approvals token revoke {TOKEN}` again once PostgreSQL answers" in said  # what to run


@pytest.mark.parametrize("repo", [_Repo(published=False), None], ids=["database-fails-first", "database-not-reached"])
def test_a_database_that_fails_before_the_revocation_is_out_says_the_token_still_works(
    repo: _Repo | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stub(monkeypatch, repo)
    result = _revoke()
    said = _said(result)
    assert result.exit_code == 1, said
    assert "Traceback" not in result.output
    assert f"token {TOKEN} is NOT revoked: it still works" in said
    assert ("AdminShutdownError" if repo else "Connect call failed") in said
    assert f"run `tidegate approvals token revoke {TOKEN}` again once PostgreSQL answers" in said


def _token(token_id: str, approver: str) -> Any:
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace

    expires = datetime.now(UTC) + timedelta(days=20)
    return SimpleNamespace(
        token_id=token_id, approver=approver, tenant_id="acme", groups=("finance",), operator=False, expires_at=expires,
        revoked_at=None, unproven=None, key_id="operator:ops",
    )  # fmt: skip


class _Rotating(_Repo):
    """Three live tokens of acme: the first rotates, the database fails while the second's successor is stored."""

    def __init__(self) -> None:
        super().__init__(published=True)
        self.live = [_token("tok_a", "ann@acme.example"), _token("tok_b", "bob@acme.example"), _token("tok_c", "cy@acme.example")]

    async def tokens(self) -> list[Any]:
        return self.live

    async def rotate_token(self, token_id: str, new_sha256: str, expires_at: Any, *, reissue: bool = False) -> Any:
        if token_id == "tok_a":
            return _token("tok_a2", "ann@acme.example")
        self.token_pins.revoked_ids.add(token_id)  # its revocation is out on `control`
        raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")


def test_a_rotation_of_every_token_that_the_database_cuts_short_shows_the_successors_made_and_what_is_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a leak the operator rotates every token of acme; PostgreSQL fails at the second. Before, a traceback: ann's
    successor, made and stored, was never shown (ann locked out), and nothing said bob's token was revoked with none."""
    _stub(monkeypatch, _Rotating())
    result = CliRunner().invoke(app, ["approvals", "token", "rotate", "--all", "--tenant", "acme", "--yes"], env={"COLUMNS": "400"})
    said = _said(result)
    assert result.exit_code == 1, said
    assert "Traceback" not in result.output
    assert "tok_a revoked; its successor tok_a2 for ann@acme.example" in said  # shown once: the only time it can be
    assert "token tok_b IS revoked" in said
    assert "bob@acme.example has no successor" in said
    assert "tidegate approvals token create --approver bob@acme.example --groups finance --tenant acme" in said
    assert "not tried, still live: tok_c" in said
