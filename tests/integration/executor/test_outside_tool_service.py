"""A `topic` tool served by the example outside service (a separate process, plain Kafka client) through the executor."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from signers import tool_key

import schemas as s
from servicekit import ADMIN, REPO_ROOT, Bus, KitSettings, Producer, ServiceProcess, SigningKey, kafka_options, sign_event

SERVICE = REPO_ROOT / "examples" / "outside_tool_service" / "inventory_service.py"


@pytest.fixture
async def warehouse(kit: KitSettings, tmp_path: Path) -> AsyncIterator[Path]:
    """The example inventory service as a subprocess; yields its SQLite file."""
    db = tmp_path / "inventory.sqlite3"
    log = tmp_path / "inventory.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(SERVICE),
                "--bootstrap",
                kit.kafka_bootstrap,
                "--prefix",
                kit.topic_prefix,
                "--db",
                str(db),
                "--keys-dir",
                str(kit.keys_dir),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        for _ in range(600):
            if "ready" in log.read_text():
                break
            assert proc.poll() is None, log.read_text()
            await asyncio.sleep(0.05)
        yield db
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        assert proc.returncode == 0, log.read_text()[-3000:]


def spy_on(publisher: Bus, replies: list[s.ToolReply], invocations: list[s.ToolInvocation]) -> Bus:
    """A bus (not started) that collects what travels on the tool's topics, from the start."""

    async def on_reply(event: s.ToolReply) -> None:
        replies.append(event)

    async def on_invocation(event: s.ToolInvocation) -> None:
        invocations.append(event)

    spy = Bus(
        Producer(publisher.bootstrap, "test-spy", **kafka_options(KitSettings(), ADMIN)),
        "test-spy",
        publisher.bootstrap,
        publisher.prefix,
    )
    spy.consume("tools.update_inventory.replies", on_reply, group_id=f"{publisher.prefix}test-spy")
    spy.consume("tools.update_inventory.requests", on_invocation, group_id=f"{publisher.prefix}test-spy-requests")
    return spy


def on_hand(db: Path, tenant: str, sku: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT on_hand FROM stock WHERE tenant = ? AND sku = ?", (tenant, sku)).fetchone()[0])


async def test_an_outside_service_serves_a_topic_tool_exactly_once(
    executor: ServiceProcess, warehouse: Path, publisher: Bus, listener: Any, authorize: Any, tenant: str, wait_for: Any
) -> None:
    take = authorize(tenant, "update_inventory", {"sku": "KB-MECH-01", "delta": -3, "reason": "replacement for T-1005"})
    await publisher.publish("actions.authorized", take)
    [result] = await wait_for(lambda: listener.for_action(take.data.action_id), timeout=30, what="the inventory reply")
    assert result.type == "tidegate.action.succeeded", result.data.error
    assert result.data.result["on_hand"] == 37
    assert result.data.attempts == 1
    assert result.data.cost.usd == pytest.approx(0.0005 + 0.0002)  # catalog price per call + what the service charged
    assert on_hand(warehouse, tenant, "KB-MECH-01") == 37

    # The service itself deduplicates: the executor's invocation delivered again gets the first answer and changes nothing.
    replies: list[s.ToolReply] = []
    invocations: list[s.ToolInvocation] = []
    spy = spy_on(publisher, replies, invocations)
    await spy.start()
    try:
        [invocation] = await wait_for(lambda: invocations, what="the executor's invocation")
        await publisher.publish("tools.update_inventory.requests", invocation)
        await wait_for(lambda: any((r.data.result or {}).get("duplicate") for r in replies), timeout=30, what="the duplicate's answer")
    finally:
        await spy.stop()
    [first, again] = [r for r in replies if r.data.action_id == take.data.action_id]
    assert again.data.result["movement_id"] == first.data.result["movement_id"]
    assert on_hand(warehouse, tenant, "KB-MECH-01") == 37

    too_many = authorize(tenant, "update_inventory", {"sku": "KB-MECH-01", "delta": -1000})
    await publisher.publish("actions.authorized", too_many)
    [refused] = await wait_for(lambda: listener.for_action(too_many.data.action_id), timeout=30, what="the stock refusal")
    assert (refused.type, refused.data.error.type, refused.data.attempts) == ("tidegate.action.failed", "insufficient_stock", 1)
    assert on_hand(warehouse, tenant, "KB-MECH-01") == 37


async def test_a_reply_that_does_not_match_the_pending_invocation_is_dead_lettered_and_never_answers_it(
    executor: ServiceProcess, publisher: Bus, listener: Any, authorize: Any, tenant: str, wait_for: Any, kit: KitSettings
) -> None:
    from aiokafka import AIOKafkaProducer

    invocations: list[s.ToolInvocation] = []
    spy = spy_on(publisher, [], invocations)
    await spy.start()
    attacker = AIOKafkaProducer(
        bootstrap_servers=publisher.bootstrap, **kafka_options(KitSettings(), ADMIN)
    )  # a plain client with write access to the replies topic
    await attacker.start()
    try:
        take = authorize(tenant, "update_inventory", {"sku": "KB-MECH-01", "delta": -3})
        await publisher.publish("actions.authorized", take)
        [invocation] = await wait_for(lambda: invocations, what="the invocation (no service answers it)")
        d = invocation.data
        genuine = {"action_id": d.action_id, "task_id": d.task_id, "tenant_id": d.tenant_id, "tool": d.tool, "attempt": d.attempt}

        async def reply(result: dict[str, Any], **changes: Any) -> None:
            # Signed with the tool's own reply key: a buggy or compromised tool service, not a stranger without it.
            data = s.ToolReplyData(**{**genuine, **changes}, ok=True, result=result)
            event = sign_event(s.ToolReply.build(data, source="attacker"), tool_key(kit, "update_inventory"))
            await attacker.send_and_wait(d.reply_topic, s.encode(event), key=d.task_id.encode())

        await reply({"on_hand": 1}, tenant_id="another-tenant")
        await reply({"on_hand": 2}, tool="wire_money")  # a tool's key signs replies naming that tool only
        await reply({"on_hand": 3}, attempt=7)
        await wait_for(lambda: len(listener.dead_codes(take.data.action_id)) == 3, what="three dead letters")
        assert listener.dead_codes(take.data.action_id) == ["tool_reply_mismatch", "signer_not_allowed", "tool_reply_mismatch"]
        assert listener.for_action(take.data.action_id) == []  # the call still waits for its own reply

        await reply({"on_hand": 37})
        [result] = await wait_for(lambda: listener.for_action(take.data.action_id), what="the result")
        assert (result.type, result.data.result) == ("tidegate.action.succeeded", {"on_hand": 37})
    finally:
        await attacker.stop()
        await spy.stop()


async def test_the_service_runs_only_what_the_executor_asks_for_a_call_the_policy_signed(
    executor: ServiceProcess, warehouse: Path, publisher: Bus, listener: Any, authorize: Any, tenant: str, wait_for: Any, kit: KitSettings
) -> None:
    from aiokafka import AIOKafkaProducer

    replies: list[s.ToolReply] = []
    invocations: list[s.ToolInvocation] = []
    spy = spy_on(publisher, replies, invocations)
    await spy.start()
    attacker = AIOKafkaProducer(bootstrap_servers=publisher.bootstrap, **kafka_options(kit, ADMIN))  # anyone who can write requests
    await attacker.start()
    task = f"t-{uuid.uuid4().hex[:8]}"
    try:
        take = authorize(tenant, "update_inventory", {"sku": "HUB-USBC-7", "delta": -1}, task_id=task)
        await publisher.publish("actions.authorized", take)
        await wait_for(lambda: listener.for_action(take.data.action_id), timeout=30, what="the genuine call's result")
        [genuine] = [i for i in invocations if i.data.action_id == take.data.action_id]
        assert on_hand(warehouse, tenant, "HUB-USBC-7") == 119

        def invocation(action: str, args: dict[str, Any], **data: Any) -> s.ToolInvocation:
            fields = genuine.data.model_dump() | {"action_id": action, "idempotency_key": action, "args": args} | data
            return s.ToolInvocation.build(s.ToolInvocationData(**fields), source="attacker")

        forged = [
            # Unsigned, carrying the genuine call's authorization for another amount.
            invocation("f-1", {"sku": "HUB-USBC-7", "delta": -100}),
            # Unsigned, the genuine call's own authorization, its reply sent elsewhere.
            invocation(genuine.data.action_id + "-again", genuine.data.args, reply_topic=f"{publisher.prefix}tools.stolen.replies"),
            # Signed by a key of the attacker's own that carries the executor's name.
            sign_event(invocation("f-3", {"sku": "HUB-USBC-7", "delta": -100}), SigningKey.load_or_create(kit.keys_dir / "x", "executor")),
            # Signed by the tool's own key (a service may not ask itself), no authorization at all.
            sign_event(invocation("f-4", {"sku": "HUB-USBC-7", "delta": -100}, authorized=None), tool_key(kit, "update_inventory")),
        ]
        for event in forged:
            await attacker.send_and_wait(kit.topic_prefix + "tools.update_inventory.requests", s.encode(event), key=task.encode())
        # A genuine call after them on the same partition: once it is answered, every forgery has been read.
        after = authorize(tenant, "update_inventory", {"sku": "HUB-USBC-7", "delta": -2}, task_id=task)
        await publisher.publish("actions.authorized", after)
        [result] = await wait_for(lambda: listener.for_action(after.data.action_id), timeout=30, what="the call after the forgeries")
        assert result.type == "tidegate.action.succeeded", result.data.error
        assert on_hand(warehouse, tenant, "HUB-USBC-7") == 117  # only the two genuine calls moved stock
        answered = {r.data.action_id for r in replies}
        assert answered == {take.data.action_id, after.data.action_id}
    finally:
        await attacker.stop()
        await spy.stop()


def test_a_login_file_or_a_broker_it_cannot_use_is_one_line_saying_what_to_check(tmp_path: Path) -> None:
    """Connectors probe F14: a copy of the example made elsewhere died in a 20-line traceback, "Unable to bootstrap".

    Its default login file is found next to the checkout: the copy silently had none and tried PLAINTEXT on the SASL
    listener. A --properties that is not there, and a broker it cannot reach or log in to, are each one line.
    """
    base = [sys.executable, str(SERVICE), "--db", str(tmp_path / "i.sqlite3"), "--keys-dir", str(tmp_path / "keys")]
    missing = subprocess.run([*base, "--properties", str(tmp_path / "nope.properties")], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"error: no Kafka login file {tmp_path / 'nope.properties'}: `tidegate infra up` writes tool-update_inventory.properties "
        "in .infra/kafka/credentials/"
    ]
    login = tmp_path / "tool.properties"
    jaas = 'sasl.jaas.config=x username="tool-update_inventory" password="p";'
    login.write_text(f"security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n{jaas}\n")
    closed = subprocess.run([*base, "--bootstrap", "127.0.0.1:1", "--properties", str(login)], capture_output=True, text=True, timeout=120)
    assert closed.returncode == 1
    assert "Traceback" not in closed.stderr
    [said] = [line for line in closed.stderr.splitlines() if line.startswith("error: ")]
    assert said.startswith("error: cannot connect to Kafka at 127.0.0.1:1 as tool-update_inventory: ")
    assert said.endswith("(check --bootstrap and --properties)")
