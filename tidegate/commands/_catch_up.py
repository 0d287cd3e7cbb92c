"""`tidegate db catch-up`: after restoring the database from a backup, before `tidegate up` (docs/operations.md)."""

from __future__ import annotations

from datetime import datetime

import typer

from tidegate.commands._common import console, fail, run, settings

__all__ = ["catch_up"]


def catch_up(
    since: datetime | None = typer.Option(
        None,
        "--since",
        help="Read the bus from this time (the backup's, or a little before it) instead of from its earliest record; the "
        "planner is handed again what it handled since then when its database's newest row is later.",
    ),
) -> None:
    """Write back what the bus says the executor, the approval service and the policy did since the backup: run with the services down.

    Each result the executor signed whose action has no finished claim becomes its finished claim (never run again);
    each request the approval service announced since is rebuilt, and each decision it signed of a request still pending
    is recorded; each decision the policy signed is recorded as taken, with its reservation, spend and payout (never
    decided again), then each result it has not recorded ends its reservation. Last, the planner's own handlers are
    handed again, in the order the broker appended them, the events of its four topics since its database's newest
    task row (less a minute, or `--since` when earlier) up to what its consumer group had handled: its tasks are where
    they were, nothing is published again. Every event is verified with the
    deployment's keys; one of `actions.results`, `approvals` or `actions.decided` that does not verify stops it (exit 1),
    and so does a planner still running. Idempotent. Exit 0 when caught up.
    """
    from servicekit.bus_history import HistoryNotReadable
    from tidegate.ops.catch_up import NotCaughtUp
    from tidegate.ops.catch_up import catch_up as read_and_write

    kit = settings()
    since_ms = None if since is None else int((since if since.tzinfo else since.astimezone()).timestamp() * 1000)
    try:
        done = run(read_and_write(kit, since_ms=since_ms, say=console.print))
    except (NotCaughtUp, HistoryNotReadable) as exc:  # a record that does not verify, a planner running, a login without its rights
        fail(str(exc))
    for what, n in sorted(done.counts.items()):
        console.print(f"  {what}: {n}")
    for note in done.notes:
        console.print(f"  note: {note}")
    console.print("caught up: the executor, the approval service, the policy and the planner may start (`tidegate up`)")
