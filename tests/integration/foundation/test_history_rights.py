"""A service whose Kafka login may not read a topic its start checks says what to run, instead of a bare broker error.

restore7 F3: after an upgrade that added read rights, without `tidegate topics ensure`, the executor, the approval service
and the policy crash-looped on `TopicAuthorizationFailedError` (each sees the topic, since it may write it, and may not read
it), which named no fix. The agent's login is such a login for `actions.proposed`: it may propose, not read proposals.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from servicekit import KitSettings, catalog_topic_names, deployment_authority, ensure_topics, kafka_options
from servicekit.bus_history import HistoryNotReadable, group_offsets, signed_events


async def test_a_login_that_may_write_but_not_read_a_topic_is_told_to_run_topics_ensure(infra: Any, kit: KitSettings) -> None:
    await ensure_topics(kit.kafka_bootstrap, kit.topic_prefix, catalog_topic_names())
    agent = kafka_options(kit, "agent")
    producer = AIOKafkaProducer(bootstrap_servers=kit.kafka_bootstrap, acks="all", **agent)
    await producer.start()
    try:
        await producer.send_and_wait(kit.topic_prefix + "actions.proposed", b"{}", key=b"k")  # the agent may write it
    finally:
        await producer.stop()

    proposals = signed_events(kit.kafka_bootstrap, kit.topic_prefix, "actions.proposed", deployment_authority(kit), client_options=agent)
    with pytest.raises(HistoryNotReadable) as refused:
        async for _ in proposals:
            pass
    said = str(refused.value)
    assert f"may not read {kit.topic_prefix}actions.proposed" in said
    assert "run `tidegate topics ensure`" in said


async def test_a_login_that_may_not_use_a_group_is_told_to_run_topics_ensure(infra: Any, kit: KitSettings) -> None:
    """The catch-up's planner step asks the planner's group what it handled: a login without rights on that group (one
    whose rights predate the release, or another service's) gets the fix named, not a bare `GroupAuthorizationFailedError`
    (which also stopped the catch-up before it marked itself finished, and every service refused to start)."""
    await ensure_topics(kit.kafka_bootstrap, kit.topic_prefix, catalog_topic_names())
    executor = kafka_options(kit, "executor")  # may read actions.results, may not use the planner's group
    with pytest.raises(HistoryNotReadable) as refused:
        await group_offsets(
            kit.kafka_bootstrap, kit.topic_prefix, ["actions.results"], kit.topic_prefix + "planner", client_options=executor
        )
    said = str(refused.value)
    assert f"may not describe consumer group {kit.topic_prefix}planner" in said
    assert "run `tidegate topics ensure`" in said


async def test_a_deployment_whose_topics_were_never_made_has_no_group_to_ask(infra: Any, kit: KitSettings) -> None:
    """A catch-up of a prefix that never ran looks, finds nothing and finishes, whatever the login may do with the group."""
    planner = kafka_options(kit, "planner")
    assert (
        await group_offsets(kit.kafka_bootstrap, kit.topic_prefix + "never.", ["actions.results"], "never.planner", client_options=planner)
        == {}
    )
