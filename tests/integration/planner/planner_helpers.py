"""Helpers of the planner's integration tests: a collector, a producer, and a stand-in for policy + executor."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from bus_helpers import Producer

from schemas import (
    ActionDecided,
    ActionDecidedData,
    ActionResultData,
    ActionSucceeded,
    Reason,
    ResultCost,
    decode,
)
from servicekit import ADMIN, KitSettings, kafka_options


def decided(p: Any, outcome: str, *codes: str, via: str = "policy", approval_id: str | None = None) -> ActionDecided:
    data = ActionDecidedData(
        action_id=p.action_id,
        task_id=p.task_id,
        tenant_id=p.tenant_id,
        step=p.step,
        tool=p.tool,
        args=p.args,
        action_digest="d",
        outcome=outcome,
        reasons=[Reason(code=c, policy_id="test", message=c) for c in codes],
        policy_version="test",
        latency_ms=1.0,
        via=via,
        approval_id=approval_id,
    )
    return ActionDecided.build(data, source="tests/policy-standin")


def succeeded(p: Any, usd: float = 0.0002) -> ActionSucceeded:
    data = ActionResultData(
        action_id=p.action_id,
        task_id=p.task_id,
        tenant_id=p.tenant_id,
        step=p.step,
        tool=p.tool,
        status="succeeded",
        result={"ok": True},
        attempts=1,
        duration_ms=2.0,
        cost=ResultCost(usd=usd),
        idempotency_key=p.action_id,
    )
    return ActionSucceeded.build(data, source="tests/executor-standin")


Policy = Callable[[Any], tuple[str, str]]


class StandIn:
    """Plays policy and executor: decides each proposal with `policy` and, when allowed, reports success."""

    def __init__(self, kit: KitSettings, producer: Producer, policy: Policy) -> None:
        self.kit = kit
        self.producer = producer
        self.policy = policy
        self.seen: list[Any] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            self.kit.topic_prefix + "actions.proposed",
            bootstrap_servers=self.kit.kafka_bootstrap,
            **kafka_options(self.kit, ADMIN),
            auto_offset_reset="earliest",
            group_id=f"standin-{uuid.uuid4().hex[:8]}",
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        async for record in self._consumer:
            p = decode("actions.proposed", record.value).data
            self.seen.append(p)
            outcome, code = self.policy(p)
            await self.producer.send("actions.decided", decided(p, outcome, code))
            if outcome == "allow":
                await self.producer.send("actions.results", succeeded(p))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
