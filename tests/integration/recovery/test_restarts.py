"""The two recovery failures of issue #11, reproduced on a real broker and database of the tests' own.

(a) The broker is down for longer than the producers' request timeout (the delivery timeout of a
    produced record) while the five services carry tasks: an idempotent producer whose batch expired
    dies of `OutOfOrderSequenceNumber` when the broker is back (aio-libs/aiokafka#1017). Before, the
    policy service retried it forever and nothing closed again.
(b) PostgreSQL is stopped with a fast shutdown and started again while tasks flow: the pooled
    connections it broke raised `InternalClientError` and their events were dead-lettered as
    `handler_error`, skipped for good.
Afterwards every task closes exactly once and nothing was dead-lettered as `handler_error`.
The request timeout is lowered to 6 s (`TIDEGATE_KAFKA_REQUEST_TIMEOUT_MS`) so the outage that kills a
producer lasts seconds, not the default 40; `make test-recovery` runs the same with aiokafka's default.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from private_infra import PrivateInfra
from recovery_helpers import Supervisor, closed_tasks, dead_letters, kit_producer, skip_sequences, submit

from schemas import ReasonCode
from servicekit import ADMIN, REPO_ROOT, KitSettings, catalog_topic_names, ensure_topics, kafka_options
from tidegate.commands.tenant import publish_tenant

pytestmark = pytest.mark.timeout(600)

# `make test-recovery` sets TIDEGATE_RECOVERY_LONG=1: aiokafka's own 40 s request timeout and an outage past it.
LONG = os.environ.get("TIDEGATE_RECOVERY_LONG") == "1"
REQUEST_TIMEOUT_MS = None if LONG else 6000
OUTAGE_S = 50.0 if LONG else 10.0
TASKS_PER_WAVE = 60 if LONG else 16


@pytest.fixture
async def kit(private_infra: PrivateInfra, tmp_path: Path) -> KitSettings:
    """Settings on the private broker and database, a prefix and keys of this test's own."""
    (tmp_path / "keys").mkdir()  # a service refuses a keys folder that is not there
    kit = KitSettings(
        kafka_bootstrap=private_infra.kafka_bootstrap,
        kafka_credentials_dir=private_infra.kafka_credentials_dir,
        kafka_request_timeout_ms=REQUEST_TIMEOUT_MS,
        database_url=private_infra.database_url,
        db_credentials_dir=private_infra.db_credentials_dir,
        topic_prefix=f"rec-{uuid.uuid4().hex[:8]}.",
        keys_dir=tmp_path / "keys",
    )
    await ensure_topics(
        kit.kafka_bootstrap, kit.topic_prefix, catalog_topic_names(["update_inventory"]), client_options=kafka_options(kit, ADMIN)
    )
    # Waves of the demo's tickets refund cus_1001 42.50 USD each, past acme's per-payee daily bound (500 USD) after a dozen,
    # and past its daily payout bound (1,000 USD without a human) after two dozen: those refunds would wait for a person.
    # These tests are about delivery, not money: acme's daily bounds are off here.
    acme = yaml.safe_load((REPO_ROOT / "policies" / "default" / "settings.yaml").read_text())["tenants"]["acme"]
    off = {"payee_daily_threshold_usd": "off", "tenant_daily_payout_usd": "off"}
    await publish_tenant(kit, tenant="acme", record=acme | off, set_by="the recovery tests")
    return kit


@pytest.fixture
async def stack(kit: KitSettings) -> AsyncIterator[Supervisor]:
    supervisor = Supervisor(kit)
    await supervisor.start()
    yield supervisor
    await supervisor.stop()


async def assert_every_task_closes_once(kit: KitSettings, task_ids: set[str], supervisor: Supervisor) -> None:
    outcomes = await closed_tasks(kit, task_ids, timeout_s=240 if LONG else 150)
    open_tasks = sorted(task_ids - outcomes.keys())
    assert not open_tasks, (
        f"{len(open_tasks)} of {len(task_ids)} tasks never closed (restarts {dict(supervisor.restarts)}): {open_tasks[:5]}"
    )
    assert {t: len(o) for t, o in outcomes.items() if len(o) > 1} == {}, "a task closed twice"
    handler_errors = [d.data for d in await dead_letters(kit) if d.data.code == ReasonCode.HANDLER_ERROR]
    assert handler_errors == []


async def test_a_broker_down_longer_than_the_request_timeout_under_load_loses_nothing(
    private_infra: PrivateInfra, kit: KitSettings, stack: Supervisor
) -> None:
    before = await submit(kit, TASKS_PER_WAVE, "before")
    await closed_tasks(kit, before, timeout_s=60, enough=len(before) // 4)  # the services are busy with the wave
    private_infra.kill_kafka()  # while the rest of the wave is being planned, decided and executed
    await asyncio.sleep(OUTAGE_S)  # the fault itself: the broker stays down past the request timeout
    await asyncio.to_thread(private_infra.up)
    after = await submit(kit, TASKS_PER_WAVE, "after")
    await assert_every_task_closes_once(kit, before | after, stack)
    print(f"\nbroker outage of {OUTAGE_S:.0f}s: {len(before | after)} tasks closed; restarts {dict(stack.restarts)}; {stack.reasons}")


async def test_producers_the_broker_no_longer_accepts_are_replaced_and_nothing_is_lost(kit: KitSettings, stack: Supervisor) -> None:
    """What a long outage leaves behind, made certain: each producer's next batch is out of sequence for the broker."""
    warm = await submit(kit, TASKS_PER_WAVE, "warm")  # every producer has written its partitions
    await closed_tasks(kit, warm, timeout_s=150)
    for name in ("policy", "planner", "executor"):  # one producer per service: the kit's, decisions included
        assert skip_sequences(kit_producer(stack.services[name])) > 0, name
    after = await submit(kit, TASKS_PER_WAVE, "after")
    await assert_every_task_closes_once(kit, warm | after, stack)
    assert stack.restarts["policy"] >= 1  # its producer could no longer deliver: it exited, was restarted, sent again
    assert stack.restarts["planner"] >= 1
    assert stack.restarts["executor"] >= 1
    print(f"\nproducers out of sequence: {len(warm | after)} tasks closed; restarts {dict(stack.restarts)}; {stack.reasons}")


async def test_a_postgresql_fast_shutdown_under_load_loses_nothing(
    private_infra: PrivateInfra, kit: KitSettings, stack: Supervisor
) -> None:
    before = await submit(kit, TASKS_PER_WAVE, "before")
    await closed_tasks(kit, before, timeout_s=60, enough=len(before) // 4)  # the services are busy with the wave
    private_infra.stop_postgres_fast()  # every session terminated while the first wave is in the services' hands
    await asyncio.to_thread(private_infra.up)
    after = await submit(kit, TASKS_PER_WAVE, "after")
    await assert_every_task_closes_once(kit, before | after, stack)
    print(f"\npostgres fast shutdown: {len(before | after)} tasks closed; restarts {dict(stack.restarts)}; {stack.reasons}")
