"""`tidegate approvals token rotate` on the real database, against the running service: a successor keeps what its token had left
(unless --expires-in-days), `--yes` answers for a script, and `--all` rotates every live token of one tenant after a leak."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from approval_harness import ApprovalHarness, StartApproval
from rich.console import Console
from typer.testing import CliRunner, Result

from servicekit import KitSettings
from services.approval import auth
from tidegate.commands import _approvals_tokens, approvals

pytestmark = pytest.mark.integration

TOKEN = re.compile(r"^tga_\S+$", re.MULTILINE)


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_approvals_tokens, "console", Console(width=1000, emoji=False))  # one line a line, whatever the width


def env_of(kit: KitSettings) -> dict[str, str]:
    """What the operator's shell holds: the database, and the keys directory the operator key lives beside."""
    return {
        "TIDEGATE_DATABASE_URL": kit.database_url,
        "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
        "TIDEGATE_DB_CREDENTIALS_DIR": str(kit.db_credentials_dir),
    }


async def rotate(kit: KitSettings, *args: str, code: int = 0, stdin: str | None = None) -> Result:
    result = await asyncio.to_thread(CliRunner().invoke, approvals.app, ["token", "rotate", *args], input=stdin, env=env_of(kit))
    assert result.exit_code == code, result.output
    return result


async def works(h: ApprovalHarness, http: httpx.AsyncClient, token: str) -> bool:
    answer = await http.get(f"{h.url}/api/v1/approvals", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code in (200, 401), answer.text
    return answer.status_code == 200


async def token_of(h: ApprovalHarness, approver: str, days: float, tenant: str | None = None) -> tuple[str, str, datetime]:
    """A token the operator made (signed), expiring in `days`: (token, its id, its expiry as stored)."""
    token = await h.token(approver, ["finance"], tenant, expires_at=datetime.now(UTC) + timedelta(days=days))
    info = await successor(h, token)
    return token, info.token_id, info.expires_at


async def successor(h: ApprovalHarness, token: str) -> Any:
    info = await h.repo.token(auth.hash_token(token))
    assert info is not None
    return info


async def pre_signing_token(h: ApprovalHarness, infra: Any, approver: str, days: float) -> tuple[str, str]:
    """A token as migration 010 found it (no signature), with the expiry its row says: (token, id)."""
    token, token_id = "tga_" + uuid.uuid4().hex, "tok_" + uuid.uuid4().hex[:12]
    owner = await asyncpg.connect(infra.database_url)
    try:
        await owner.execute(
            "INSERT INTO approval.approver_tokens (token_id, token_sha256, approver, tenant_id, groups, expires_at) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            token_id, auth.hash_token(token), approver, h.tenant, ["finance"], datetime.now(UTC) + timedelta(days=days),
        )  # fmt: skip
    finally:
        await owner.close()
    return token, token_id


async def test_a_rotated_token_keeps_what_it_had_left_unless_a_lifetime_is_given(
    start_approval: StartApproval, http: httpx.AsyncClient, kit: KitSettings
) -> None:
    h = await start_approval()
    old, old_id, expires = await token_of(h, "bob@acme.example", days=3)
    done = await rotate(kit, old_id)
    [new] = TOKEN.findall(done.stdout)
    assert (await works(h, http, old), await works(h, http, new)) == (False, True)
    first = await successor(h, new)
    assert (first.approver, first.tenant_id, first.groups, first.expires_at) == ("bob@acme.example", h.tenant, ("finance",), expires)
    assert f"{old_id} revoked; its successor {first.token_id} for bob@acme.example expires {expires:%Y-%m-%d %H:%M}" in done.stdout

    again = await rotate(kit, first.token_id, "--expires-in-days", "10")
    [newer] = TOKEN.findall(again.stdout)
    lifetime = (await successor(h, newer)).expires_at - datetime.now(UTC)
    assert timedelta(days=9.9) < lifetime <= timedelta(days=10)
    await rotate(kit, first.token_id, code=1)  # revoked now: nothing to rotate


async def test_yes_reissues_a_token_from_before_signing_without_a_prompt_and_never_longer_than_the_default(
    start_approval: StartApproval, http: httpx.AsyncClient, kit: KitSettings, infra: Any
) -> None:
    h = await start_approval()
    old, old_id = await pre_signing_token(h, infra, "olga@acme.example", days=3650)  # ten years, as its row says
    assert not await works(h, http, old)
    refused = await rotate(kit, old_id, code=1)  # a script, no --yes: nobody confirmed who it names
    assert "or pass --yes" in refused.output
    assert not TOKEN.findall(refused.stdout)
    done = await rotate(kit, old_id, "--yes")
    [new] = TOKEN.findall(done.stdout)
    assert "olga@acme.example" in done.stdout  # who it names is shown, as to a person at a terminal
    assert await works(h, http, new)
    assert (await successor(h, new)).expires_at - datetime.now(UTC) <= timedelta(days=30)  # not the ten years its row said


async def test_all_rotates_every_live_signed_token_of_one_tenant_once_confirmed(
    start_approval: StartApproval, http: httpx.AsyncClient, kit: KitSettings, infra: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await start_approval()
    ann, _, ann_expires = await token_of(h, "ann@acme.example", days=5)
    sam, _, sam_expires = await token_of(h, "sam@acme.example", days=20)
    olga, olga_id = await pre_signing_token(h, infra, "olga@acme.example", days=30)
    other_tenant = f"globex-{uuid.uuid4().hex[:6]}"
    globex, *_ = await token_of(h, "gus@globex.example", days=5, tenant=other_tenant)

    scripted = await rotate(kit, "--all", "--tenant", h.tenant, code=1)  # no terminal, no --yes: shown, not done
    assert "give --yes to rotate these 2 tokens" in scripted.output
    assert "ann@acme.example" in scripted.output
    assert "sam@acme.example" in scripted.output
    monkeypatch.setattr(_approvals_tokens, "interactive", lambda: True)
    declined = await rotate(kit, "--all", "--tenant", h.tenant, stdin="n\n", code=1)
    assert "nothing rotated" in declined.output
    assert [await works(h, http, t) for t in (ann, sam, globex)] == [True, True, True]

    done = await rotate(kit, "--all", "--tenant", h.tenant, stdin="y\n")
    new = TOKEN.findall(done.stdout)
    assert len(new) == 2
    assert [await works(h, http, t) for t in (ann, sam)] == [False, False]
    assert [await works(h, http, t) for t in new] == [True, True]
    assert sorted([((s := await successor(h, t)).approver, s.expires_at) for t in new]) == [
        ("ann@acme.example", ann_expires),
        ("sam@acme.example", sam_expires),
    ]
    assert f"left as it is: {olga_id} (olga@acme.example) is unsigned" in done.stdout  # re-issued alone, after a person checks it
    assert not [t for t in await h.repo.tokens() if t.token_id == olga_id and t.revoked_at is not None]
    assert not await works(h, http, olga)  # still refused, as before: nobody vouched for it
    assert await works(h, http, globex)  # another tenant's token is not touched
    assert (await rotate(kit, "--all", code=1)).output.count("--tenant") >= 1  # --all names its tenant
