"""The end of a polled batch: what its handlers published is acknowledged by the broker before its offsets may move.

Publishing inside a batch does not wait for each acknowledgement (`servicekit._bus_publish`); the
batch's end waits for all of them, then runs what handlers left for that moment (`once_delivered`).
A record Kafka refuses for good (`servicekit.refusals`) is sent again alone, and the input whose
handling published one it refuses again is dead-lettered with the broker's reason; its batch-mates go on.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from schemas import ReasonCode
from servicekit._bus_base import log
from servicekit._bus_deadletter import DeadLettering
from servicekit.deliveries import BatchDeliveries, OutputRefused, Refusal, batch_commits, batch_deliveries
from servicekit.intake import ErrorKind, classify
from servicekit.refusals import REFUSED_FOR_GOOD, refusal_code, refusal_name

__all__ = ["Acknowledging"]


async def _acknowledged(delivery: asyncio.Future[Any] | None) -> None:
    if delivery is not None:  # None: a stand-in delivered it
        await delivery


async def _answers(deliveries: Sequence[asyncio.Future[Any]]) -> list[BaseException | None]:
    """Each delivery's failure, None where the broker acknowledged it: what `gather(..., return_exceptions=True)` returns.

    Awaited in order, not gathered: the broker answers a produce request for all its records at once, so once the first
    answer is in, the others are mostly in too and awaiting them costs nothing, where `gather` pays a future, a callback
    and an event-loop turn for every record a batch published (`bench.kit_cpu`). A cancellation of the waiting task is
    raised, as out of `gather` (the delivery it waited on is cancelled with it); a delivery cancelled otherwise (a
    producer that stopped) is that delivery's answer, as in `gather`'s.
    """
    answers: list[BaseException | None] = []
    for delivery in deliveries:
        try:
            await delivery
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            answers.append(exc)
        except Exception as exc:
            answers.append(exc)
        else:
            answers.append(None)
    return answers


class Acknowledging(DeadLettering):
    """`Bus.acknowledged_at_end` and `Bus.confirm_published`: a polled batch's deliveries, settled before it counts as handled."""

    @asynccontextmanager
    async def acknowledged_at_end(self) -> AsyncIterator[None]:
        """Handle a polled batch: what its handlers publish is acknowledged by the broker before this returns.

        Publishing inside does not wait for each acknowledgement (records are batched per partition);
        leaving waits for all of them, so the batch's offsets are committed only after everything it
        published is stored, then runs what the handlers left for that moment (`once_delivered`). An
        event id is published once per batch: a source event redelivered inside the same batch finds
        its outbox entries not yet marked and hands them over again, and they are not sent twice. A
        delivery that failed raises here: the batch is rewound and handled again (handlers are
        idempotent); a producer that can no longer deliver stops the process.

        A record Kafka refuses for good (`servicekit.refusals`) is not a failed delivery: sent again it
        is refused again, and the batch would be handled for ever. Each record the broker refused is
        sent again alone (`_settle`: the broker answers for a whole record batch, the refused record's
        batch-mates included); the input whose handling published one it refuses again is dead-lettered
        with the broker's reason (`output_too_large`, `output_refused`), and its batch-mates count as
        handled. One no single input is known to have published raises `OutputRefused`: rewound.
        """
        batch = BatchDeliveries()
        token = batch_deliveries.set(batch)
        try:
            yield
        except BaseException:
            batch_deliveries.reset(token)
            await asyncio.gather(*(d.future for d in batch.unacked), return_exceptions=True)  # nothing left unretrieved; rewound anyway
            raise
        batch_deliveries.reset(token)
        if not (batch.unacked or batch.unowned or batch.after or batch.together):
            return  # nothing published, nothing waiting for it (a lane's record is a batch of its own: often so)
        sent_again = {d.identity for d in batch.unacked}
        if lost := [(d, exc) for d, exc in batch.unowned if d.identity not in sent_again]:
            log.error("%s: Kafka refuses %s for good, and no input handled alone published it again", self.service, OutputRefused(lost))
            raise OutputRefused(lost)
        refused = await self._settle(batch)
        if unowned := [(d, exc) for d, exc in refused if d.source is None]:
            log.error("%s: Kafka refuses %s for good, published by no one input", self.service, OutputRefused(unowned))
            raise OutputRefused(unowned)
        await self._dead_letter_refused(refused)
        for action in batch.after:  # `once_delivered`: only now is what the batch published stored
            await self.retrying("a delivered batch's bookkeeping", action)
        commits = batch_commits.get()
        for key, (together, items) in batch.together.items():  # `once_delivered_together`
            if commits is not None:
                commits.before_commit(key, together, items)
            else:
                await self.retrying("a delivered batch's bookkeeping", functools.partial(together, items))

    async def confirm_published(self) -> None:
        """Inside a polled batch: wait for the broker's answer to what was published so far (`_settle`).

        Raises `OutputRefused` when Kafka refuses some of it for good, for the caller to find the input
        that published it (a batch handler handles its events again one at a time, `servicekit.consume`:
        each event's handler publishes its events again, owed to it); any other failure as at the end.
        """
        batch = batch_deliveries.get()
        if batch is None:
            return
        if refused := await self._settle(batch):
            batch.unowned += refused
            raise OutputRefused(refused)

    async def _settle(self, batch: BatchDeliveries) -> list[Refusal]:
        """Wait for the broker's answer to what `batch` published so far; return what it refuses for good, sent alone.

        The broker answers for a whole record batch: a record of it that is too large fails every record
        the producer had put with it. Each record refused is so sent again in a batch of its own (no
        duplicate: the broker stored nothing of the refused batch); those refused again are returned, and
        no longer count as sent in `batch`, so that their input publishes them again if it is handled
        again. Any other failure raises (the polled batch is rewound); a producer that can no longer
        deliver stops the process.
        """
        if not batch.unacked:
            return []  # nothing published (most records of a lane, handled as a batch of their own)
        pending, batch.unacked = batch.unacked, []
        answers = await _answers([d.future for d in pending])
        failed = [(d, exc) for d, exc in zip(pending, answers, strict=True) if exc is not None]
        await self._unless_refused([exc for _, exc in failed])
        if not failed:
            return []
        why = refusal_name(failed[0][1])
        log.warning("%s: Kafka refused a batch of %d records (%s); each is sent again alone", self.service, len(failed), why)
        again = [await self._send_alone(d) for d, _ in failed]  # in the order they were published
        answers = await asyncio.gather(*(_acknowledged(f) for f in again), return_exceptions=True)
        refused = [(d, exc) for (d, _), exc in zip(failed, answers, strict=True) if isinstance(exc, BaseException)]
        await self._unless_refused([exc for _, exc in refused])
        for d, _ in refused:
            batch.sent.discard(d.identity)
        return refused

    async def _unless_refused(self, errors: Sequence[BaseException]) -> None:
        """Raise the first of `errors` that is not a refusal for good (a dead producer stops the process first)."""
        others = [exc for exc in errors if not isinstance(exc, REFUSED_FOR_GOOD)]
        for exc in others:
            if classify(exc) is ErrorKind.PRODUCER_DEAD:
                await self.producer_dead(exc)
        if others:
            raise others[0]

    async def _dead_letter_refused(self, refused: Sequence[Refusal]) -> None:
        """Dead-letter each input whose handling published what Kafka refuses for good, once, with every refusal and the broker's reason."""
        owed: dict[tuple[str, int, int], list[Refusal]] = {}
        for d, exc in refused:
            assert d.source is not None
            owed.setdefault((d.source.topic, d.source.partition, d.source.offset), []).append((d, exc))
        for refusals in owed.values():
            record, first = refusals[0][0].source, refusals[0][1]
            assert record is not None
            why = f"Kafka refuses for good what handling it published: {OutputRefused(refusals)}"
            await self.dead_letter(record, record.topic.removeprefix(self.prefix), refusal_code(first) or ReasonCode.OUTPUT_REFUSED, why)
