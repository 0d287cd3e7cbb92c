"""The bring-your-own-agent example, run as its own process against the real broker and the policy and executor services."""

from __future__ import annotations

import asyncio
import json
import re
import sys

from servicekit import REPO_ROOT, client_key, client_private_key, create_pool
from services.executor.app import build as build_executor
from services.policy.app import build as build_policy
from systems.seed import seed_demo

AGENT = REPO_ROOT / "examples" / "bring_your_own_agent" / "agent.py"


def test_the_example_imports_no_tidegate_code():
    source = AGENT.read_text()
    imports = re.findall(r"^\s*(?:from|import)\s+([a-zA-Z_][\w.]*)", source, re.MULTILINE)
    assert not {m.split(".")[0] for m in imports} & {"schemas", "servicekit", "services", "tidegate", "systems"}


async def test_an_outside_agent_gets_the_same_governance(kit):
    pool = await create_pool(kit.database_url, max_size=2)
    try:
        await seed_demo(pool, ("acme",))
    finally:
        await pool.close()
    client_key(kit, "acme", "byoa@acme.example")  # the operator registers the agent's key for the tenant
    policy, executor = build_policy(kit), build_executor(kit)
    await policy.start()
    await executor.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(AGENT),
            "--bootstrap",
            kit.kafka_bootstrap,
            "--prefix",
            kit.topic_prefix,
            "--timeout",
            "60",
            "--json",
            "--key",
            str(client_private_key(kit, "acme", "byoa@acme.example")),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 90)
        assert proc.returncode == 0, err.decode()[-2000:]
        report = json.loads(out)
        ids = list(report["actions"])  # in the order proposed; each ends in a random part no other tenant can predict
        assert [i.rsplit(".", 1)[0] for i in ids] == [f"{report['task_id']}:{n}" for n in (1, 2, 3)]
        tag, new_payee, big = (report["actions"][i] for i in ids)
        assert (tag["decision"], tag["result"]) == ("allow", "succeeded")
        assert new_payee["decision"] == "deny"
        assert "new_payee_blocked" in new_payee["reasons"]
        assert "result" not in new_payee
        assert big["decision"] == "escalate"
        assert big["reasons"] == ["needs_human_approval"]
        pool = await create_pool(kit.database_url, max_size=1)
        try:
            refunds = await pool.fetchval("SELECT count(*) FROM payments.refunds WHERE idempotency_key LIKE $1", f"{report['task_id']}:%")
            tags = [
                r["tag"] for r in await pool.fetch("SELECT tag FROM helpdesk.ticket_tags WHERE tenant_id = 'acme' AND ticket_id = 'T-1007'")
            ]
        finally:
            await pool.close()
        assert refunds == 0
        assert "byoa" in tags
    finally:
        await executor.stop()
        await policy.stop()
