"""Control on the real broker: kill switch on and off without restart, policy hot reload, budget exhaustion and release."""

from __future__ import annotations

import time
from pathlib import Path

import asyncpg
import yaml
from signers import as_operator

from schemas import ActionFailed, ActionResultData
from servicekit import ADMIN, kafka_options
from services.policy.pack import PackSource
from tidegate.commands.killswitch import publish_killswitch, read_control
from tidegate.commands.policy import publish_pack

REFUND = {"payee_id": "cus_1001", "amount_usd": 150.0, "order_id": "O-7"}


async def test_kill_switch_on_and_off_without_restart(policy, collector, producer, kit, wait_for, one, make_proposal) -> None:
    before = make_proposal("tag_ticket", {"ticket_id": "T-1", "tags": ["a"]})
    await producer.send("actions.proposed", before)
    assert (await wait_for(lambda: one(collector.decided(before.data.action_id)))).data.outcome == "allow"

    started = time.monotonic()
    await publish_killswitch(kit, tenant="acme", tool="tag_ticket", active=True, reason="incident 42", set_by="oncall")
    await wait_for(lambda: policy.policy.control.killed("acme", "tag_ticket"), timeout=5, what="kill switch applied")
    assert time.monotonic() - started < 1.0, "kill switch took more than a second"
    killed = make_proposal("tag_ticket", {"ticket_id": "T-1", "tags": ["b"]})
    other_tool = make_proposal("add_internal_note", {"ticket_id": "T-1", "note": "n"})
    other_tenant = make_proposal("tag_ticket", {"ticket_id": "T-1", "tags": ["c"]}, tenant="globex", mode="draft")
    for p in (killed, other_tool, other_tenant):
        await producer.send("actions.proposed", p)
    d = await wait_for(lambda: one(collector.decided(killed.data.action_id)))
    assert d.data.outcome == "deny"
    assert [r.code.value for r in d.data.reasons] == ["kill_switch"]
    assert "incident 42" in d.data.reasons[0].message
    assert (await wait_for(lambda: one(collector.decided(other_tool.data.action_id)))).data.outcome == "allow"
    assert (await wait_for(lambda: one(collector.decided(other_tenant.data.action_id)))).data.outcome == "escalate"
    listed = await read_control(kit)
    assert set(listed.killswitches) == {("acme", "tag_ticket")}

    started = time.monotonic()
    await publish_killswitch(kit, tenant="acme", tool="tag_ticket", active=False, reason="fixed", set_by="oncall")
    await wait_for(lambda: policy.policy.control.killed("acme", "tag_ticket") is None, timeout=5, what="kill switch cleared")
    assert time.monotonic() - started < 1.0, "clearing took more than a second"
    after = make_proposal("tag_ticket", {"ticket_id": "T-1", "tags": ["d"]})
    await producer.send("actions.proposed", after)
    assert (await wait_for(lambda: one(collector.decided(after.data.action_id)))).data.outcome == "allow"
    assert (await read_control(kit)).killswitches == {}


async def test_policy_hot_reload_by_publish(policy, collector, producer, kit, wait_for, one, make_proposal, tmp_path: Path) -> None:
    old_version = policy.policy.pack.version
    first = make_proposal("issue_refund", REFUND)
    await producer.send("actions.proposed", first)
    d1 = await wait_for(lambda: one(collector.decided(first.data.action_id)))
    assert (d1.data.outcome, d1.data.policy_version) == ("allow", old_version)

    # A new pack version: acme's threshold drops to 100 USD.
    source = PackSource.from_dir(kit.policy_dir)
    settings = yaml.safe_load(yaml.safe_dump(source.settings))
    settings["tenants"]["acme"]["refund_threshold_usd"] = 100
    new = PackSource(files=source.files, settings=settings)
    assert new.version != old_version
    await publish_pack(kit, new, "security@acme.example")
    await wait_for(lambda: policy.policy.pack.version == new.version, timeout=5, what="new pack in use")

    second = make_proposal("issue_refund", REFUND)
    await producer.send("actions.proposed", second)
    d2 = await wait_for(lambda: one(collector.decided(second.data.action_id)))
    assert (d2.data.outcome, d2.data.policy_version) == ("escalate", new.version)
    assert [r.code.value for r in d2.data.reasons] == ["needs_human_approval"]

    # A broken pack is refused: the service keeps deciding with the last good version.
    broken = PackSource(files={"bad.cedar": "permit(principal, action, resource) when { context.nope };"}, settings=settings)
    await publish_pack(kit, broken, "mallory")
    await wait_for(
        lambda: policy.policy.control.policy is not None and policy.policy.control.policy.version == broken.version, what="broken pack seen"
    )
    third = make_proposal("issue_refund", REFUND)
    await producer.send("actions.proposed", third)
    d3 = await wait_for(lambda: one(collector.decided(third.data.action_id)))
    assert (d3.data.outcome, d3.data.policy_version) == ("escalate", new.version)


async def test_budget_exhaustion_and_release(policy, collector, producer, kit, wait_for, one, make_proposal) -> None:
    # Each refund reserves the tool's 0.01 USD; the task may spend 0.025.
    task = "t-budget-" + make_proposal("get_ticket", {}).data.action_id
    props = [make_proposal("issue_refund", REFUND | {"order_id": f"O-{i}"}, task_id=task, budget_usd=0.025) for i in range(3)]
    decided = []
    for p in props:  # one at a time, as a planner proposes
        await producer.send("actions.proposed", p)
        decided.append(await wait_for(lambda p=p: one(collector.decided(p.data.action_id))))
    assert [d.data.outcome for d in decided] == ["allow", "allow", "deny"]
    assert [r.code.value for r in decided[2].data.reasons] == ["budget_exceeded"]
    assert decided[2].data.facts["spend_task_usd"] == 0.02

    # The first call fails: its reservation is released and the budget has room again.
    failed = ActionFailed.build(
        ActionResultData(
            action_id=props[0].data.action_id,
            task_id=task,
            tenant_id="acme",
            tool="issue_refund",
            status="failed",
            attempts=1,
            duration_ms=3.0,
        ),
        source="tidegate/executor",
    )
    await producer.send("actions.results", failed)
    conn = await asyncpg.connect(kit.database_url)
    try:

        async def released() -> bool:
            spend = await conn.fetchval("SELECT amount_usd FROM policy.spend WHERE tenant_id = 'acme' AND task_id = $1", task)
            return float(spend) == 0.01

        await wait_for(released, what="reservation released")
    finally:
        await conn.close()
    retry = make_proposal("issue_refund", REFUND | {"order_id": "O-9"}, task_id=task, budget_usd=0.025)
    await producer.send("actions.proposed", retry)
    d = await wait_for(lambda: one(collector.decided(retry.data.action_id)), what="decision after release")
    assert d.data.outcome == "allow", d.data.reasons


async def test_a_kill_switch_set_while_the_policy_service_was_down_holds_for_its_backlog(
    collector, producer, kit, wait_for, one, make_proposal
) -> None:
    import asyncio

    from aiokafka import AIOKafkaProducer

    from schemas import ControlKillswitch, ControlKillswitchData, encode
    from services.policy.app import build

    # Other tenants' records first, so that reading `control` to its end takes the service a while.
    noise = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, linger_ms=20, max_batch_size=1 << 20, **kafka_options(kit, ADMIN))
    await noise.start()
    try:
        sent = []
        for n in range(20_000):
            data = ControlKillswitchData(tenant_id=f"other-{n}", tool="get_ticket", active=True, reason="noise", set_by="ops")
            value = encode(as_operator(ControlKillswitch.build(data, source="tidegate/cli"), kit))
            sent.append(await noise.send(f"{kit.topic_prefix}control", value, key=f"killswitch:other-{n}:get_ticket".encode()))
        await asyncio.gather(*sent)
    finally:
        await noise.stop()
    await publish_killswitch(kit, tenant="acme", tool="tag_ticket", active=True, reason="incident 43", set_by="oncall")
    backlog = [make_proposal("tag_ticket", {"ticket_id": "T-1", "tags": [f"t{n}"]}) for n in range(20)]
    for p in backlog:
        await producer.send("actions.proposed", p)

    policy = build(kit=kit)
    await policy.start()
    try:
        for p in backlog:
            d = await wait_for(lambda a=p.data.action_id: one(collector.decided(a)), what="each decision")
            assert (d.data.outcome, [r.code.value for r in d.data.reasons]) == ("deny", ["kill_switch"])
        assert all(collector.authorized(p.data.action_id) == [] for p in backlog)
    finally:
        await policy.stop()
