"""`tidegate db usage` as an operator runs it: every table with its size, and the working state a stopped sweep leaves due."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from servicekit import REPO_ROOT
from tidegate.database import SCHEMAS


def _usage(infra: Any) -> dict[str, dict[str, Any]]:
    env = os.environ | {"TIDEGATE_DATABASE_URL": infra.database_url}
    done = subprocess.run(
        [sys.executable, "-m", "tidegate.cli", "db", "usage", "--json"], env=env, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT
    )
    assert done.returncode == 0, done.stderr
    return {t["table"]: t for t in map(json.loads, done.stdout.splitlines())}


async def test_rows_older_than_the_setting_are_due_and_records_are_kept(infra: Any) -> None:
    tenant = f"usage-{uuid.uuid4().hex[:8]}"
    before = _usage(infra)
    assert {name.split(".")[0] for name in before} >= {s.name for s in SCHEMAS}  # every schema of the deployment
    assert before["audit.log"]["setting"] is None  # a record: nothing prunes it
    assert before["policy.provenance"]["setting"] == "TIDEGATE_POLICY_TASK_STATE_KEPT_S"

    conn = await asyncpg.connect(infra.database_url)
    try:
        # What the policy's sweep would forget had it run: two values read eight days ago, one today; a held reservation that old stays.
        await conn.executemany(
            "INSERT INTO policy.provenance (tenant_id, task_id, value, trusted, source, learned_at) "
            "VALUES ($1, 't', $2, false, 'a ticket', now() - make_interval(days => $3))",
            [(tenant, "v-1", 8), (tenant, "v-2", 8), (tenant, "v-3", 0)],
        )
        await conn.execute(
            "INSERT INTO policy.reservations (action_id, tenant_id, task_id, tool, args, amount_usd, status, created_at) "
            "VALUES ($1, $2, 't', 'issue_refund', '{}', 1, 'reserved', now() - interval '8 days')",
            f"{tenant}-held",
            tenant,
        )
        after = _usage(infra)
        assert after["policy.provenance"]["due"] == before["policy.provenance"]["due"] + 2
        assert after["policy.reservations"]["due"] == before["policy.reservations"]["due"]  # held: not the sweep's to forget
    finally:
        await conn.execute("DELETE FROM policy.provenance WHERE tenant_id = $1", tenant)
        await conn.execute("DELETE FROM policy.reservations WHERE tenant_id = $1", tenant)
        await conn.close()


def test_a_refused_login_is_one_line_that_says_what_to_do(infra: Any) -> None:
    parts = urlsplit(infra.database_url)
    wrong = parts._replace(netloc=f"{parts.username}:not-the-password@{parts.hostname}:{parts.port}", query="").geturl()
    env = os.environ | {"TIDEGATE_DATABASE_URL": wrong}
    done = subprocess.run(
        [sys.executable, "-m", "tidegate.cli", "db", "usage"], env=env, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT
    )
    assert done.returncode != 0
    assert "refused" in done.stderr
    assert "Traceback" not in done.stderr
