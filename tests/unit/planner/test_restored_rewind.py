"""Where `tidegate db catch-up` moves the planner's consumer group back to (`services/planner/restored.py`), with its inputs faked."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from servicekit import KitSettings
from servicekit.bus_history import CLOCK_SKEW_S
from services.planner import restored

NEWEST = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # the newest task row of the restored database
NEWEST_MS = int(NEWEST.timestamp() * 1000)


class _Pool:
    def __init__(self, newest: datetime | None) -> None:
        self.newest = newest
        self.asked: list[tuple[Any, ...]] = []

    async def fetchval(self, sql: str, *args: Any) -> datetime | None:
        self.asked.append(args)
        return self.newest


@pytest.fixture
def moved_to(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []

    async def rewind_group(bootstrap: str, prefix: str, names: list[str], group: str, since_ms: int | None, **_: Any) -> list[Any]:
        calls.append((prefix, tuple(names), group, since_ms))
        return []

    monkeypatch.setattr(restored, "rewind_group", rewind_group)
    return calls


@pytest.mark.parametrize(
    ("newest", "since_ms", "expected"),
    [
        (NEWEST, None, NEWEST_MS - int(CLOCK_SKEW_S * 1000)),  # a minute before the newest row
        (NEWEST, NEWEST_MS - 3_600_000, NEWEST_MS - 3_600_000),  # an earlier --since (a planner behind at the backup)
        (NEWEST, NEWEST_MS + 3_600_000, NEWEST_MS - int(CLOCK_SKEW_S * 1000)),  # a later --since never skips what it lacks
        (None, None, None),  # a database with no task of the deployment: from the earliest record kept
        (None, NEWEST_MS, NEWEST_MS),
    ],
)
async def test_the_group_is_moved_back_to_the_newest_row_less_the_skew_or_an_earlier_since(
    moved_to: list[tuple[Any, ...]], newest: datetime | None, since_ms: int | None, expected: int | None
) -> None:
    pool = _Pool(newest)
    await restored.rewind(KitSettings(topic_prefix="dep."), pool, since_ms=since_ms, client="options")  # type: ignore[arg-type]
    assert pool.asked == [("dep.",)]  # the newest row of this deployment's tasks
    assert moved_to == [("dep.", ("tasks", "actions.decided", "approvals", "actions.results"), "dep.planner", expected)]


def test_the_topics_moved_back_are_every_topic_the_planner_may_read() -> None:
    from servicekit.bus_rights import rights_of

    assert set(restored.READS) == set(rights_of("planner").reads)
