"""Every event type round-trips through the real broker; bad input is dead-lettered and consumption goes on."""

from __future__ import annotations

import uuid
from typing import Any

from aiokafka import AIOKafkaProducer
from signers import AdminBus

import schemas as s
from schemas.examples import sample_events
from servicekit import ADMIN, Bus, KitSettings, Producer, ensure_topics, kafka_options
from servicekit.consume import Route, consume_routes


def consumed_topics() -> list[str]:
    return sorted({topic for topic, _ in sample_events()})


async def test_every_event_type_round_trips_through_kafka(kit: KitSettings, wait_for: Any) -> None:
    await ensure_topics(kit.kafka_bootstrap, kit.topic_prefix, ["tools.update_inventory.requests", "tools.update_inventory.replies"])
    bus = AdminBus(kit, "roundtrip")
    received: dict[str, Any] = {}

    def collector(topic: str) -> Any:
        async def handler(event: Any) -> None:
            received[event.id] = (topic, event)

        return handler

    for topic in consumed_topics():
        bus.consume(topic, collector(topic), group_id=f"{kit.topic_prefix}roundtrip")
    await bus.start()
    try:
        sent = sample_events()
        for topic, event in sent:
            await bus.publish(topic, event)
        await wait_for(lambda: len(received) == len(sent), what="every sample event back")
        for topic, event in sent:
            got_topic, got = received[event.id]
            assert got_topic == topic
            assert got.model_copy(update={"traceparent": None}) == event  # a published event carries its trace context
    finally:
        await bus.stop()


async def test_malformed_messages_are_dead_lettered_and_consumption_continues(kit: KitSettings, wait_for: Any) -> None:
    bus = AdminBus(kit, "planner")
    handled: list[Any] = []
    rejected: list[s.EventRejected] = []

    async def on_task(event: Any) -> None:
        handled.append(event)

    async def on_dead(event: s.EventRejected) -> None:
        rejected.append(event)

    bus.consume("tasks", on_task, group_id=f"{kit.topic_prefix}planner")
    bus.consume("deadletter", on_dead, group_id=f"{kit.topic_prefix}ops")
    await bus.start()
    producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
    await producer.start()
    try:
        task_id = f"t-{uuid.uuid4().hex[:8]}"
        await producer.send_and_wait(kit.topic_prefix + "tasks", b"\x00\xffnot json", key=task_id.encode())
        await producer.send_and_wait(kit.topic_prefix + "tasks", b'{"type": "tidegate.task.submitted", "data": {}}', key=task_id.encode())
        good = s.TaskSubmitted.build(
            s.TaskSubmittedData(task_id=task_id, tenant_id="acme", workflow="support_triage", input={}, requested_by="a@acme.example"),
            source="test",
        )
        await bus.publish("tasks", good)
        await wait_for(lambda: len(rejected) == 2 and handled, what="two dead letters and the good event")
        assert [e.id for e in handled] == [good.id]
        assert {r.data.code for r in rejected} == {"invalid_event"}
        assert {r.data.service for r in rejected} == {"planner"}
        assert all(r.data.topic == kit.topic_prefix + "tasks" for r in rejected)
        assert any("tenantid" in r.data.error or "Field required" in r.data.error for r in rejected)
    finally:
        await producer.stop()
        await bus.stop()


async def test_a_polls_topics_are_handled_in_the_order_of_the_routes_not_of_the_poll(kit: KitSettings, wait_for: Any) -> None:
    """The policy learns a task's input before it decides the task's proposals, whatever order a poll returns them in."""

    def bus_named(name: str) -> Bus:
        return AdminBus(kit, name)

    samples = dict((topic, event) for topic, event in sample_events() if topic in ("tasks", "actions.proposed"))
    publisher = bus_named("publisher")
    await publisher.start()
    try:  # the proposal first, in its own partition; both are there before the consumer's first poll
        await publisher.publish("actions.proposed", samples["actions.proposed"])
        await publisher.publish("tasks", samples["tasks"])
    finally:
        await publisher.stop()

    handled: list[str] = []

    async def one(event: Any) -> None:
        handled.append(event.type)

    async def batch(events: list[Any]) -> None:
        handled.extend(e.type for e in events)

    bus = bus_named("ordered")
    routes = {"tasks": Route(one, handle_batch=batch), "actions.proposed": Route(one, handle_batch=batch)}
    consume_routes(bus, routes, group_id=f"{kit.topic_prefix}ordered")
    await bus.start()
    try:
        await wait_for(lambda: len(handled) == 2, what="the task and the proposal handled")
        assert handled == ["tidegate.task.submitted", "tidegate.action.proposed"]
    finally:
        await bus.stop()


async def test_a_from_latest_consumer_reads_what_arrives_right_after_start(kit: KitSettings, wait_for: Any) -> None:
    # The executor reads tool replies this way; a reply to a call made just after start must not be skipped
    # while Kafka is still resolving where "latest" is.
    topic = "tools.update_inventory.replies"
    await ensure_topics(kit.kafka_bootstrap, kit.topic_prefix, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
    await producer.start()
    try:
        await producer.send_and_wait(kit.topic_prefix + topic, b"before start: never read", partition=0)
        for _ in range(3):
            bus = AdminBus(kit, "latest")
            seen: list[bytes] = []

            async def handler(event: Any, seen: list[bytes] = seen) -> None:
                seen.append(event.id.encode())

            bus.consume(topic, handler, group_id=None, from_latest=True)
            await bus.start()
            try:
                reply = s.ToolReply.build(
                    s.ToolReplyData(
                        action_id=f"a-{uuid.uuid4().hex[:6]}", task_id="t-1", tenant_id="acme", tool="update_inventory", ok=True
                    ),
                    source="test",
                )
                await producer.send_and_wait(kit.topic_prefix + topic, s.encode(reply), key=reply.key)  # at once
                await wait_for(lambda seen=seen: seen, timeout=10, what="the reply sent right after start")
                assert seen == [reply.id.encode()]
            finally:
                await bus.stop()
    finally:
        await producer.stop()


async def test_the_traceparent_header_is_the_envelopes_on_every_published_event(kit: KitSettings) -> None:
    from aiokafka import AIOKafkaConsumer

    from servicekit import install_tracing, span

    install_tracing("test")  # a recording provider: the publish span would otherwise be its context alone
    bus = AdminBus(kit, "tp")
    await bus.start()
    data = s.TaskSubmittedData(task_id="t-tp", tenant_id="acme", workflow="w", input={}, requested_by="a")
    try:
        with span("producing handler"):
            await bus.publish("tasks", s.TaskSubmitted.build(data, source="t"))  # traceparent from the current span
        given = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
        await bus.publish("tasks", s.TaskSubmitted.build(data, source="t", traceparent=given))
    finally:
        await bus.stop()
    consumer = AIOKafkaConsumer(
        kit.topic_prefix + "tasks",
        bootstrap_servers=kit.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **kafka_options(kit, ADMIN),
    )
    await consumer.start()
    try:
        records = []
        while len(records) < 2:
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    envelopes = [s.decode("tasks", r.value).traceparent for r in records]
    headers = [dict(r.headers)["traceparent"].decode() for r in records]
    assert envelopes[0] is not None
    assert headers == envelopes
    assert given in headers
    assert all("x-tidegate-traceparent" not in dict(r.headers) for r in records)


async def test_a_bus_given_a_clusters_address_list_works_while_the_first_address_is_down(kit: KitSettings, wait_for: Any) -> None:
    """`TIDEGATE_KAFKA_BOOTSTRAP=a:1,b:2,c:3` (a cluster, docs/operations.md): any address that answers will do."""
    servers = f"127.0.0.1:1,{kit.kafka_bootstrap}"  # nothing listens on port 1: a broker that is down
    bus = Bus(Producer(servers, "roundtrip", **kafka_options(kit, ADMIN)), "roundtrip", servers, kit.topic_prefix)
    received: list[Any] = []

    async def on_task(event: Any) -> None:
        received.append(event)

    bus.consume("tasks", on_task, group_id=f"{kit.topic_prefix}roundtrip")
    await bus.start()
    try:
        task = next(event for topic, event in sample_events() if topic == "tasks")
        await bus.publish("tasks", task)
        await wait_for(lambda: [e.id for e in received] == [task.id], timeout=60, what="the task back through the list")
    finally:
        await bus.stop()
