"""The policy's hold on a decision reads the `policy.tasks` group's progress from the real broker, as a second copy sees it.

A chaos run under 8 s Kafka sessions: right after a broker restart a planner's proposal was decided `draft_mode` 0.4 s
before the policy learned its task (the tasks consumer was still rejoining). The hold asks the broker whether the group
has committed below the end of `tasks` (`services/policy/unread.py`), through the group's own consumer, for every
partition, the ones another copy owns included.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from servicekit import ADMIN, KitSettings, kafka_options
from services.policy.unread import GroupUnread


async def test_the_tasks_group_is_unread_until_it_committed_the_end_of_every_partition(
    kit: KitSettings,
) -> None:
    topic = f"{kit.topic_prefix}tasks"
    producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, acks="all", **kafka_options(kit, ADMIN))
    await producer.start()
    try:
        for partition in (0, 1):
            await producer.send_and_wait(topic, b"{}", partition=partition)
    finally:
        await producer.stop()
    group = f"{kit.topic_prefix}policy.tasks"
    # A consumer of the group; the hold asks about every partition, whichever copy owns it.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kit.kafka_bootstrap, group_id=group, enable_auto_commit=False, **kafka_options(kit, ADMIN)
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)  # only so that this test can commit as the group: what the hold reads is the broker's
        unread = GroupUnread(lambda: consumer, topic, clock=iter(range(0, 10_000, 10)).__next__)  # each answer asked afresh
        assert await unread()  # nothing committed
        await consumer.commit({TopicPartition(topic, 0): 1})
        assert await unread()  # partition 1's task not handled yet
        await consumer.commit(await consumer.end_offsets(tps))
        assert not await unread()  # read to its end: a task still not learned is not coming
    finally:
        await consumer.stop()
