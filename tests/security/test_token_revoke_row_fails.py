"""The operator revokes a leaked token with `tidegate approvals token revoke` and PostgreSQL fails the row (leftovers22 #4).

The real approval service, Kafka, PostgreSQL and CLI: the database refuses the write of the token's `revoked_at` (a
trigger the test installs as PostgreSQL's administrator: a disk full, a failover at that moment). Before, the command
printed a traceback and the operator could not tell whether the leaked token still worked. Now it says the token IS
revoked (its record is on `control`: the service refuses it at once), that its row still says live, and to run the same
command again, which then writes the row.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from approval_harness import StartApproval
from test_approval_login_endpoints import BOB, GROUPS, bearer
from test_connector_grant_forgery import tidegate

pytestmark = pytest.mark.integration


@pytest.fixture
async def failing_rows(infra: Any) -> AsyncIterator[asyncpg.Connection]:
    """PostgreSQL's administrator, to make the database fail the writes of a token's `revoked_at` (and undo it)."""
    admin = await asyncpg.connect(infra.admin_database_url)
    yield admin
    await admin.execute("DROP TRIGGER IF EXISTS revoke_fails ON approval.approver_tokens")
    await admin.execute("DROP FUNCTION IF EXISTS approval.revoke_fails()")
    await admin.close()


async def test_a_revocation_whose_row_fails_says_the_token_is_revoked_and_running_it_again_writes_the_row(
    start_approval: StartApproval, http: httpx.AsyncClient, failing_rows: asyncpg.Connection, tmp_path: Path
) -> None:
    (groups := tmp_path / "groups.yaml").write_text(GROUPS)
    h = await start_approval(groups_file=groups)
    leaked = await h.token(BOB, ["finance"])
    me = f"{h.url}/api/v1/me"
    assert (await http.get(me, headers=bearer(leaked))).status_code == 200
    (token_id,) = [
        r["token_id"] for r in await failing_rows.fetch("SELECT token_id FROM approval.approver_tokens WHERE tenant_id = $1", h.tenant)
    ]
    await failing_rows.execute(
        "CREATE FUNCTION approval.revoke_fails() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'; END $$"
    )
    await failing_rows.execute(
        "CREATE TRIGGER revoke_fails BEFORE UPDATE OF revoked_at ON approval.approver_tokens FOR EACH ROW "
        f"WHEN (NEW.token_id = '{token_id}') EXECUTE FUNCTION approval.revoke_fails()"
    )

    done = tidegate(h.kit, "approvals", "token", "revoke", token_id)
    said = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1, said
    assert "Traceback" not in said
    assert f"token {token_id} IS revoked" in said
    assert "No space left on device" in said  # what failed
    assert "its row still says live" in said
    assert f"run `tidegate approvals token revoke {token_id}` again once PostgreSQL answers" in said
    assert (await http.get(me, headers=bearer(leaked))).status_code == 401  # revoked at once all the same

    await failing_rows.execute("DROP TRIGGER revoke_fails ON approval.approver_tokens")  # the disk has room again
    again = tidegate(h.kit, "approvals", "token", "revoke", token_id)
    assert again.returncode == 0, again.stdout + again.stderr
    revoked_at = await failing_rows.fetchval("SELECT revoked_at FROM approval.approver_tokens WHERE token_id = $1", token_id)
    assert revoked_at is not None  # the row says it too
