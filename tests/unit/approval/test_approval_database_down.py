"""PostgreSQL down under the approval service: its API answers `503 database_unavailable` in one line (no bare 500, no traceback),
and its `/health` says `retrying: <error>` until the database answers again.

The service is built as `tidegate up` builds it, over the in-memory repository made to fail as asyncpg and the pool do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from servicekit import KitSettings
from services.approval import auth
from services.approval._token_store import TokenInfo
from services.approval.app import ApprovalDeps, ApprovalProcess, build
from services.approval.repository import InMemoryApprovalRepository, SweepKey, SweepPage

OUTAGES = [
    ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 55432)"),  # the server is gone
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),  # a fast shutdown mid-query
    asyncpg.CannotConnectNowError("the database system is shutting down"),
    TimeoutError(),  # the pool found no connection in time (`acquire(timeout=…)`)
]


@dataclass
class DownRepository(InMemoryApprovalRepository):
    """The in-memory twin, raising `down` (while it is set) where the API and the sweep first read the database."""

    down: BaseException | None = None

    async def token(self, token_sha256: str) -> TokenInfo | None:
        if self.down is not None:
            raise self.down
        return await super().token(token_sha256)

    async def overdue(self, now: datetime, after: SweepKey | None = None) -> SweepPage:
        if self.down is not None:
            raise self.down
        return await super().overdue(now, after)


async def _approval(tmp_path: Path) -> tuple[ApprovalProcess, DownRepository, str]:
    repo = DownRepository()
    token = auth.new_token()
    await repo.add_token(auth.hash_token(token), "alice@acme.example", "acme", ["finance"])
    (tmp_path / "keys").mkdir(exist_ok=True)  # a service refuses a keys folder that is not there
    process = build(KitSettings(keys_dir=tmp_path / "keys", tools_dir=tmp_path / "no-tools"), deps=ApprovalDeps(repo=repo))
    return process, repo, token


async def _get(process: ApprovalProcess, path: str, token: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=process.http_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://approvals.test") as client:
        return await client.get(path, headers={"Authorization": f"Bearer {token}"})


@pytest.mark.parametrize("outage", OUTAGES, ids=lambda e: type(e).__name__)
async def test_the_api_answers_503_database_unavailable_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, outage: BaseException
) -> None:
    process, repo, token = await _approval(tmp_path)
    repo.down = outage

    with caplog.at_level(logging.INFO):
        answer = await _get(process, "/api/v1/approvals", token)

    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    assert answer.json() == {"detail": {"code": "database_unavailable", "message": "database unavailable, retrying: try again in 5s"}}
    said = [(r.levelname, r.exc_info is None) for r in caplog.records if r.name.startswith("services.approval")]
    assert said == [("WARNING", True)]  # one line, no traceback
    assert "GET /api/v1/approvals answered 503, database unavailable" in caplog.text
    assert process.health()["retrying"] == repr(outage)


async def test_health_says_retrying_while_the_database_is_down_and_clears_once_a_sweep_reads_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, wait_for: Callable[..., Awaitable[Any]]
) -> None:
    process, repo, token = await _approval(tmp_path)
    down = OUTAGES[0]
    repo.down = down
    sweep = asyncio.create_task(process.loops[0]())  # the expiry sweep, as the process runs it (every 2 s, the first at once)
    try:
        with caplog.at_level(logging.INFO):
            await wait_for(lambda: process.health()["retrying"] == repr(down), what="/health to say retrying")
        assert not [r for r in caplog.records if r.exc_info is not None]  # a line per round, not a traceback
        assert "approval: sweep: database unavailable, retrying at the next round" in caplog.text

        repo.down = None
        await wait_for(lambda: process.health()["retrying"] is None, timeout=10, what="/health to clear once the sweep read the database")
        assert (await _get(process, "/api/v1/approvals", token)).status_code == 200
    finally:
        sweep.cancel()
