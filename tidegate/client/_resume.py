"""Reading how earlier proposals ended: one read of the answer topics per position, however many actions it follows."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tidegate.client.ledger import ActionIdReused
from tidegate.client.outcomes import Decided
from tidegate.client.progress import ANSWER_TOPICS, Progress
from tidegate.client.transport import Position, Transport
from tidegate.client.trust import Trust

__all__ = ["by_position", "read_until_settled", "settled"]

Follows = list[tuple[Position | None, list[Progress]]]
"""Actions to follow, grouped by the position their story is read from (None: the topics' beginning)."""


def settled(progress: Progress) -> Decided | ActionIdReused | None:
    """How the action ended, or that another call owns its id (the policy refused it); None while neither is known."""
    if progress.refused:
        return ActionIdReused(progress.action_id, by_deployment=True)
    return progress.final()


def by_position(rows: Iterable[tuple[Progress, str | None]]) -> Follows:
    """Group actions by their position token (a row's events before its own position are never its story).

    Raises:
        ValueError: An action is given twice, or its position is not a position token.
    """
    groups: dict[str | None, tuple[Position | None, list[Progress]]] = {}
    seen: set[str] = set()
    for progress, token in rows:
        if progress.action_id in seen:
            raise ValueError(f"action {progress.action_id!r} is given twice")
        seen.add(progress.action_id)
        key = token or None  # an empty token, as `resume` has always taken it: the beginning
        if key not in groups:
            groups[key] = (_parsed(progress.action_id, key) if key else None, [])
        groups[key][1].append(progress)
    return list(groups.values())


def _parsed(action_id: str, token: str) -> Position:
    try:
        return Position.parse(token)
    except ValueError:
        raise ValueError(f"action {action_id!r}: {token[:40]!r} is not a position token") from None


async def read_until_settled(transport: Transport, trust: Trust, follows: Follows, timeout_s: float | None) -> None:
    """Apply every believed answer to its action's progress, one read per position, until all are settled or time is up.

    `timeout_s` is the wait for answers not given yet: it counts from when every read has read what was
    on the topics as it began, so a long history (a busy bus, an old position) is read to its end however
    long that takes, while it moves on; a read that stalls for `timeout_s` ends the wait too. Running out of
    time is not an error here: the caller reads off each progress where it stands. A read that fails (the
    broker gone, the topics missing) raises, and the other reads stop with it.
    """
    if not follows:
        return
    readers = [_Reader(start, progresses) for start, progresses in follows]
    reads = [asyncio.create_task(_read(transport, trust, reader)) for reader in readers]
    clock = asyncio.get_running_loop().time
    running = set(reads)
    try:
        while running:
            left = None if timeout_s is None else timeout_s - (clock() - max(reader.moved_at for reader in readers))
            if left is not None and left <= 0:
                break
            done, running = await asyncio.wait(running, timeout=left, return_when=asyncio.FIRST_EXCEPTION)
            for read in done:
                read.result()  # a read's failure, raised
    finally:
        # Each read is awaited here, its failure or cancellation retrieved: no future is left holding an exception that
        # nobody reads (a `gather` of reads cancelled at the timeout was, and asyncio logged its CancelledError on stderr).
        for read in reads:
            read.cancel()
        await asyncio.gather(*reads, return_exceptions=True)


@dataclass
class _Reader:
    """One read of the answer topics from `start` for the actions that share it, and how far along it is."""

    start: Position | None
    progresses: Sequence[Progress]
    caught_up: asyncio.Event = field(default_factory=asyncio.Event)
    moved_at: float = field(default_factory=lambda: asyncio.get_running_loop().time())  # when it last read history; then caught up

    def moved(self) -> None:
        self.moved_at = asyncio.get_running_loop().time()


async def _read(transport: Transport, trust: Trust, reader: _Reader) -> None:
    """One reader, until each of its actions is settled."""
    waiting = {p.action_id: p for p in reader.progresses}
    caught_up = asyncio.create_task(reader.caught_up.wait())
    caught_up.add_done_callback(lambda _: reader.moved())
    try:
        async for topic, event in transport.read(ANSWER_TOPICS, reader.start, caught_up=reader.caught_up):
            if not reader.caught_up.is_set():
                reader.moved()
            progress = waiting.get(getattr(event.data, "action_id", ""))
            if progress is not None and trust.believes(event) and progress.apply(topic, event) and settled(progress) is not None:
                del waiting[progress.action_id]
                if not waiting:
                    return
    finally:
        caught_up.cancel()
