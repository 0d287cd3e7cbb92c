"""`tidegate policy`, `tidegate killswitch` and `tidegate budget` as an operator runs them, against the real broker."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg

from servicekit import REPO_ROOT, KitSettings, catalog_topic_names, ensure_topics
from tidegate.commands.killswitch import read_control


def tidegate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tidegate.cli", *args], env=env, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)


def test_killswitch_and_publish_commands(infra, prefix: str, tmp_path: Path) -> None:
    asyncio.run(ensure_topics(infra.kafka_bootstrap, prefix, catalog_topic_names()))
    env = os.environ | {"TIDEGATE_TOPIC_PREFIX": prefix, "TIDEGATE_KAFKA_BOOTSTRAP": infra.kafka_bootstrap, "COLUMNS": "200"}
    kit = KitSettings(kafka_bootstrap=infra.kafka_bootstrap, topic_prefix=prefix)

    done = tidegate(env, "killswitch", "set", "--tool", "issue_refund", "--tenant", "acme", "--reason", "incident 42", "--by", "oncall")
    assert done.returncode == 0, done.stderr
    listed = tidegate(env, "killswitch", "list")
    assert "issue_refund" in listed.stdout
    assert "incident 42" in listed.stdout
    assert tidegate(env, "killswitch", "clear", "--tool", "issue_refund", "--tenant", "acme").returncode == 0
    assert "no active kill switch" in tidegate(env, "killswitch", "list").stdout

    # A pack whose tests fail is not published; a good one is, with the directory's version.
    bad = tmp_path / "bad"
    shutil.copytree(REPO_ROOT / "policies" / "default", bad)
    (bad / "financial.cedar").write_text(
        (bad / "financial.cedar")
        .read_text()
        .replace('@outcome("deny")\n@reason("new_payee_blocked")', '@outcome("deny")\n@reason("human_only")')
    )
    refused = tidegate(env, "policy", "publish", str(bad))
    assert refused.returncode != 0
    assert "not published" in refused.stderr + refused.stdout
    published = tidegate(env, "policy", "publish", "--by", "security")
    assert published.returncode == 0, published.stderr
    state = asyncio.run(read_control(kit))
    assert state.policy is not None
    assert state.policy.published_by == "security"
    assert state.policy.version in published.stdout.replace("\n", "")

    invalid = tmp_path / "invalid"
    invalid.mkdir()
    (invalid / "p.cedar").write_text(
        '@id("x") @outcome("allow") @reason("read_allowed") permit(principal, action, resource) when { context.nope };'
    )
    checked = tidegate(env, "policy", "validate", str(invalid))
    assert checked.returncode != 0
    assert "nope" in checked.stdout


def budget_env(infra, prefix: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The environment of `tidegate budget` on the test's topics (made) and the database."""
    asyncio.run(ensure_topics(infra.kafka_bootstrap, prefix, catalog_topic_names()))
    return os.environ | {
        "TIDEGATE_TOPIC_PREFIX": prefix,
        "TIDEGATE_KAFKA_BOOTSTRAP": infra.kafka_bootstrap,
        "TIDEGATE_DATABASE_URL": infra.database_url,
        "COLUMNS": "200",
    }


def test_budget_commands(infra, prefix: str) -> None:
    env = budget_env(infra, prefix)
    kit = KitSettings(kafka_bootstrap=infra.kafka_bootstrap, topic_prefix=prefix)

    before = tidegate(env, "budget", "list")
    assert before.returncode == 0, before.stderr
    assert "pack settings" in before.stdout  # the default pack caps acme and globex

    done = tidegate(env, "budget", "set", "globex", "7.5", "--by", "finance")
    assert done.returncode == 0, done.stderr
    assert asyncio.run(read_control(kit)).budgets == {"globex": 7.5}  # what every policy copy applies, without a restart
    listed = tidegate(env, "budget", "list")
    globex = next(line for line in listed.stdout.splitlines() if "globex" in line)
    assert "7.5000" in globex
    assert "control" in globex

    refused = tidegate(env, "budget", "set", "globex", "--", "-1")
    assert refused.returncode != 0
    assert "negative" in refused.stderr


def cells_of(listed: subprocess.CompletedProcess[str], tenant: str) -> list[str]:
    """The cells of `tenant`'s row of `tidegate budget list`."""
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if f" {tenant} " in line)
    return [cell.strip() for cell in row.replace("│", "|").split("|") if cell.strip()]


async def _spent(database_url: str, tenant: str, usd: float | None) -> None:
    """What the policy's spend table holds once the tenant's calls reserved `usd` (as in restore7's drill); None: its row removed."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DELETE FROM policy.spend WHERE tenant_id = $1", tenant)
        if usd is not None:
            await conn.execute("INSERT INTO policy.spend (tenant_id, task_id, amount_usd) VALUES ($1, '*', $2)", tenant, usd)
    finally:
        await conn.close()


def test_budget_list_shows_the_cap_the_policy_enforces_for_a_tenant_onboarded_with_a_budget(infra, prefix: str) -> None:
    """restore7 F4: `tenant add --budget 0.2`, `tenant set --budget 0.07`: the list showed the pack's 100 USD (99.93 left)."""
    env = budget_env(infra, prefix)
    tenant = f"initech{uuid.uuid4().hex[:6]}"
    added = tidegate(env, "tenant", "add", tenant, "--autonomous", "--refund-threshold", "100", "--budget", "0.2", "--by", "admin")
    assert added.returncode == 0, added.stderr
    assert tidegate(env, "tenant", "set", tenant, "--budget", "0.07", "--by", "admin").returncode == 0
    asyncio.run(_spent(infra.database_url, tenant, 0.0678))
    try:
        limit, source, spent, remaining = cells_of(tidegate(env, "budget", "list"), tenant)[1:5]
        assert (limit, spent, remaining) == ("0.0700", "0.0678", "0.0022")  # what the policy enforces, not the pack's 100
        assert source.startswith("control.tenant")

        assert tidegate(env, "budget", "set", tenant, "0.05", "--by", "finance").returncode == 0
        limit, source = cells_of(tidegate(env, "budget", "list"), tenant)[1:3]
        assert (limit, source) == ("0.0500", "control.budget")  # a control.budget record overrides the tenant's record
    finally:
        asyncio.run(_spent(infra.database_url, tenant, None))
