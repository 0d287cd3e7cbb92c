"""The framework examples that run against a deployment, run as a developer runs them: a process of their own, in the
adapters' venv, with nothing but the client's `TIDEGATE_CLIENT_*` exports, against the real policy, approval and executor.

The offline examples (`integrations/tests/test_examples.py`) never meet a real service, so nothing caught an example a
developer could not point at a running Tidegate. `make test` builds `.venv-integrations` before these tests run.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path

import pytest
from asyncpg import create_pool
from conftest import Stack

from servicekit import REPO_ROOT
from systems.seed import seed_demo
from tidegate.client import ClientSettings

pytestmark = pytest.mark.timeout(300)

INT_PYTHON = REPO_ROOT / ".venv-integrations" / "bin" / "python"


def client_env(settings: ClientSettings) -> dict[str, str]:
    """The `TIDEGATE_CLIENT_*` exports docs/integrations.md lists, for `settings`, in a shell without the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDEGATE_", "PYTHON"))}
    env["PYTHONPATH"] = str(REPO_ROOT)  # the adapters' venv holds the frameworks, not the checkout (as `make integrations-test`)
    password = settings.sasl_password.get_secret_value() if settings.sasl_password else None
    fields = {
        "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "TOPIC_PREFIX": settings.topic_prefix,
        "SASL_USERNAME": settings.sasl_username,
        "SASL_PASSWORD": password,
        "SASL_MECHANISM": settings.sasl_mechanism,
        "SIGNING_KEY_PATH": settings.signing_key_path,
        "SERVICE_KEYS_DIR": settings.service_keys_dir,
        "TOOL_KEYS_DIR": settings.tool_keys_dir,
        "STATE_DIR": settings.state_dir,
        "TENANT": settings.tenant,
        "PRINCIPAL": settings.principal,
    }
    env.update({f"TIDEGATE_CLIENT_{k}": str(v) for k, v in fields.items() if v is not None})
    return env


async def _line(proc: asyncio.subprocess.Process, starts: str, seen: list[str]) -> str:
    """The example's first stdout line that starts with `starts` (every line read is kept in `seen`)."""
    assert proc.stdout is not None
    while True:
        raw = await proc.stdout.readline()
        if not raw:
            raise AssertionError(f"the example ended without {starts!r}: {seen}")
        seen.append(raw.decode().rstrip())
        if seen[-1].startswith(starts):
            return seen[-1]


async def test_the_openai_agents_example_against_the_services_escalates_and_runs_the_refund_once_a_human_approves(
    stack: Stack, client_settings: ClientSettings, tmp_path: Path
) -> None:
    """A developer's first run (agentsdev): the live example's refund is escalated, approved, and paid once."""
    if not INT_PYTHON.exists():
        pytest.fail(f"{INT_PYTHON} is missing: build the adapters' venv with `make .venv-integrations/.installed`")
    pool = await create_pool(stack.kit.database_url, min_size=1, max_size=2)
    try:
        await seed_demo(pool, ("acme",))  # the payee and order the example refunds, as `tidegate demo` seeds them
        token = await stack.approver_token("bob@acme.example", ["finance"])
        task = f"ticket-{uuid.uuid4().hex[:8]}"
        example = REPO_ROOT / "examples" / "integrations" / "openai_agents_live.py"
        proc = await asyncio.create_subprocess_exec(
            str(INT_PYTHON),
            str(example),
            "--task",
            task,
            "--state",
            str(tmp_path / "app-state"),
            "--wait",
            "120",
            cwd=tmp_path,
            env=client_env(client_settings),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        seen: list[str] = []
        try:
            said = await asyncio.wait_for(_line(proc, "escalated: ", seen), 120)
            action = said.split()[1]
            assert action == f"openai-agents:{task}:call_1", seen
            listing = await stack.http.get(
                f"{stack.approval.http_url}/api/v1/approvals",
                params={"action": action},
                headers={"Authorization": f"Bearer {token}"},
            )
            [request] = listing.json()
            assert f"in approval {request['approval_id']};" in said, seen  # the request to open, named by the app (escalations)
            assert request["args"] == {"payee_id": "cus_1002", "amount_usd": 899.0, "order_id": "O-5002"}
            assert await pool.fetchval("SELECT count(*) FROM payments.refunds WHERE tenant_id = 'acme'") == 0  # nothing before the human
            await stack.decide(request["approval_id"], "approve", token)
            read = await asyncio.wait_for(_line(proc, "the model read: ", seen), 120)
            assert await asyncio.wait_for(proc.wait(), 60) == 0, seen
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        [said_to_model] = json.loads(read.removeprefix("the model read: "))
        refund = json.loads(said_to_model)  # the refund the executor made, as the tool's output
        assert (refund["status"], refund["payee_id"], refund["amount_usd"]) == ("issued", "cus_1002", 899.0), seen
        refunds = await pool.fetch("SELECT idempotency_key, amount_usd FROM payments.refunds WHERE tenant_id = 'acme'")
        assert [(r["idempotency_key"], float(r["amount_usd"])) for r in refunds] == [(action, 899.0)]
    finally:
        await pool.close()
