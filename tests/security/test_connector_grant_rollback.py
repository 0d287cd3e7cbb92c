"""An older connector grant the operator once signed, put back in the table, is refused (security review of grants, F7).

The attacker can write `executor.connector_grants` (the operator's database login, whose passfile any process of its
OS user reads on one host; a superuser; an older backup restored) but holds no operator's key. It copied the tenant's
signed row while the grant was wider, waited for the operator to narrow it (`tidegate connectors disable`, a tool
taken off, a leaked credential replaced), and put the copy back: the signature over it still holds, and before the
fix the executor obeyed it. The real CLI writes the grants; the real executor (real Kafka and PostgreSQL) runs
authorizations signed as the policy signs them.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
from bus_helpers import Collector
from test_connector_grant_forgery import SECRET, Stage, operator, stage, tidegate  # noqa: F401  (the fixture)
from test_control_records import send_as_ops

import connectors as c
import schemas as s
from servicekit import ToolCatalog, create_pool
from tidegate.ops.control import read_trusted_control

pytestmark = pytest.mark.integration

COLUMNS = "enabled, tools, connection, key_id, sealed_secret, proof_key_id, proof_signature, signed_by, signed_at"


async def snapshot(login: asyncpg.Connection, tenant: str) -> asyncpg.Record:
    """The attacker's copy of the tenant's signed row, as it stands now."""
    row = await login.fetchrow(f"SELECT {COLUMNS} FROM executor.connector_grants WHERE tenant_id = $1 AND connector = 'zendesk'", tenant)
    assert row is not None
    return row


async def put_back(login: asyncpg.Connection, tenant: str, old: asyncpg.Record) -> None:
    """The copy written over the current row, byte for byte (what a restored backup does too)."""
    done = await login.execute(
        "UPDATE executor.connector_grants SET enabled = $2, tools = $3, connection = $4, key_id = $5, sealed_secret = $6, "
        "proof_key_id = $7, proof_signature = $8, signed_by = $9, signed_at = $10 WHERE tenant_id = $1 AND connector = 'zendesk'",
        tenant, *old.values(),
    )  # fmt: skip
    assert done == "UPDATE 1"


async def test_a_grant_put_back_after_disable_is_refused(stage: Stage, wait_for: Any) -> None:  # noqa: F811
    operator(stage.kit, "connectors", "enable", "zendesk", "--tenant", stage.tenant, "--tool", "zendesk_set_status")
    wide = await snapshot(stage.login, stage.tenant)
    operator(stage.kit, "connectors", "disable", "zendesk", "--tenant", stage.tenant, "--tool", "zendesk_set_status")
    operator(stage.kit, "connectors", "disable", "zendesk", "--tenant", stage.tenant)
    assert (await stage.call("zendesk_get_ticket", {"ticket_id": 42}, wait_for)).data.error.type == "credential_missing"

    await put_back(stage.login, stage.tenant, wide)
    replayed = await stage.call("zendesk_set_status", {"ticket_id": 42, "status": "solved"}, wait_for)
    assert replayed.type == "tidegate.action.failed"
    assert replayed.data.error.type == "grant_rolled_back", replayed.data.error
    assert not replayed.data.error.retryable
    assert stage.zendesk.tickets[42]["status"] == "open"  # the write the operator took away did not run
    assert not [r for r in stage.zendesk.requests if r[0] == "PUT"]


async def test_a_credential_replaced_after_a_leak_cannot_be_put_back(stage: Stage, wait_for: Any) -> None:  # noqa: F811
    leaked = await snapshot(stage.login, stage.tenant)  # sealed with the leaked SECRET
    rotated = f"zd_live_NEW_{uuid.uuid4().hex[:8]}"
    stage.zendesk.token = rotated  # the vendor revokes nothing yet: the old token still answers there
    operator(stage.kit, "connectors", "set-credential", "zendesk", "--tenant", stage.tenant, stdin=rotated)
    await put_back(stage.login, stage.tenant, leaked)
    stage.zendesk.token = SECRET
    seen = len(stage.zendesk.requests)
    replayed = await stage.call("zendesk_get_ticket", {"ticket_id": 42}, wait_for)
    assert replayed.data.error.type == "grant_rolled_back", replayed.data
    assert len(stage.zendesk.requests) == seen  # the leaked credential left nothing


async def test_the_operators_next_command_does_not_sign_over_a_grant_put_back(stage: Stage, wait_for: Any) -> None:  # noqa: F811
    """Else the rollback is laundered: the operator's next `enable` would sign the old wide row, and make it current."""
    operator(stage.kit, "connectors", "enable", "zendesk", "--tenant", stage.tenant, "--tool", "zendesk_set_status")
    wide = await snapshot(stage.login, stage.tenant)
    operator(stage.kit, "connectors", "disable", "zendesk", "--tenant", stage.tenant, "--tool", "zendesk_set_status")
    await put_back(stage.login, stage.tenant, wide)

    later = tidegate(stage.kit, "connectors", "enable", "zendesk", "--tenant", stage.tenant, "--tool", "zendesk_add_internal_note")
    assert later.returncode != 0
    assert "not the grant an operator made current last" in later.stdout + later.stderr
    listed = operator(stage.kit, "connectors", "list", "--tenant", stage.tenant)
    assert "grant_rolled_back" in listed
    assert (await stage.call("zendesk_set_status", {"ticket_id": 42, "status": "solved"}, wait_for)).data.error.type == "grant_rolled_back"


async def test_a_grant_from_before_the_upgrade_works_until_pinned_then_is_bound(
    stage: Stage,  # noqa: F811
    wait_for: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Grants written by a release that published no record: obeyed with a warning, then `connectors pin --all` binds them."""
    fresh = f"f7u-{uuid.uuid4().hex[:8]}"
    pool = await create_pool(stage.kit.database_url, max_size=1)
    try:
        older_release = c.GrantWriter.of_operator(stage.kit, c.PgGrantStore(pool))  # signs, publishes no record
        catalog = ToolCatalog.load(stage.kit.tools_dir)
        await c.enable(older_release, catalog, fresh, "zendesk", tools=["zendesk_set_status"],
                       connection={"base_url": stage.zendesk.url, "email": stage.zendesk.email})  # fmt: skip
        await c.set_credential(older_release, c.Vault(stage.kit.keys_dir), fresh, "zendesk", SECRET)
        wide = await snapshot(stage.login, fresh)
        await c.disable(older_release, fresh, "zendesk", tools=["zendesk_set_status"], catalog=catalog)
    finally:
        await pool.close()
    upgraded = Stage(**{**stage.__dict__, "tenant": fresh})
    assert (await upgraded.call("zendesk_get_ticket", {"ticket_id": 42}, wait_for)).type == "tidegate.action.succeeded"
    assert f"the zendesk grant of tenant {fresh} is obeyed though no operator's control record names it" in caplog.text
    assert f"unpinned: {fresh}/zendesk is signed but no control record names it" in operator(
        stage.kit, "connectors", "list", "--tenant", fresh
    )

    shown = operator(stage.kit, "connectors", "pin", "--all", "--yes")
    assert f"{fresh}/zendesk (enabled, signed by" in shown
    await put_back(stage.login, fresh, wide)
    replayed = await upgraded.call("zendesk_set_status", {"ticket_id": 42, "status": "solved"}, wait_for)
    assert replayed.data.error.type == "grant_rolled_back"
    assert stage.zendesk.tickets[42]["status"] == "open"


async def test_an_old_record_sent_again_with_the_old_row_does_not_make_it_current(stage: Stage, wait_for: Any) -> None:  # noqa: F811
    """The attacker also holds the `ops` bus login: it sends the record that named the wide grant again, verbatim."""
    operator(stage.kit, "connectors", "enable", "zendesk", "--tenant", stage.tenant, "--tool", "zendesk_set_status")
    wide = await snapshot(stage.login, stage.tenant)
    accepted: list[s.Envelope] = []
    await read_trusted_control(stage.kit, accepted=accepted)
    named_wide = [e for e in accepted if isinstance(e, s.ControlConnectorGrant) and e.data.tenant_id == stage.tenant][-1]
    operator(stage.kit, "connectors", "disable", "zendesk", "--tenant", stage.tenant, "--tool", "zendesk_set_status")

    dead = Collector(stage.kit, ["deadletter"])
    await dead.start()
    try:
        await put_back(stage.login, stage.tenant, wide)
        await send_as_ops(stage.kit, s.encode(named_wide), b"anything")
        refused = await wait_for(
            lambda: [e for e in dead.rejected(named_wide.id) if e.data.service == "executor"], timeout=60, what="the replay refused"
        )
        assert refused[0].data.code == "control_replayed"
    finally:
        await dead.stop()
    replayed = await stage.call("zendesk_set_status", {"ticket_id": 42, "status": "solved"}, wait_for)
    assert replayed.data.error.type == "grant_rolled_back"
    assert stage.zendesk.tickets[42]["status"] == "open"
