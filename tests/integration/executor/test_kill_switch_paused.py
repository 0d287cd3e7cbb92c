"""A kill switch set while the executor process is paused (not restarted) holds for what was queued meanwhile.

The on-call pulls the switch because calls are going wrong; an executor that was frozen, starved or stalled at that
moment (SIGSTOP here) resumes with the authorizations queued meanwhile in one consumer and the switch in another. It
read `control` to its end only at start, so whichever consumer came first won: refunds ran seconds after the switch
was on the bus and listed by `tidegate killswitch list` (the on-call probe: three of three in one run). It now reads
`control` to its end before a call when its last read is older than half a second.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from signers import as_operator

import schemas as s
from servicekit import ADMIN, Bus, kafka_options

NOISE = 5_000  # other tenants' control records set in the same moment: the executor's control consumer has them to read first
REFUND = {"payee_id": "cus_1001", "amount_usd": 10.0, "order_id": "O-5001"}


async def test_a_switch_set_while_the_executor_was_paused_stops_the_calls_queued_meanwhile(
    kit: Any, spawn_executor: Any, publisher: Bus, listener: Any, authorize: Any, pool: asyncpg.Pool, tenant: str, wait_for: Any
) -> None:
    executor = await spawn_executor()
    warm = authorize(tenant, "tag_ticket", {"ticket_id": "T-1001", "tags": ["warm"]})
    await publisher.publish("actions.authorized", warm)
    await wait_for(lambda: listener.for_action(warm.data.action_id), what="the executor's first call")
    executor.proc.send_signal(signal.SIGSTOP)  # a pause shorter than its consumers' session: no rebalance, the same process resumes
    try:
        queued = [authorize(tenant, "issue_refund", {**REFUND, "amount_usd": 1.0 + n}) for n in range(3)]
        for event in queued:  # authorized before the on-call acts
            await publisher.publish("actions.authorized", event)
        noise = AIOKafkaProducer(bootstrap_servers=publisher.bootstrap, linger_ms=20, **kafka_options(kit, ADMIN))
        await noise.start()
        try:
            switches = [
                s.ControlKillswitchData(tenant_id=f"other-{n}", tool="tag_ticket", active=True, reason="noise", set_by="ops")
                for n in range(NOISE)
            ]
            sent = [
                await noise.send(
                    publisher.topic("control"),
                    s.encode(as_operator(s.ControlKillswitch.build(data, source="tidegate/cli"), kit)),
                    key=f"killswitch:{data.tenant_id}:tag_ticket".encode(),
                )
                for data in switches
            ]
            await asyncio.gather(*sent)
        finally:
            await noise.stop()
        switch = s.ControlKillswitchData(
            tenant_id=tenant, tool="issue_refund", active=True, reason="refund wave", set_by="oncall@acme.example"
        )
        await publisher.publish("control", s.ControlKillswitch.build(switch, source="tidegate/cli"))
        await asyncio.sleep(2)
    finally:
        executor.proc.send_signal(signal.SIGCONT)
    for event in queued:
        [result] = await wait_for(lambda e=event: listener.for_action(e.data.action_id), what="each queued refund's end")
        error = result.data.error.type if result.data.error is not None else None
        assert (result.type, error, result.data.attempts) == ("tidegate.action.failed", "kill_switch", 0)
    assert await pool.fetch("SELECT 1 FROM payments.refunds WHERE tenant_id = $1", tenant) == []
