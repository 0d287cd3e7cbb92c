"""Each service starts as its own process, joins Kafka and PostgreSQL, and stops cleanly on SIGTERM;
no consumed topic can kill it with bad input."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from signers import AdminBus

import schemas as s
from servicekit import ADMIN, KitSettings, kafka_options
from tidegate.commands.services import SERVICES


def service_env(kit: KitSettings, ready: Path) -> dict[str, str]:
    return os.environ | {
        "TIDEGATE_KAFKA_BOOTSTRAP": kit.kafka_bootstrap,
        "TIDEGATE_DATABASE_URL": kit.database_url,
        "TIDEGATE_TOPIC_PREFIX": kit.topic_prefix,
        "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
        "TIDEGATE_READY_DIR": str(ready),
        "TIDEGATE_APPROVAL_HTTP_PORT": "0",
    }


@pytest.mark.parametrize("name", SERVICES)
async def test_service_process_starts_and_stops_cleanly_on_sigterm(name: str, kit: KitSettings, tmp_path: Path, wait_for: Any) -> None:
    ready = tmp_path / "ready"
    log = (tmp_path / f"{name}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"services.{name}", env=service_env(kit, ready), stdout=log, stderr=asyncio.subprocess.STDOUT
    )
    try:
        await wait_for(lambda: (ready / f"{name}.ready").exists() or proc.returncode is not None, timeout=60, what=f"{name} ready")
        assert proc.returncode is None, (tmp_path / f"{name}.log").read_text()[-3000:]
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
        assert code == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
        assert not (ready / f"{name}.ready").exists()
    finally:
        if proc.returncode is None:
            proc.kill()
        log.close()


@pytest.mark.parametrize("name", [n for n in SERVICES if n != "audit"])  # audit keeps raw records instead (its own tests)
async def test_malformed_input_on_every_consumed_topic_is_dead_lettered(
    name: str, kit: KitSettings, wait_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDEGATE_APPROVAL_HTTP_PORT", "0")  # never collide with a running approval service
    service = importlib.import_module(f"services.{name}.app").build(kit=kit)
    topics = sorted(set(service.bus.subscriptions))
    assert topics, f"{name} subscribes to nothing"
    watcher = AdminBus(kit, "watcher")
    rejected: list[s.EventRejected] = []

    async def on_dead(event: s.EventRejected) -> None:
        if event.data.service == name:
            rejected.append(event)

    watcher.consume("deadletter", on_dead, group_id=f"{kit.topic_prefix}watcher")
    await watcher.start()
    await service.start()
    producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
    await producer.start()
    try:
        for topic in topics:
            key = f"t-{uuid.uuid4().hex[:6]}".encode()
            await producer.send_and_wait(kit.topic_prefix + topic, b"{definitely not an event", key=key)
            await producer.send_and_wait(kit.topic_prefix + topic, b'{"specversion": "1.0"}', key=key)
        await wait_for(lambda: len(rejected) >= 2 * len(topics), timeout=30, what=f"dead letters from {name}")
        by_topic: dict[str, int] = {}
        for r in rejected:
            by_topic[r.data.topic] = by_topic.get(r.data.topic, 0) + 1
        assert by_topic == {kit.topic_prefix + t: 2 for t in topics}
        assert all(r.data.code == "invalid_event" for r in rejected)
    finally:
        await producer.stop()
        await service.stop()
        await watcher.stop()
