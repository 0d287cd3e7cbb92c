"""`tidegate connectors` against the real PostgreSQL: what the CLI writes is what the executor reads, through a key rotation."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from connector_harness import CANARY, cli

import connectors as c
from servicekit import KitSettings, deployment_authority


async def test_enable_seal_rotate_and_disable_as_the_executor_sees_it(kit: KitSettings) -> None:
    tenant = f"cli-{uuid.uuid4().hex[:8]}"
    said = cli(kit, "connectors", "enable", "github", "--tenant", tenant, "--set", "base_url=http://127.0.0.1:9")
    secret_file = kit.keys_dir.parent / "token.txt"
    secret_file.write_text(CANARY + "\n")
    said += cli(kit, "connectors", "set-credential", "github", "--tenant", tenant, "--from-file", str(secret_file))
    pool: Any = await asyncpg.create_pool(kit.database_url, min_size=1, max_size=2)
    try:
        access = c.ConnectorAccess(c.PgGrantStore(pool), c.Vault(kit.keys_dir), c.GrantVerifier(deployment_authority(kit)))
        granted = await access.for_call(tenant, "github", "github_get_issue")
        assert (granted.secret, granted.connection) == (CANARY, {"base_url": "http://127.0.0.1:9"})
        before = await c.PgGrantStore(pool).get(tenant, "github")
        assert before is not None
        assert before.sealed is not None
        assert before.tools == {"github_get_file", "github_get_issue"}  # read-only by default
        assert before.proof is not None
        assert before.proof.signed_by == kit.operator  # signed with the CLI's operator key, which the executor checks

        said += cli(kit, "connectors", "rotate-key")
        after = await c.PgGrantStore(pool).get(tenant, "github")
        assert after is not None
        assert after.sealed is not None
        assert after.sealed.key_id != before.sealed.key_id
        assert after.proof is not None
        assert after.proof.signature != before.proof.signature  # the grant so changed is signed again
        assert (await access.for_call(tenant, "github", "github_get_issue")).secret == CANARY
        assert not list((kit.keys_dir / "executor").glob(f"{c.KEY_NAME}.*.key"))  # the old private key is gone

        said += cli(kit, "connectors", "disable", "github", "--tenant", tenant, "--forget-credential")
        gone = await c.PgGrantStore(pool).get(tenant, "github")
        assert gone is not None
        assert (gone.enabled, gone.sealed) == (False, None)
    finally:
        await pool.close()
    assert CANARY not in said
