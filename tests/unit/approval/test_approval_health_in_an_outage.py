"""PostgreSQL down: the approval's `/health` says which database and for how long, as the four other services do (oncall22 F2).

The on-call stopped PostgreSQL for 72 s under `tidegate up`. `tidegate status` showed four services `retrying: the database
at 127.0.0.1:52432/tidegate has not answered for 37s (ConnectionRefusedError: …)`, and the approval alone
`retrying: ConnectionRefusedError(111, "Connect call failed …")`: its expiry sweep's own retried error, shown before the
outage's words, so neither how long nor which database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from servicekit import KitSettings
from servicekit.db_outage import DatabaseWatch
from services.approval.app import ApprovalDeps, build
from tests.unit.approval.test_approval_database_down import DownRepository

REFUSED = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 52432)")


class BusyPool:
    """A pool whose every connection is in use: the watch's own probe waits (the sweep is what meets the outage here)."""

    def get_idle_size(self) -> int:
        return 0

    def get_size(self) -> int:
        return 1

    def get_max_size(self) -> int:
        return 1


async def test_the_approvals_health_names_the_database_and_how_long_not_its_sweeps_bare_error(
    tmp_path: Path, wait_for: Callable[..., Awaitable[Any]]
) -> None:
    repo = DownRepository(down=REFUSED)
    (tmp_path / "keys").mkdir()
    process = build(KitSettings(keys_dir=tmp_path / "keys", tools_dir=tmp_path / "no-tools"), deps=ApprovalDeps(repo=repo))
    watch = DatabaseWatch("approval", BusyPool(), "127.0.0.1:52432/tidegate")  # type: ignore[arg-type]
    process.database = watch  # what `start` sets once the pool is open
    watch.failed(REFUSED)  # the pool reconnecting met the outage
    sweep = asyncio.create_task(process.loops[0]())  # the expiry sweep meets it too, and reports its own error
    try:
        await wait_for(lambda: process.bus.liveness.last_error is not None, what="the sweep to report its error")
        retrying = process.health()["retrying"]
        assert retrying.startswith("the database at 127.0.0.1:52432/tidegate has not answered for ")
        assert "(ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 52432))" in retrying

        watch.answered()  # it answers again; the sweep's error stays shown until a sweep reads the database, as before
        assert process.health()["retrying"] == repr(REFUSED)
    finally:
        sweep.cancel()
        await watch.close()
