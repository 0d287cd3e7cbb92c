"""Reading how earlier proposals ended: one read of the answer topics per position, however many actions it follows."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

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
    """Apply every believed answer to its action's progress, one read per position, until all are settled or `timeout_s` passed.

    Running out of time is not an error here: the caller reads off each progress where it stands.
    A read that fails (the broker gone, the topics missing) raises, and the other reads stop with it.
    """
    reads = [asyncio.create_task(_read(transport, trust, start, progresses)) for start, progresses in follows]
    limit = asyncio.timeout(timeout_s)
    try:
        async with limit:
            await asyncio.gather(*reads)
    except TimeoutError:
        if not limit.expired():  # a read's own timeout is a failure of that read, not the end of the wait
            raise
    finally:
        for read in reads:
            read.cancel()
        await asyncio.gather(*reads, return_exceptions=True)


async def _read(transport: Transport, trust: Trust, start: Position | None, progresses: Sequence[Progress]) -> None:
    """One reader from `start`, until each of `progresses` is settled."""
    waiting = {p.action_id: p for p in progresses}
    async for topic, event in transport.read(ANSWER_TOPICS, start):
        progress = waiting.get(getattr(event.data, "action_id", ""))
        if progress is not None and trust.believes(event) and progress.apply(topic, event) and settled(progress) is not None:
            del waiting[progress.action_id]
            if not waiting:
                return
