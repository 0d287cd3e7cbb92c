"""A producer's signed event kept as it came: the bytes an event being handled was decoded from, and their check when read back.

A signature covers the document as its producer sent it, so only those bytes verify again later (an event decoded
and dumped again loses what this release does not know of it). The consume paths say which bytes each event came
from: `Bus.handle_event` through `publishing_for` (the record its handler runs for), a polled batch through
`receiving` (`servicekit.consume`). What a service kept is read back from its database, which its own login can
write: `proven` takes it as authority only when it verifies as every consumer checks it (`Authority.check`) and is
about the very action expected (the executor's finished claims, the approval's kept results for an undo).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRecord

from schemas import ActionIdentity, Envelope, ReasonCode, action_identity, decode_document
from servicekit.authority import Authority
from servicekit.deliveries import publishing_for

__all__ = ["NotProven", "proven", "received", "receiving"]

# The records of the polled batch being handled, by the identity of the event each was decoded into.
_batch: ContextVar[dict[int, ConsumerRecord[Any, Any]] | None] = ContextVar("tidegate_received_batch", default=None)


@contextmanager
def receiving(events: Sequence[Any], records: Sequence[ConsumerRecord[Any, Any]]) -> Iterator[None]:
    """While a batch handler runs: `events[i]` was decoded from `records[i]`."""
    token = _batch.set({id(event): record for event, record in zip(events, records, strict=True)})
    try:
        yield
    finally:
        _batch.reset(token)


def received(event: Any) -> bytes | None:
    """The bytes `event` was decoded from, while its handler runs; None outside a consume path (a test, a replay)."""
    batch = _batch.get()
    record = batch.get(id(event)) if batch is not None else publishing_for.get()
    return None if record is None else record.value


@dataclass(frozen=True)
class NotProven:
    """Why a kept event grants nothing: `why`, said of the event (it "is refused: …"), and the metric's reason.

    `counted_as`: the `reason` label of `tidegate_rows_refused_total`, `unsigned` or `invalid`.
    """

    why: str
    counted_as: str


def proven(
    topic: str, text: str, expected: ActionIdentity, authority: Authority | None, *, signed: str, shown: bool = False
) -> Envelope | NotProven:
    """The event of `topic` kept as `text` when it verifies (`Authority.check`) and is about the action `expected`; else why not.

    `authority`: the deployment's public keys (None: nothing kept is trusted). `signed`: what a verified event of another
    action is called in the refusal ("the executor's signed result"). `shown`: the event proves what a row shows, and is
    never sent again, so a key rotated with grace still proves it however long ago (`Authority.check(kept=True)`); an
    event that goes out again (the executor's kept result) must pass as every consumer will judge it: now.
    """
    try:
        event: Envelope
        event, document = decode_document(topic, text)
    except ValueError as exc:  # pydantic's ValidationError, or JSON that is not
        return NotProven(f"is not an event of {topic} ({type(exc).__name__})", "invalid")
    if authority is None:
        return NotProven("cannot be verified (this service was given no public keys)", "invalid")
    refusal = authority.check(text, event, document, kept=shown)
    if refusal is not None:
        return NotProven(f"is refused: {refusal.message}", "unsigned" if refusal.code == ReasonCode.SIGNATURE_MISSING else "invalid")
    theirs = action_identity(event.data)  # the envelope's tenant is its data's (the contract)
    if theirs != expected:
        named = f"{theirs['action_id']}, tenant {theirs['tenant_id']}, task {theirs['task_id']}, step {theirs['step']}"
        return NotProven(f"is {signed} of another action ({named})", "invalid")
    return event
