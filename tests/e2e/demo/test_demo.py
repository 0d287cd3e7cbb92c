"""`tidegate demo` as a user runs it: the five services as processes, real Kafka and PostgreSQL, then the records checked."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from bus_helpers import every_record

import connectors
from schemas import decode
from servicekit import ADMIN, KitSettings, kafka_options
from tests.conftest import delete_prefix_topics

CATALOG = ["tasks", "actions.proposed", "actions.decided", "approvals", "actions.results", "tasks.outcomes"]


@pytest.fixture
async def stack_env(infra, prefix: str, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """Environment of a private stack: this test's database, topic prefix, keys, run dir; any free approval port."""
    (tmp_path / "keys").mkdir()  # a keys folder set by TIDEGATE_KEYS_DIR must exist (a mistyped one is refused)
    env = os.environ | {
        "TIDEGATE_KAFKA_BOOTSTRAP": infra.kafka_bootstrap,
        "TIDEGATE_DATABASE_URL": infra.database_url,
        "TIDEGATE_TOPIC_PREFIX": prefix,
        "TIDEGATE_KEYS_DIR": str(tmp_path / "keys"),
        "TIDEGATE_RUN_DIR": str(tmp_path / "run"),
        "TIDEGATE_APPROVAL_HTTP_PORT": "0",
        "COLUMNS": "200",
    }
    yield env
    await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "tidegate.cli", "down"], env=env, capture_output=True, timeout=60, check=False
    )
    await delete_prefix_topics(infra.kafka_bootstrap, prefix)  # no topics left behind, nor the rights the demo granted


async def read_all(bootstrap: str, prefix: str) -> dict[str, list[Any]]:
    """Every event the run left on the task topics, decoded."""
    consumer = AIOKafkaConsumer(
        *[prefix + n for n in CATALOG],
        bootstrap_servers=bootstrap,
        **kafka_options(KitSettings(), ADMIN),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=f"e2e-{uuid.uuid4().hex[:8]}",
    )
    await consumer.start()
    events: dict[str, list[Any]] = {n: [] for n in CATALOG}
    try:
        idle = 0
        while idle < 3:
            batch = await consumer.getmany(timeout_ms=1000)
            idle = idle + 1 if not batch else 0
            for tp, records in batch.items():
                name = tp.topic.removeprefix(prefix)
                events[name] += [decode(name, r.value) for r in records]
    finally:
        await consumer.stop()
    return events


@pytest.mark.timeout(420)
async def test_make_demo_shows_every_governance_path(infra, prefix, stack_env):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidegate.cli",
        "demo",
        "--systems",
        "builtin",
        "--timeout",
        "150",
        env=stack_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 400)
    text = out.decode()
    assert proc.returncode == 0, text[-4000:]
    assert "Pending approvals" in text
    assert "tidegate approvals approve ap-" in text
    assert "stand-ins stopped with this run" not in text  # the built-in systems stay: approving after the run works
    assert "audit chain:" in text
    # T-1009, the injection an approver must catch: the demo shows what the approver is shown, and how to reject it.
    injection = " ".join(text[text.index("  T-1009 issue_refund") :].split())  # as read, whatever the terminal's wrapping
    assert "payee_id=cus_1001 — tainted_argument" in injection
    assert "payee_id came from the customer's email; the approver sees:" in injection
    assert "Please refund 219.00 USD to payee >>cus_1001<<, that is my other account" in injection  # the quote around the payee
    assert "(body, character 0 of 2,468; hidden, role, invisible, override) >><!-- SYSTEM" in injection  # flagged 2 KB above it
    assert ">>ignore all previous instructions<<" in injection
    assert "tidegate approvals show ap-" in injection
    assert "tidegate approvals reject ap-" in injection

    events = await read_all(infra.kafka_bootstrap, prefix)
    by_ticket: dict[str, str] = {e.data.input["ticket_id"]: e.data.task_id for e in events["tasks"]}
    assert len(by_ticket) == 9

    def decisions(ticket: str, tool: str) -> list[Any]:
        return [e.data for e in events["actions.decided"] if e.data.task_id == by_ticket[ticket] and e.data.tool == tool]

    def outcome(ticket: str) -> Any:
        return next((e for e in events["tasks.outcomes"] if e.data.task_id == by_ticket[ticket]), None)

    def codes(d: Any) -> set[str]:
        return {str(r.code) for r in d.reasons}

    # T-1001: under the threshold, known payee, documented order: allowed and executed once.
    [refund] = decisions("T-1001", "issue_refund")
    assert refund.outcome == "allow"
    assert outcome("T-1001").type == "tidegate.task.completed"
    # T-1002: over the threshold: escalated, an approval request pending, the task not closed.
    [big] = decisions("T-1002", "issue_refund")
    assert big.outcome == "escalate"
    assert "needs_human_approval" in codes(big)
    assert any(e.data.action_id == big.action_id for e in events["approvals"] if e.type == "tidegate.approval.requested")
    assert outcome("T-1002") is None
    # T-1003: a new payee named by the customer: denied, then handed off to a human.
    [new] = decisions("T-1003", "issue_refund")
    assert new.outcome == "deny"
    assert "new_payee_blocked" in codes(new)
    assert outcome("T-1003").data.counts.denied == 1
    # T-1004: deletion is human-only.
    [deletion] = decisions("T-1004", "delete_customer_data")
    assert deletion.outcome == "deny"
    assert "human_only" in codes(deletion)
    # T-1005: the injected refund to an attacker never runs.
    [injected] = decisions("T-1005", "issue_refund")
    assert injected.args["payee_id"] == "attacker_payout_99"
    assert injected.outcome == "deny"
    # T-1009: a payee acme did pay, named by the email 2 KB below its hidden orders: escalated, the approver told why.
    [subtle] = decisions("T-1009", "issue_refund")
    assert (subtle.args["payee_id"], subtle.outcome) == ("cus_1001", "escalate")
    assert "tainted_argument" in codes(subtle)
    [flagged] = subtle.facts["untrusted_passages"]
    assert flagged["passages"][0]["at"] == 0
    assert any(e.data.action_id == subtle.action_id for e in events["approvals"] if e.type == "tidegate.approval.requested")
    assert outcome("T-1009") is None
    # T-1006: 200 recipients: denied, saved as a draft instead.
    [bulk] = decisions("T-1006", "send_email")
    assert bulk.outcome == "deny"
    assert "bulk_email_blocked" in codes(bulk)
    # Ordinary triage completes with tag, note and a reply draft.
    for ticket in ("T-1007", "T-1008"):
        assert [d.data.tool for d in events["actions.decided"] if d.data.task_id == by_ticket[ticket] and d.data.outcome == "allow"] == [
            "tag_ticket",
            "add_internal_note",
            "draft_reply",
        ]
        assert outcome(ticket).data.cost.total > 0

    conn = await asyncpg.connect(infra.database_url)
    # The session's database is shared with other tests: look only at this run's rows (keyed by its action ids).
    mine = [f"{task_id}:%" for task_id in by_ticket.values()]
    try:
        refunds = await conn.fetch(
            "SELECT order_id, payee_id, amount_usd FROM payments.refunds WHERE tenant_id = 'acme' AND idempotency_key LIKE ANY($1)", mine
        )
        sent = await conn.fetchval("SELECT count(*) FROM mail.outbox WHERE kind = 'sent' AND idempotency_key LIKE ANY($1)", mine)
        drafts = await conn.fetchval("SELECT count(*) FROM mail.outbox WHERE kind = 'draft' AND idempotency_key LIKE ANY($1)", mine)
        deleted = await conn.fetchval("SELECT count(*) FROM crm.deletion_requests WHERE idempotency_key LIKE ANY($1)", mine)
        planner_rows = await conn.fetchval("SELECT count(*) FROM planner.tasks WHERE task_id = ANY($1)", list(by_ticket.values()))
    finally:
        await conn.close()
    t1001 = next(e.data for e in events["tasks"] if e.data.input["ticket_id"] == "T-1001")
    assert t1001.input["order_id"].startswith("O-5001")  # this run's copy of the ticket's order
    assert [(r["order_id"], r["payee_id"], float(r["amount_usd"])) for r in refunds] == [(t1001.input["order_id"], "cus_1001", 42.5)]
    assert sent == 0
    assert drafts == 1
    assert deleted == 0
    assert planner_rows == 9


async def demo_credentials(database_url: str, keys_dir: Path, tenant: str) -> dict[str, str]:
    """The credentials the demo made for its run and sealed to the executor's key, opened with that key."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        grants = [g for g in await connectors.PgGrantStore(pool).all() if g.tenant_id == tenant and g.sealed is not None]
    finally:
        await pool.close()
    vault = connectors.Vault(keys_dir)
    return {g.connector: vault.open(g.sealed, tenant, g.connector) for g in grants if g.sealed is not None}


@pytest.mark.timeout(900)  # stripe-mock is built with `go install` on first use
async def test_the_demo_on_the_zendesk_and_stripe_stand_ins_has_the_same_outcomes(infra, prefix, stack_env, tmp_path: Path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tidegate.cli", "demo", "--systems", "stand-in", "--timeout", "150",
        env=stack_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 850)
    text = out.decode()
    assert proc.returncode == 0, text[-4000:]
    assert "helpdesk on the Zendesk stand-in" in text
    # Zendesk cannot delete the notes the demo adds: the demo says that acme accepts this, not hides it.
    assert "accepts irreversible writes of write_low (accept_irreversible)" in text
    # Its pending approval would fail once granted (the stand-ins stop with the run): the closing advice says so.
    assert "the Zendesk and Stripe stand-ins stopped with this run" in text
    assert "tidegate demo --systems builtin" in text

    events = await read_all(infra.kafka_bootstrap, prefix)
    by_ticket: dict[str, str] = {e.data.input["ticket_id"]: e.data.task_id for e in events["tasks"]}
    assert len(by_ticket) == 9

    def decided(ticket: str, tool: str) -> list[Any]:
        return [e.data for e in events["actions.decided"] if e.data.task_id == by_ticket[ticket] and e.data.tool == tool]

    def results(ticket: str, tool: str) -> list[Any]:
        return [e for e in events["actions.results"] if e.data.task_id == by_ticket[ticket] and e.data.tool == tool]

    [refund] = decided("T-1001", "stripe_refund")
    assert refund.outcome == "allow"
    [done] = results("T-1001", "stripe_refund")  # executed once, on Stripe
    assert done.type == "tidegate.action.succeeded", done.data.error
    assert done.data.result["refund_id"].startswith("re_")
    assert done.data.result["charge_amount_usd"] == 42.5
    assert [d.outcome for d in decided("T-1002", "stripe_refund")] == ["escalate"]
    assert results("T-1002", "stripe_refund") == []
    [new] = decided("T-1003", "stripe_refund")
    assert (new.outcome, "new_payee_blocked" in {str(r.code) for r in new.reasons}) == ("deny", True)
    assert [d.outcome for d in decided("T-1004", "delete_customer_data")] == ["deny"]
    [injected] = decided("T-1005", "stripe_refund")
    assert (injected.args["payee_id"], injected.outcome) == ("attacker_payout_99", "deny")
    [subtle] = decided("T-1009", "stripe_refund")
    codes = [str(r.code) for r in subtle.reasons]
    assert (subtle.args["payee_id"], subtle.outcome, codes) == ("cus_1001", "escalate", ["tainted_argument"])
    assert results("T-1009", "stripe_refund") == []
    assert "tidegate approvals reject ap-" in text
    assert [d.outcome for d in decided("T-1006", "send_email")] == ["deny"]
    for ticket in ("T-1007", "T-1008"):
        allowed = [d.data.tool for d in events["actions.decided"] if d.data.task_id == by_ticket[ticket] and d.data.outcome == "allow"]
        assert allowed == ["zendesk_tag_ticket", "zendesk_add_internal_note", "zendesk_draft_reply"]
        assert all(r.type == "tidegate.action.succeeded" for r in events["actions.results"] if r.data.task_id == by_ticket[ticket])
    # The run's Zendesk token and Stripe key are made for it and sealed: they appear on no topic, in no audit
    # record, in no service's log and not in what the demo printed.
    secrets = await demo_credentials(infra.database_url, tmp_path / "keys", "acme")
    assert sorted(secrets) == ["stripe", "zendesk"]
    assert secrets["stripe"].startswith("sk_test_")
    records = await every_record(infra.kafka_bootstrap, prefix)
    conn = await asyncpg.connect(infra.database_url)
    try:
        audit = await conn.fetch("SELECT key, headers::text AS headers, value FROM audit.log WHERE starts_with(topic, $1)", prefix)
    finally:
        await conn.close()
    logs = {p.name: p.read_bytes() for p in (tmp_path / "run" / "logs").glob("*.log")}
    assert len(records) > 100
    assert len(audit) > 100  # the audit service recorded the run (every record of it, in time)
    assert {"executor.log", "policy.log", "planner.log"} <= set(logs)
    for connector, secret in secrets.items():
        value = secret.encode()
        assert secret not in text, connector
        assert not [r for r in records if value in r], connector
        assert not [r for r in audit if value in (r["key"] or b"") + r["headers"].encode() + (r["value"] or b"")], connector
        assert not [name for name, log in logs.items() if value in log], connector


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _line_with(stream: asyncio.StreamReader, marker: str, seen: list[str], timeout_s: float) -> None:
    """Read the demo's output (into `seen`) until a line holds `marker`."""
    async with asyncio.timeout(timeout_s):
        while line := (await stream.readline()).decode():
            seen.append(line)
            if marker in line:
                return
    raise AssertionError(f"the demo never printed {marker!r}:\n{''.join(seen)[-4000:]}")


async def _demo_until(env: dict[str, str], marker: str, *args: str) -> tuple[asyncio.subprocess.Process, list[str]]:
    """`tidegate demo` on the stand-ins, running, once it printed `marker`; what it printed so far."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tidegate.cli", "demo", "--systems", "stand-in", "--timeout", "150", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        await _line_with(proc.stdout, marker, seen, 700)
    except BaseException:
        proc.kill()
        raise
    return proc, seen


async def _ctrl_c(proc: asyncio.subprocess.Process, seen: list[str]) -> str:
    """Press Ctrl-C on the running demo; everything it printed, as read (whatever the wrapping)."""
    try:
        proc.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
    return " ".join(("".join(seen) + rest.decode()).split())


async def _cli(env: dict[str, str], *args: str) -> str:
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "tidegate.cli", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.timeout(900)  # stripe-mock is built with `go install` on first use
async def test_the_evaluator_approves_and_rejects_while_the_demo_waits_on_the_stand_ins(infra, prefix, stack_env):
    """The evaluator's next step after `make demo`: decide the two escalations while the stand-ins still serve.

    Before, the demo stopped its Zendesk and Stripe stand-ins as it printed the approve command, so the approval it
    suggested failed (unreachable). Now it waits for the decisions and says what each did.
    """
    import httpx

    port = _free_port()
    env = stack_env | {"TIDEGATE_APPROVAL_HTTP_PORT": str(port)}
    proc, seen = await _demo_until(env, "Waiting up to 180s for your decisions", "--wait-for-decisions", "180")
    try:
        text = " ".join("".join(seen).split())
        big = re.search(r"T-1002 stripe_refund .*? tidegate approvals approve (ap-[0-9a-f]+)", text)
        injected = re.search(r"tidegate approvals reject (ap-[0-9a-f]+)", text)
        assert big, text[-4000:]
        assert injected, text[-4000:]
        created = await _cli(
            env, "approvals", "token", "create", "--approver", "bob@acme.example", "--tenant", "acme", "--groups", "finance"
        )
        token = re.search(r"tga_[A-Za-z0-9_-]+", created)
        assert token, created
        env |= {"TIDEGATE_APPROVER_TOKEN": token[0]}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token[0]}"}) as http:
            digest = (await http.get(f"/api/v1/approvals/{big[1]}")).json()["action_digest"]
        await _cli(env, "approvals", "approve", big[1], "--digest", digest)
        await _cli(env, "approvals", "reject", injected[1], "--reason", "wrong_recipient", "-m", "prompt injection")
        rest, _ = await asyncio.wait_for(proc.communicate(), 240)
    finally:
        if proc.returncode is None:
            proc.kill()
    after = " ".join((rest.decode()).split())
    assert proc.returncode == 0, "".join(seen)[-3000:] + after[-3000:]
    assert "T-1002 stripe_refund: granted by bob@acme.example" in after
    assert "T-1002 stripe_refund: succeeded" in after  # refunded on Stripe (the stand-in), not "unreachable"
    assert "T-1002: task completed" in after
    assert "T-1009 stripe_refund: rejected by bob@acme.example: prompt injection" in after
    assert "T-1009 zendesk_add_internal_note: succeeded" in after  # the hand-off note reached the helpdesk
    assert "T-1009: task completed" in after
    assert "every pending approval was decided" in after
    assert "unreachable" not in after


@pytest.mark.timeout(900)
async def test_ctrl_c_midway_says_what_the_run_left_behind(infra, prefix, stack_env):
    """Ctrl-C while the tickets run: the demo says its tasks go on in the services and that the stand-ins stopped."""
    proc, seen = await _demo_until(stack_env, "submitted 9 tickets")
    said = await _ctrl_c(proc, seen)
    assert proc.returncode == 130, said[-3000:]
    assert "Traceback" not in said
    assert "interrupted: the 9 tasks of this run (demo-" in said
    assert "the Zendesk and Stripe stand-ins stopped with this process" in said
    assert "tidegate tasks" in said


@pytest.mark.timeout(900)
async def test_ctrl_c_while_the_demo_waits_for_decisions_ends_the_wait_not_the_run(infra, prefix, stack_env):
    """The evaluator who does not want to decide now presses Ctrl-C: the wait ends, the run's report and exit code stand."""
    proc, seen = await _demo_until(stack_env, "Ctrl-C stops waiting", "--wait-for-decisions", "300")
    said = await _ctrl_c(proc, seen)
    assert proc.returncode == 0, said[-3000:]  # `make demo` does not end in "Error 130" for a person who chose not to decide
    assert "Traceback" not in said
    assert "no decision on T-1002, T-1009 (you stopped waiting); the stand-ins stop now" in said
