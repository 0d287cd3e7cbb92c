"""Whether a consumer group of the policy has records of its topic not handled yet: its committed offsets below the ends.

A proposal the planner signed waits for its task's request, which the `policy.tasks` group learns on a consumer of its
own (`app.py`). After the broker came back from a restart, that consumer was still rejoining its group while the
proposals' consumer had already read the proposal: the proposal waited its `provenance_wait_s`, found its task not
learned, and was decided failing closed in draft mode, 0.4 s before the task was learned (a chaos run under 8 s Kafka
sessions; its write waited for a human in a group the run's approver is not in, and the task stayed open). The request
was on the bus the whole time: the planner had read it before it proposed. So while the group has records it has not
handled, the decision waits as for a consumer that retries (`PolicyService.inputs_held`, up to `HELD_WAIT_S` more).
The same holds for the `policy.results` group: a proposal waiting for its task's earlier read (untrusted output) found
it unseen and escalated `tainted_argument` while the result was on the bus, its consumer still rejoining.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition

log = logging.getLogger(__name__)

__all__ = ["GroupUnread"]

ASK_TIMEOUT_S = 2.0  # a broker that does not answer this fast is itself a reason to wait (bounded by `HELD_WAIT_S`)
FRESH_S = 0.5  # an answer is reused this long: the wait asks every 50 ms


class GroupUnread:
    """`await unread()`: whether the group of `consumer()` has committed below the end of some partition of `topic`.

    Asked only once a decision has waited its `provenance_wait_s` for its task and it is still not learned; unknown
    (no consumer yet, the broker not answering in `ASK_TIMEOUT_S` beyond the fetch it holds) counts as unread, since the wait stays bounded.
    """

    def __init__(
        self, consumer: Callable[[], Any], topic: str, *, held_fetch_s: float = 0.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.consumer = consumer
        self.topic = topic
        self.clock = clock
        # The consumer asks the end offsets on the connection its fetches take, and the broker answers requests of one
        # connection in order: an idle consumer's ask waits behind the fetch the broker holds (`fetch_max_wait_ms`, 2 s),
        # so it is given that hold beyond `ASK_TIMEOUT_S`. Asked within 2 s alone, an idle group read to its end was
        # "not known" one time in two and held a proposal whose task never came 30 s instead of 2.
        self.held_fetch_s = held_fetch_s
        self._answer: tuple[float, bool] | None = None

    async def __call__(self) -> bool:
        """Whether the group has records of the topic it has not handled (or that is not known now)."""
        now = self.clock()
        if self._answer is not None and now - self._answer[0] < FRESH_S:
            return self._answer[1]
        try:
            unread = await asyncio.wait_for(self._ask(), self.held_fetch_s + ASK_TIMEOUT_S)
        except Exception as exc:  # the broker away or rebalancing: what the group read is not known
            log.info("policy: whether %s is read to its end is not known (%r); a decision waiting for it waits on", self.topic, exc)
            unread = True
        self._answer = (now, unread)
        return unread

    async def _ask(self) -> bool:
        consumer = self.consumer()
        if consumer is None:
            return True
        tps = [TopicPartition(self.topic, p) for p in sorted(consumer.partitions_for_topic(self.topic) or ())]
        if not tps:
            return True
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            committed = await consumer.committed(tp)
            if (committed or 0) < ends[tp]:
                return True
        return False
