"""A tool that answers more than the bus carries: the claim keeps the whole result, the event a stand-in, and nothing stalls."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

import schemas as s
from servicekit import Bus, KitSettings, ServiceProcess
from services.executor.app import build
from services.executor.settings import DEFAULT_MAX_RESULT_BYTES
from tests.integration.executor.test_http_tools import LABEL, label_tool, secret_env

BIG = {"rows": [{"i": i, "text": "x" * 100} for i in range(20_000)]}  # ~2.3 MB of JSON: over the producer's and consumers' 1 MiB


@pytest.fixture
async def executors() -> AsyncIterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    yield started
    for svc in started:
        await svc.stop()


async def test_a_2_mb_answer_is_kept_whole_and_its_result_event_carries_a_stand_in_without_stalling_the_task(
    executors: list[ServiceProcess],
    http_stub: Any,
    make_tools_dir: Any,
    publisher: Bus,
    listener: Any,
    authorize: Any,
    tenant: str,
    wait_for: Any,
    pool: asyncpg.Pool,
    kit: KitSettings,
) -> None:
    """Before, the result event (2.4 MB) was refused by the producer (`MessageSizeTooLargeError`); the bus's retry found it
    already marked sent in the batch, so the offset was committed with no result and no dead letter: the planner waited forever.
    """
    # The big answer is encoded, sent and read within the call's timeout: 1 s (the tool's usual) ran out on a loaded CI
    # machine, and the retry with the same idempotency key (as it should) took the next answer in its place.
    answers = iter([(200, BIG), (201, {"tracking": "1Z1"})])

    async def api(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return next(answers)

    stub = await http_stub(api)
    svc = build(
        kit=kit.model_copy(update={"tools_dir": make_tools_dir(label_tool(f"{stub.url}/labels", tenant, timeout_s=20.0))}),
        environ=secret_env(tenant, "sk"),
    )
    await svc.start()
    executors.append(svc)
    big = authorize(tenant, "create_shipping_label", LABEL)
    after = authorize(tenant, "create_shipping_label", LABEL, task_id=big.data.task_id)  # same task: same partition, after it
    await publisher.publish("actions.authorized", big)
    await publisher.publish("actions.authorized", after)
    [result] = await wait_for(lambda: listener.for_action(big.data.action_id), what="the big result's event")
    [next_result] = await wait_for(lambda: listener.for_action(after.data.action_id), what="the next action's result")
    assert result.type == "tidegate.action.succeeded"
    stand_in = result.data.result
    assert stand_in["truncated"] is True
    assert stand_in["kept_in"] == "executor.actions"
    assert next_result.data.result == {"tracking": "1Z1"}
    assert listener.dead_codes(big.data.action_id) == []
    row = await pool.fetchrow("SELECT result, result_event FROM executor.actions WHERE action_id = $1", big.data.action_id)
    kept = json.loads(row["result"])
    assert kept == BIG  # nothing lost
    whole = s.canonical_json(kept)
    assert (stand_in["bytes"], stand_in["sha256"]) == (len(whole), hashlib.sha256(whole).hexdigest())  # a person finds and checks it
    assert len(row["result_event"].encode()) <= DEFAULT_MAX_RESULT_BYTES
    assert len(stub.requests) == 2
