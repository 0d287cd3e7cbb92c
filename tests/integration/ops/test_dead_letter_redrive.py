"""The on-call redrives dead letters on the real broker and database: `tidegate dead-letters list|redrive`.

Before, a dead letter could only be read (`tidegate audit search --dead-letters`): a proposal the policy failed on
(a bug, since fixed) stayed undecided for good unless its agent proposed again. Now the on-call sends the original
record again, as the bus held it; the consumer checks it as any record, so a redrive grants no authority.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from bus_helpers import Collector, Producer
from redrive_helpers import audit_service, cli_env, dead_letters, listed
from signers import as_client
from typer.testing import CliRunner

import schemas as s
from servicekit import KitSettings, ServiceProcess, SigningKey, kafka_options, operator_key, sign_event
from services.policy.app import build as build_policy
from services.policy.service import PolicyService
from tidegate.cli import app as cli

pytestmark = pytest.mark.timeout(240)

BUG = "T-9"  # the tickets whose ids the policy's "bug" fails on, while it is there


def proposal(ticket: str) -> s.ActionProposed:
    data = s.ActionProposedData(
        action_id=f"a-{uuid.uuid4().hex[:10]}", task_id=f"t-{uuid.uuid4().hex[:8]}", tenant_id="acme", step=1, tool="get_ticket",
        args={"ticket_id": ticket}, rationale="redrive test", proposer="tests/redrive", cost=s.ProposalCost(usd=0.0),
        mode="autonomous", requested_by="alice@acme.example",
    )  # fmt: skip
    return s.ActionProposed.build(data, source="tests/redrive")


@pytest.fixture
async def stack(kit: KitSettings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dict[str, Any]]:
    """The policy (with a bug that fails any proposal for a `T-9…` ticket while `bug["on"]`), the audit, a collector."""
    bug = {"on": True}
    real_one, real_batch = PolicyService.on_proposed, PolicyService.on_proposed_batch

    def buggy(event: s.ActionProposed) -> None:
        if bug["on"] and str(event.data.args.get("ticket_id", "")).startswith(BUG):
            raise ValueError("a bug: the ticket id's prefix is not understood")

    async def on_proposed(self: PolicyService, event: s.ActionProposed) -> None:
        buggy(event)
        await real_one(self, event)

    async def on_proposed_batch(self: PolicyService, events: list[s.ActionProposed]) -> None:
        for e in events:
            buggy(e)
        await real_batch(self, events)

    monkeypatch.setattr(PolicyService, "on_proposed", on_proposed)
    monkeypatch.setattr(PolicyService, "on_proposed_batch", on_proposed_batch)
    operator_key(kit)  # the on-call's key, on file before the services start
    policy: ServiceProcess = build_policy(kit=kit)
    audit = audit_service(kit)
    collector = Collector(kit, ["actions.decided", "deadletter", "control"])
    producer = Producer(kit)
    for part in (collector, producer, audit, policy):
        await part.start()
    try:
        yield {"bug": bug, "collector": collector, "producer": producer}
    finally:
        for part in (policy, audit, producer, collector):
            await part.stop()


async def test_a_proposal_the_policy_failed_on_is_decided_once_redriven_after_the_fix(
    kit: KitSettings, stack: dict[str, Any], wait_for: Any
) -> None:
    collector: Collector = stack["collector"]
    bad = proposal(BUG + "1001")
    await stack["producer"].send("actions.proposed", bad)
    [dead] = await listed(kit, wait_for, bad.data.task_id)
    assert (dead["service"], dead["code"], dead["topic"], dead["redrivable"]) == ("policy", "handler_error", "actions.proposed", True)
    assert collector.decided(bad.data.action_id) == []  # dead-lettered: nothing decided it

    dry = await dead_letters(kit, "redrive", dead["id"][:12], "--reason", "INC-1: fix deployed", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"would send {dead['id']} (handler_error, by policy" in " ".join(dry.stdout.split())
    assert f"to {kit.topic_prefix}actions.proposed as `agent`" in " ".join(dry.stdout.split())
    await asyncio.sleep(2)
    assert collector.decided(bad.data.action_id) == []  # a dry run sends nothing

    stack["bug"]["on"] = False  # the fix is deployed
    result = await dead_letters(kit, "redrive", dead["id"], "--reason", "INC-1: fix deployed", "--yes")
    assert result.exit_code == 0, result.output
    assert "1 record(s) sent again" in result.stdout
    decided = await wait_for(lambda: collector.decided(bad.data.action_id) or None, timeout=60, what="the redriven proposal decided")
    assert decided[0].data.outcome == "allow"

    # The redrive is recorded, signed by the on-call's key, and the list says so.
    [record] = await wait_for(
        lambda: [e for e in collector.events["control"] if isinstance(e, s.ControlRedrive)] or None, what="the redrive's record"
    )
    assert (record.data.dead_letter_id, record.data.set_by, record.data.reason) == (dead["id"], "operator", "INC-1: fix deployed")
    assert (record.keyid or "").startswith("operator-")
    assert record.signature

    async def shown_redriven() -> dict[str, Any] | None:
        [again] = await listed(kit, wait_for, bad.data.task_id)
        return again if again["redriven"] else None

    again = await wait_for(shown_redriven, timeout=60, what="the dead letter shown redriven")
    assert again["redriven"][0]["by"] == "operator"  # and it stays listed: the dead letter is kept
    searched = await asyncio.to_thread(
        CliRunner().invoke, cli, ["audit", "search", "--type", "control.redrive", "--json"], env=cli_env(kit)
    )
    assert searched.exit_code == 0, searched.output
    [line] = [json.loads(x) for x in searched.stdout.splitlines()]
    assert f"dead letter {dead['id']} (handler_error, by policy) redriven by operator" in line["summary"]
    assert line["unverified"] is None  # the record verifies: signed by the operator's key

    # Twice: refused unless asked; asked, the policy answers with the decision it recorded, and decides nothing new.
    twice = await dead_letters(kit, "redrive", dead["id"], "--reason", "again", "--yes")
    assert twice.exit_code == 1
    assert "already redriven by operator" in " ".join(twice.output.split())
    forced = await dead_letters(kit, "redrive", dead["id"], "--reason", "again", "--yes", "--again")
    assert forced.exit_code == 0, forced.output
    both = await wait_for(
        lambda: (lambda d: d if len(d) == 2 else None)(collector.decided(bad.data.action_id)), what="the decision republished"
    )
    assert {d.id for d in both} == {decided[0].id}  # the same decision, not a second one
    records = [e for e in collector.events["control"] if isinstance(e, s.ControlRedrive)]
    assert len(records) == 2
    refused = [e.data for e in collector.events["deadletter"] if e.data.topic == kit.topic_prefix + "control"]
    assert refused == []  # the services accept the redrive records (and keep no state from them)


async def test_a_forged_record_redriven_is_refused_again_and_takes_no_effect(
    kit: KitSettings, stack: dict[str, Any], wait_for: Any, tmp_path: Path
) -> None:
    """The attacker holds the redrive's rights (the `agent` login, an operator key) and a proposal signed with a key of its own."""
    collector: Collector = stack["collector"]
    forged = proposal("T-1001")
    forged = sign_event(forged, SigningKey.load_or_create(tmp_path / "mallory", "mallory"))
    await stack["producer"].send("actions.proposed", forged)
    [dead] = await listed(kit, wait_for, forged.data.task_id)
    assert dead["code"] == "unknown_key"
    assert dead["redrivable"] is False
    assert "--allow-unknown-key" in dead["why_not"]

    refused = await dead_letters(kit, "redrive", dead["id"], "--reason", "trust me", "--yes")
    assert refused.exit_code == 1
    # The override asked while the key is still on no file: the CLI checks as the consumers would, and sends nothing.
    still = await dead_letters(kit, "redrive", dead["id"], "--reason", "trust me", "--yes", "--allow-unknown-key")
    assert still.exit_code == 1
    assert "every consumer would refuse it again now (unknown_key" in " ".join(still.output.split())

    # The attacker sends the original bytes itself, with the login a redrive of this topic uses: refused again, as the first time.
    agent = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, acks="all", **kafka_options(kit, "agent"))
    await agent.start()
    try:
        await agent.send_and_wait(kit.topic_prefix + "actions.proposed", s.encode(forged), key=forged.key)
    finally:
        await agent.stop()
    both = await listed(kit, wait_for, forged.data.task_id, count=2)
    assert [d["code"] for d in both] == ["unknown_key", "unknown_key"]
    await asyncio.sleep(2)
    assert collector.decided(forged.data.action_id) == []
    assert [e for e in collector.events["control"] if isinstance(e, s.ControlRedrive)] == []  # the CLI sent nothing


async def test_a_proposal_signed_by_a_key_distributed_late_is_decided_once_redriven_with_the_override(
    kit: KitSettings, stack: dict[str, Any], wait_for: Any, tmp_path: Path
) -> None:
    """Alice's client key reached the deployment after her proposal did: `unknown_key`, then redriven and decided."""
    collector: Collector = stack["collector"]
    late = tmp_path / "alice-machine"
    key = SigningKey.load_or_create(late / "acme", "alice@acme.example", late / "private")
    early = sign_event(proposal("T-1001"), key)
    await stack["producer"].send("actions.proposed", early)
    [dead] = await listed(kit, wait_for, early.data.task_id)
    assert dead["code"] == "unknown_key"

    (kit.client_keys_dir / "acme").mkdir(parents=True, exist_ok=True)
    shutil.copy(late / "acme" / "alice@acme.example.pub", kit.client_keys_dir / "acme" / "alice@acme.example.pub")  # distributed
    result = await dead_letters(kit, "redrive", dead["id"], "--reason", "alice's key installed", "--yes", "--allow-unknown-key")
    assert result.exit_code == 0, result.output
    decided = await wait_for(lambda: collector.decided(early.data.action_id) or None, timeout=60, what="the late-signed proposal decided")
    assert decided[0].data.outcome == "allow"


async def test_a_refusal_for_authority_is_never_redriven(kit: KitSettings, stack: dict[str, Any], wait_for: Any) -> None:
    collector: Collector = stack["collector"]
    genuine = as_client(proposal("T-1001"), kit)
    tampered = genuine.model_copy(update={"data": genuine.data.model_copy(update={"args": {"ticket_id": "T-6666"}})})
    await stack["producer"].send("actions.proposed", tampered)
    [dead] = await listed(kit, wait_for, tampered.data.task_id)
    assert dead["code"] == "signature_invalid"

    for args in ([dead["id"]], ["--code", "signature_invalid"], [dead["id"], "--allow-unknown-key", "--again"]):
        result = await dead_letters(kit, "redrive", *args, "--reason", "please", "--yes")
        assert result.exit_code == 1
        text = " ".join(result.output.split())
        assert "signature_invalid is a refusal for authority" in text
        assert "nothing sent" in text
    await asyncio.sleep(3)
    assert [e for e in collector.events["control"] if isinstance(e, s.ControlRedrive)] == []  # no redrive recorded
    assert len(collector.rejected(tampered.data.action_id)) == 1  # nothing was sent to be refused again
    assert collector.decided(tampered.data.action_id) == []


async def test_a_dead_letter_forged_into_the_database_is_not_redriven(infra: Any, prefix: str, tmp_path: Path) -> None:
    """The attacker can write the audit database (the audit's login): a dead letter of a genuine proposal, `handler_error`.

    No service signed it: redriven, it would replay a genuine record on the attacker's say. The CLI checks each dead
    letter's row from its own value, as `audit verify --signatures` does, and refuses it; nothing is sent.
    """
    from servicekit import apply_migrations
    from services.audit import PostgresAuditLog, observe
    from services.audit.app import MIGRATIONS

    kit = KitSettings(database_url=infra.database_url, topic_prefix=prefix, keys_dir=tmp_path / "keys", kafka_bootstrap="127.0.0.1:1")
    genuine = as_client(proposal("T-1001"), kit)
    value = s.encode(genuine)
    forged = s.EventRejected.build(
        s.EventRejectedData(
            tenant_id="acme", task_id=genuine.data.task_id, topic=prefix + "actions.proposed", partition=0, offset=0,
            raw_value=value.decode(), size=len(value), sha256=hashlib.sha256(value).hexdigest(), code="handler_error",
            error="boom", service="policy",
        ),
        source="tidegate/policy",
    )  # fmt: skip
    log = await PostgresAuditLog.connect(kit.database_url)
    try:
        await apply_migrations(log.pool, "audit", MIGRATIONS)
        await log.append(
            [
                observe(topic=prefix + topic, partition=0, offset=0, timestamp_ms=1_790_000_000_000, timestamp_type=1,
                        key=genuine.key, value=s.encode(event), headers=[], prefix=prefix)
                for topic, event in (("actions.proposed", genuine), ("deadletter", forged))
            ]
        )  # fmt: skip
    finally:
        await log.close()
    result = await dead_letters(kit, "redrive", forged.id, "--reason", "looks fine", "--yes")
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "its row does not verify" in text
    assert "nothing sent" in text


async def test_dead_letters_a_stolen_executor_login_writes_in_its_own_name_are_not_shown_as_refusals_nor_redriven(
    kit: KitSettings, stack: dict[str, Any], wait_for: Any
) -> None:
    """deadprov (bindattack B6): the executor's Kafka login and key, on the real broker; the real audit service reads them.

    Signed with the executor's key and naming the executor (as its key must), they lie about the record: one of the
    policy's proposals (a topic the executor never reads), one of globex's records filed under acme. Before, the audit kept
    both as valid and `dead-letters list` showed them as the executor's refusals, `redrivable`.
    """
    from prometheus_client import REGISTRY

    from servicekit import service_key

    def invalid_count() -> float:
        labels = {"topic": kit.topic_prefix + "deadletter", "reason": "signer_not_allowed", "dead_lettered": "false"}
        return REGISTRY.get_sample_value("tidegate_audit_invalid_records_total", labels) or 0.0

    before = invalid_count()
    task = f"t-{uuid.uuid4().hex[:8]}"
    theirs = proposal("T-1001").model_copy(update={"tenantid": "globex"})
    theirs = theirs.model_copy(update={"data": theirs.data.model_copy(update={"tenant_id": "globex", "task_id": task})})
    ours = proposal("T-1002")
    ours = ours.model_copy(update={"data": ours.data.model_copy(update={"task_id": task})})
    forged = []
    for topic, record, tenant in (("actions.proposed", ours, "acme"), ("actions.authorized", theirs, "acme")):
        raw = s.encode(record)
        data = s.EventRejectedData(
            tenant_id=tenant, task_id=task, topic=kit.topic_prefix + topic, partition=0, offset=0, key=task, raw_value=raw.decode(),
            size=len(raw), sha256=hashlib.sha256(raw).hexdigest(), code="handler_error", error="lost: call the on-call", service="executor",
        )  # fmt: skip
        forged.append(sign_event(s.EventRejected.build(data, source="tidegate/executor"), service_key(kit, "executor")))
    thief = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, acks="all", **kafka_options(kit, "executor"))
    await thief.start()
    try:
        for event in forged:  # the broker lets the executor's login write `deadletter`
            await thief.send_and_wait(kit.topic_prefix + "deadletter", s.encode(event), key=task.encode())
    finally:
        await thief.stop()

    shown = await listed(kit, wait_for, task, count=2)
    assert {d["id"] for d in shown} == {e.id for e in forged}
    for d in shown:
        assert d["shown_as"] == "not verified (names executor)"
        assert d["redrivable"] is False
        assert d["unverified"].startswith("signer_not_allowed")
    assert invalid_count() - before == 2  # counted where nothing else counts it (`TidegateInvalidRecords`)

    result = await dead_letters(kit, "redrive", *(e.id for e in forged), "--reason", "the executor lost them", "--yes")
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "its row does not verify" in text
    assert "not a dead letter executor wrote" in text
    searched = await asyncio.to_thread(
        CliRunner().invoke, cli, ["audit", "search", "--dead-letters", "--task", task, "--json"], env=cli_env(kit)
    )
    assert searched.exit_code == 0, searched.output
    lines = [json.loads(line) for line in searched.stdout.splitlines()]
    assert len(lines) == 2
    assert all(line["valid"] is False and line["dead_letter"] is None for line in lines)


async def _logged(kit: KitSettings, wait_for: Any, topic: str, action_id: str) -> Any:
    """The audit log's row of the record of `action_id` on `topic` (catalog name), once the audit holds it."""
    import asyncpg

    conn = await asyncpg.connect(kit.database_url)
    try:
        query = "SELECT partition, kafka_offset, value FROM audit.log WHERE topic = $1 AND action_id = $2 AND NOT duplicate"
        return await wait_for(lambda: conn.fetchrow(query, kit.topic_prefix + topic, action_id), timeout=60, what=f"{topic} logged")
    finally:
        await conn.close()


async def _succeeded(stack: dict[str, Any], d: s.ActionProposedData) -> None:
    """The executor's success of the proposed call `d`."""
    done = s.ActionResultData(
        action_id=d.action_id, task_id=d.task_id, tenant_id=d.tenant_id, step=d.step, tool=d.tool, status="succeeded",
        attempts=1, duration_ms=12.0, idempotency_key=d.action_id,
    )  # fmt: skip
    await stack["producer"].send("actions.results", s.ActionSucceeded.build(done, source="tidegate/executor"))


async def _dead_letter_as(
    kit: KitSettings, service: str, topic: str, row: Any, d: s.ActionProposedData, error: str, code: str = "handler_error"
) -> s.EventRejected:
    """A dead letter of the record at `row` (of `topic`) with `service`'s Kafka login and key, its bytes whole (`code`: its reason)."""
    from servicekit import service_key

    raw: bytes = row["value"]
    rejected = s.EventRejectedData(
        tenant_id=d.tenant_id, task_id=d.task_id, topic=kit.topic_prefix + topic, partition=row["partition"],
        offset=row["kafka_offset"], key=d.task_id, raw_value=raw.decode(), size=len(raw), sha256=hashlib.sha256(raw).hexdigest(),
        code=code, error=error, service=service,
    )  # fmt: skip
    letter = sign_event(s.EventRejected.build(rejected, source=f"tidegate/{service}"), service_key(kit, service))
    producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, acks="all", **kafka_options(kit, service))
    await producer.start()
    try:
        await producer.send_and_wait(kit.topic_prefix + "deadletter", s.encode(letter), key=d.task_id.encode())
    finally:
        await producer.stop()
    return letter


async def test_a_dead_letter_the_executors_login_writes_of_an_authorization_it_ran_is_not_shown_redrivable(
    kit: KitSettings, stack: dict[str, Any], wait_for: Any
) -> None:
    """attacker3 F3: the executor's stolen Kafka login and key say the executor refused an authorization it ran and succeeded on.

    The dead letter holds to everything the executor's key may say (it names the executor, a topic the executor reads, the
    record's own tenant and task, its bytes whole): the audit keeps it as valid. Before, `dead-letters list` showed it as the
    executor's refusal, `redrivable`, and the on-call, told the refund was never made, would make it again. The list now
    says the call succeeded, by the executor's own signed result, and the redrive sends nothing.
    """
    asked = proposal("T-2001")  # a read the policy allows at once: it publishes the authorization
    await stack["producer"].send("actions.proposed", asked)
    d = asked.data
    row = await _logged(kit, wait_for, "actions.authorized", d.action_id)
    await _succeeded(stack, d)  # it ran
    await _logged(kit, wait_for, "actions.results", d.action_id)
    forged = await _dead_letter_as(
        kit, "executor", "actions.authorized", row, d, "the executor refused this authorization: the call was never made, send it again"
    )

    [dead] = await listed(kit, wait_for, d.task_id)
    assert dead["id"] == forged.id
    assert dead["unverified"] is None  # all the executor's key may say: the audit cannot tell it a lie
    assert dead["redrivable"] is False, "shown as a refusal the on-call should send again"
    assert f"action {d.action_id} succeeded" in dead["why_not"]
    assert dead["ran"] == dead["why_not"].split(": its record was handled")[0]
    result = await dead_letters(kit, "redrive", forged.id, "--reason", "the executor lost it", "--yes")
    assert result.exit_code == 1, result.output
    assert f"action {d.action_id} succeeded" in " ".join(result.output.split())


async def test_a_result_the_planner_failed_on_is_redrivable_though_the_action_succeeded(
    kit: KitSettings, stack: dict[str, Any], wait_for: Any
) -> None:
    """review62: the planner dead-lettered the executor's success on a handler error; the on-call sends it again once fixed.

    The record is the success itself, so the search for the action's success found that very record: `list` showed the
    dead letter "action … succeeded: its record was handled", and `redrive` refused it, while the planner had not handled
    it (the task's next step, and the policy's count of what a payee was paid, wait on such a redrive).
    """
    d = proposal("T-2002").data
    await _succeeded(stack, d)
    row = await _logged(kit, wait_for, "actions.results", d.action_id)
    letter = await _dead_letter_as(kit, "planner", "actions.results", row, d, "ValueError: a bug in the planner's step after a result")

    [dead] = await listed(kit, wait_for, d.task_id)
    assert dead["id"] == letter.id
    assert dead["ran"] is None, "the success it carries was taken for a sign that the planner had handled it"
    assert dead["redrivable"] is True, dead["why_not"]
    result = await dead_letters(kit, "redrive", letter.id, "--reason", "the planner's bug is fixed", "--yes")
    assert result.exit_code == 0, result.output


async def test_an_expired_authorization_the_planner_proposed_again_is_listed_with_its_new_action_and_nothing_to_do(
    kit: KitSettings, stack: dict[str, Any], wait_for: Any
) -> None:
    """oncall F3, through `dead-letters list` on the real broker and audit log (review63: only `proposed_again_of` was tested).

    The executor was down longer than the authorizations live: at its start it refused one `authorization_expired`, and
    the planner proposed it again (`repeats`). The on-call's list must name the new action and say there is nothing to
    do; the list reads the task's proposals once (3ae261af), so another expired one of the same task is told the same way.
    """
    asked = proposal("T-2003")  # allowed at once: the policy publishes its authorization
    await stack["producer"].send("actions.proposed", asked)
    d = asked.data
    row = await _logged(kit, wait_for, "actions.authorized", d.action_id)
    expired = "authorization expired at 2026-12-07T10:14:35Z, before the executor read it (0 attempts)"
    letter = await _dead_letter_as(kit, "executor", "actions.authorized", row, d, expired, code="authorization_expired")
    again = d.model_copy(update={"action_id": f"a-{uuid.uuid4().hex[:10]}", "repeats": d.action_id, "proposer": "planner"})
    await stack["producer"].send("actions.proposed", s.ActionProposed.build(again, source="tidegate/planner"))
    await _logged(kit, wait_for, "actions.proposed", again.action_id)

    [dead] = await listed(kit, wait_for, d.task_id)
    assert dead["id"] == letter.id
    assert dead["unverified"] is None
    assert dead["proposed_again"] is not None, "told to propose again what the planner had proposed again"
    assert f"the planner proposed it again as action {again.action_id}" in dead["proposed_again"]
    assert dead["why_not"].endswith(f"{dead['proposed_again']}: nothing to do")
    assert dead["redrivable"] is False
    text = await dead_letters(kit, "list", "--code", "authorization_expired")
    assert text.exit_code == 0, text.output
    shown = " ".join(text.output.split())
    assert again.action_id in shown  # folded, never cut
    assert "nothing to do" in shown
    assert "ask for a new decision (propose again)" not in shown
