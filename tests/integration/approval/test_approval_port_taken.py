"""A second approval service whose HTTP port is taken fails before it joins the consumer group: the live one does not rebalance.

An operator started a copy by hand beside the running `tidegate up` (same `TIDEGATE_APPROVAL_HTTP_PORT`): it joined the
group, took partitions, then found the port taken and exited, and the live copy's partitions were revoked and reassigned,
again at every restart of its supervisor's backoff.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from approval_harness import StartApproval

from servicekit import ADMIN, KitSettings, kafka_options
from services.approval.app import build
from services.approval.settings import ApprovalSettings


async def members(kit: KitSettings, group: str) -> list[str]:
    """The member ids of consumer group `group`, as the broker has them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kit.kafka_bootstrap, **kafka_options(kit, ADMIN))
    await admin.start()
    try:
        (described,) = await admin.describe_consumer_groups([group])
        return sorted(member[0] for member in described.groups[0][5])  # (error, group, state, protocol type, protocol, members)
    finally:
        await admin.close()


async def test_a_copy_whose_http_port_is_taken_never_joins_the_group(
    start_approval: StartApproval, kit: KitSettings, caplog: pytest.LogCaptureFixture
) -> None:
    live = await start_approval()
    group = f"{kit.topic_prefix}approval"
    before = await members(kit, group)
    assert before, "the live copy is a member of its group"
    port = urlsplit(live.url).port
    assert port is not None
    caplog.set_level(logging.INFO, logger="servicekit.polling")

    copy = build(kit, ApprovalSettings(http_port=port))
    with pytest.raises(OSError, match=rf"cannot listen on 127\.0\.0\.1:{port} \(set by TIDEGATE_APPROVAL_HTTP_PORT\)"):
        await copy.start()

    assert [poller.consumer for poller in copy.bus.pollers] == [None] * len(copy.bus.pollers)  # no consumer was ever made
    assert await members(kit, group) == before  # the broker saw no one join: the live copy keeps its generation
    moved = [r.getMessage() for r in caplog.records if "partitions revoked" in r.getMessage() or "partitions assigned" in r.getMessage()]
    assert moved == [], moved
