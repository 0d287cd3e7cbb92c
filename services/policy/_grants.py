"""What the policy reads of a human's decision: the bytes its signature may cover, the distinct approvers it counts.

Pure functions of a grant and of the escalation it answers (`PolicyService.on_approval` re-decides with them).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence

from schemas import Envelope
from servicekit import approval_document, approval_message
from servicekit.people import person
from servicekit.received import received
from services.policy.repository import DecisionRecord

__all__ = ["approval_messages", "distinct_approvers", "escalation_requester"]


def escalation_requester(escalation: DecisionRecord) -> str | None:
    """The task's requester an escalation named (`ActionDecidedData.task_requested_by`), as it was recorded and published."""
    named = json.loads(escalation.decided_event).get("data", {}).get("task_requested_by")
    return named if isinstance(named, str) and named else None


def approval_messages(event: Envelope) -> Iterator[bytes]:
    """The bytes a decision's signature may cover: its data as received, as this release dumps it, and the form before release 22."""
    raw = received(event)
    if raw is None:  # outside a consume path (a restart's replay, a test): the data as this release dumps it
        yield approval_document(event.type, event.data)
    else:  # never the parsed data dumped again: it would drop a field added on the way, and verify without it
        with contextlib.suppress(ValueError, TypeError, KeyError):  # the bus parsed these bytes already
            yield approval_document(event.type, json.loads(raw)["data"])
    yield approval_message(event.type, event.data)


def distinct_approvers(
    names: Sequence[str | None], groups: Mapping[str, Sequence[str]], requesters: Sequence[str | None]
) -> dict[str, tuple[str, ...]]:
    """The distinct humans a grant names, each with the groups it signed: one per person (`servicekit.people`), the requesters left out."""
    seen = {person(r) for r in requesters if r}
    distinct: dict[str, tuple[str, ...]] = {}
    for name in names:
        if name and person(name) not in seen:  # each person under the first spelling the grant gives
            seen.add(person(name))
            distinct[name] = tuple(groups.get(name, ()))
    return distinct
