"""A developer governing their own agent seeds the systems of record with the CLI alone, then refunds what it listed.

The catalog's `issue_refund` refunds only an order the payments tables hold, at most what is left of it. Before
`tidegate demo --seed-only`, only the whole demo seeded them (the services, the stand-ins, its tickets, a wait for
decisions): a developer's first approved refund failed `unknown_payee`, and once O-5002 was refunded every later run of
the docs' example failed `refund_exceeds_order` (integrator2).
"""

from __future__ import annotations

import asyncio
import re
import uuid

import pytest
from asyncpg import create_pool
from conftest import Stack
from typer.testing import CliRunner

from servicekit import KitSettings
from tidegate.cli import app as cli
from tidegate.client import ClientSettings, Escalated, Executed, Tidegate

pytestmark = pytest.mark.timeout(240)


def _cli_env(kit: KitSettings) -> dict[str, str]:
    """The deployment's settings, as the developer's shell has them for `tidegate`."""
    return {
        "TIDEGATE_DATABASE_URL": kit.database_url,
        "TIDEGATE_DB_CREDENTIALS_DIR": str(kit.db_credentials_dir),
        "TIDEGATE_KAFKA_BOOTSTRAP": kit.kafka_bootstrap,
        "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
        "TIDEGATE_TOPIC_PREFIX": kit.topic_prefix,
        "COLUMNS": "200",
    }


async def test_seed_only_lists_an_order_whose_escalated_refund_runs_once_a_human_approves(
    stack: Stack, client_settings: ClientSettings
) -> None:
    """`tidegate demo --seed-only`, then the refund it lists, escalated, approved: the executor pays it (no unknown_payee)."""
    said = await asyncio.to_thread(CliRunner().invoke, cli, ["demo", "--seed-only"], env=_cli_env(stack.kit))
    assert said.exit_code == 0, said.output
    assert "systems of record seeded" in said.output, said.output
    # A fresh copy of O-5002 (899.00 USD, nothing refunded yet), as the table lists it: order, payee, paid, left.
    fresh = re.search(r"(O-5002\d+)\W+cus_1002\W+899\.00\W+899\.00", said.output)
    assert fresh is not None, said.output
    args = {"payee_id": "cus_1002", "amount_usd": 899.0, "order_id": fresh.group(1)}
    action = f"seed-only:{uuid.uuid4().hex[:12]}"
    pool = await create_pool(stack.kit.database_url, min_size=1, max_size=2)
    try:
        async with Tidegate(client_settings, task_id=f"task-{action}") as tg:
            outcome = await tg.propose("issue_refund", args, action_id=action)
            assert isinstance(outcome, Escalated), outcome  # over acme's 500 USD threshold
            token = await stack.approver_token("bob@acme.example", ["finance"])
            await stack.decide(outcome.approval_id, "approve", token)
            done = await outcome.decision(90)
        assert isinstance(done, Executed), done
        refunds = await pool.fetch("SELECT order_id, amount_usd FROM payments.refunds WHERE idempotency_key = $1", action)
        assert [(r["order_id"], float(r["amount_usd"])) for r in refunds] == [(fresh.group(1), 899.0)]
    finally:
        await pool.execute("DELETE FROM payments.refunds WHERE idempotency_key = $1", action)  # leave the session's tables as found
        await pool.close()
