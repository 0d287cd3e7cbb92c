"""A task whose proposal the broker never stored is proposed again when the task is redelivered.

Found by the recovery suite: inside a polled batch a publish returns when the record is queued; the
planner deleted the outbox entry right then, the delivery failed (the producer died), the batch was
rewound, and its redelivery found the event applied and the outbox empty: the task never moved again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from fake_producer import make_bus

from schemas import TaskSubmitted, decode, encode
from servicekit import Recorded, SigningKey, span
from servicekit.bus import Bus
from services.planner.handlers import PlannerHandlers
from services.planner.strategies import PlaybookStrategy
from systems.seed import TICKETS
from tidegate.demo.tickets import ticket_task

TICKET = {t.ticket_id: t for t in TICKETS}


def _handlers(harness: Any, bus: Bus, catalog: Any) -> PlannerHandlers:
    return PlannerHandlers(
        repo=harness.repo,
        strategy=PlaybookStrategy(catalog),
        out=bus,
        rates=harness.handlers.rates,
        read_only=harness.handlers.read_only,
        ids=harness.handlers.ids,
    )


async def test_a_proposal_lost_in_delivery_is_published_again_on_redelivery(harness: Any, catalog: Any, tmp_path: Path) -> None:
    bus, producer = make_bus()
    bus.signer = SigningKey.load_or_create(tmp_path, "planner")
    handlers = _handlers(harness, bus, catalog)
    event = TaskSubmitted.build(ticket_task(TICKET["T-1007"], task_id="t-T-1007"), source="test")

    async def first_delivery() -> None:
        with span("planner handle task.submitted"):
            async with bus.acknowledged_at_end():
                await handlers.on_task(event)
                producer.deliveries[0].set_exception(KafkaTimeoutError())  # the broker never stores it

    with pytest.raises(KafkaTimeoutError):
        await first_delivery()  # the batch is rewound: its offset is not committed

    async def redelivery() -> None:  # handled again, in a span (a trace context) of its own
        with span("planner handle task.submitted"):
            async with bus.acknowledged_at_end():
                await handlers.on_task(event)
                producer.ack_all()

    await asyncio.wait_for(redelivery(), 5)
    topics = [topic for topic, *_ in producer.sent]
    assert topics == ["p.actions.proposed", "p.actions.proposed"]
    (_, first_bytes, *first_rest), (_, again_bytes, *again_rest) = producer.sent
    assert again_bytes == first_bytes  # the stored record, byte for byte: same id, same signature, same trace context
    assert again_rest == first_rest
    first, again = (decode("actions.proposed", value) for _, value, *_ in producer.sent)
    assert again.id == first.id  # the same recorded event: consumers see it once
    assert first.signature is not None
    assert first.keyid == bus.signer.key_id
    assert again.data.tool == "tag_ticket"
    assert await harness.repo.unpublished("") == []  # delivered now: the outbox is empty


async def test_a_task_read_twice_in_one_poll_is_proposed_once(harness: Any, catalog: Any) -> None:
    """Its outbox entry is marked only after the batch's acks, so the second copy finds it: it must not go out twice."""
    bus, producer = make_bus()
    handlers = _handlers(harness, bus, catalog)
    event = TaskSubmitted.build(ticket_task(TICKET["T-1007"], task_id="t-T-1007"), source="test")
    async with bus.acknowledged_at_end():
        await handlers.on_task(event)
        await handlers.on_task(event)  # the same record again, in the same poll
        producer.ack_all()
    assert [topic for topic, *_ in producer.sent] == ["p.actions.proposed"]
    assert await harness.repo.unpublished("") == []


async def test_an_outbox_entry_stored_unsigned_goes_out_as_stored_never_signed_by_the_planner(
    harness: Any, catalog: Any, tmp_path: Path
) -> None:
    """The planner's database login can write its outbox: an entry it wrote unsigned must not go out under the planner's key.

    Published as stored, it carries no signature, and every consumer refuses it (`signature_missing`).
    """
    bus, producer = make_bus()
    bus.signer = SigningKey.load_or_create(tmp_path, "planner")
    handlers = _handlers(harness, bus, catalog)
    await harness.submit(ticket_task(TICKET["T-1007"], task_id="t-legacy"))
    [proposal] = [event for topic, event in harness.published if topic == "actions.proposed"]  # unsigned: the harness signs nothing
    forged = encode(proposal.model_copy(update={"data": proposal.data.model_copy(update={"args": {"ticket_id": "T-1", "tags": ["x"]}})}))
    harness.repo.outbox[999] = ("step-timeout:forged", Recorded.stored("actions.proposed", forged))
    tick = asyncio.create_task(handlers.on_tick())  # what a tick finds in the outbox is published, and awaited
    while not producer.sent:
        await asyncio.sleep(0.01)
    producer.ack_all()
    await asyncio.wait_for(tick, 5)
    [(topic, value, *_)] = producer.sent
    assert topic == "p.actions.proposed"
    assert value == forged  # byte for byte as stored
    published = decode("actions.proposed", value)
    assert (published.signature, published.keyid) == (None, None)
