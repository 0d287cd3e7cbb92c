"""`tidegate lag`: how far behind the bus each service's consumer groups are, and what that holds up."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import typer

from tidegate.commands._common import console, fail, run, settings, shown
from tidegate.commands._whole_ids import print_listing
from tidegate.ops.lag import GROUPS, GroupLag, read_lag

__all__ = ["app"]

app = typer.Typer(help="Consumer-group lag of each service.")

EXIT_STUCK = 1  # a group behind that no one reads, or a group that could not be asked
SERVICES = sorted({g.service for g in GROUPS})


def _at(value: datetime | None, now: datetime) -> str:
    if value is None:
        return ""
    seconds = max(0, int((now - value).total_seconds()))
    waited = f"{seconds} s" if seconds < 120 else f"{seconds // 60} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S} ({waited} ago)"


def _reading(g: GroupLag) -> str:
    if g.error:
        return "[red]not asked[/]"
    if g.members == 0:
        return f"[red]nobody[/] ({g.state or 'no group'})" if g.lag else f"nobody ({g.state or 'no group'})"
    members = f"{g.members} member{'s' if g.members != 1 else ''} ({g.state})"
    return f"{members}, [red]{len(g.unread)} partition(s) held by none[/]" if g.unread else members


def _as_json(g: GroupLag) -> str:
    return json.dumps({
        "group": g.full_name, "service": g.group.service, "state": g.state, "members": g.members, "lag": g.lag, "stuck": g.stuck,
        "oldest_at": g.oldest_at.isoformat() if g.oldest_at else None, "behind_means": g.group.behind, "error": g.error or None,
        "partitions": [
            {"topic": p.topic, "partition": p.partition, "committed": p.committed, "start": p.start, "end": p.end, "lag": p.lag,
             "oldest_at": p.oldest_at.isoformat() if p.oldest_at else None, "reader": p.reader}
            for p in g.partitions
        ],
    })  # fmt: skip


@app.command("lag")
def lag(
    service: list[str] = typer.Option([], "--service", help=f"Only this service's groups (repeatable): {', '.join(SERVICES)}."),
    every_partition: bool = typer.Option(False, "--all", help="List every partition, not only those behind."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.5, help="Seconds to wait for the broker, per group."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines: one object a line per group, its partitions in it."),
) -> None:
    """How far behind each service's consumer groups are: per partition committed, end, lag; who reads; what the lag holds up.

    Asked without joining any group (no rebalance), as Kafka login `admin` when this machine holds it, else as each
    group's own service. Exit 1 when a group is behind and no one reads it (its service is down: it will not catch up
    by itself), or when a group could not be asked; 0 otherwise (a lag that is being read is traffic, not an incident).
    """
    unknown = sorted(set(service) - set(SERVICES))
    if unknown:
        raise typer.BadParameter(
            f"{', '.join(unknown)}: not a service with a consumer group ({', '.join(SERVICES)})", param_hint="--service"
        )
    kit = settings()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # each group's error is said below, once, not aiokafka's reconnect lines
    found = run(read_lag(kit, service, timeout_s=timeout))
    if not as_json and all(g.error for g in found) and len({g.error for g in found}) == 1:
        fail(f"Kafka at {kit.kafka_bootstrap}: no group could be asked ({found[0].error}): is the broker up? (`tidegate infra status`)")
    if as_json:
        for g in found:
            typer.echo(_as_json(g))
        raise typer.Exit(EXIT_STUCK if any(g.stuck or g.error for g in found) else 0)
    now = datetime.now(UTC)
    rows = [(shown(g.full_name, None), g.group.service, _reading(g), f"{g.lag:,}", _at(g.oldest_at, now)) for g in found]
    print_listing(
        ("group", "service", "reading", "behind", "oldest unhandled (UTC)"),
        rows,
        title=f"consumer groups of prefix {shown(kit.topic_prefix)}",
    )
    for g in found:
        if g.error:
            console.print(f"[red]{shown(g.full_name, None)}[/]: {shown(g.error, None)}", soft_wrap=True)
            continue
        unread = g.unread
        shown_partitions = [p for p in g.partitions if every_partition or p.lag or p in unread]
        if not shown_partitions:
            continue
        console.print(f"[bold]{shown(g.full_name, None)}[/] ({g.group.service}), {g.lag:,} behind: {g.group.behind}", soft_wrap=True)
        for p in shown_partitions:
            committed = "never committed" if p.committed is None else f"committed {p.committed:,}"
            oldest = f", oldest written {_at(p.oldest_at, now)}" if p.oldest_at else ""
            reader = "" if not g.members else f", read by {shown(p.reader, None)}" if p.reader else ", [red]held by no member[/]"
            console.print(f"  {shown(p.topic)}[{p.partition}]: {committed}, end {p.end:,}, lag {p.lag:,}{oldest}{reader}", soft_wrap=True)
        if unread:
            console.print(
                f"  [red]{len(unread)} partition(s) read by no one[/]: the group has {g.members} member(s) and is settled "
                f"({g.state}), yet no member holds them, so what is written there waits however long the {g.group.service} runs "
                f"(a consumer that lost its assignment); `tidegate restart {g.group.service}` makes its copies join again, "
                "and they read on from the committed offsets",
                soft_wrap=True,
            )
        elif g.stuck:
            console.print(
                f"  [red]no one reads it[/]: the {g.group.service} is not running (`tidegate status`; start it, or "
                f"`tidegate restart {g.group.service}` under `tidegate up`); it resumes from the committed offsets, nothing is skipped",
                soft_wrap=True,
            )
    behind = [g for g in found if g.lag and not g.error]
    if not behind and not any(g.error for g in found):
        console.print("every group has handled everything on the bus")
    raise typer.Exit(EXIT_STUCK if any(g.stuck or g.error for g in found) else 0)
