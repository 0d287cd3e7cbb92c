"""`tidegate topics`: list the catalog's topics, create them on the broker, revoke the rights of prefixes gone."""

from __future__ import annotations

import typer
from rich.table import Table

from schemas import TOPICS
from servicekit import stale_rights
from tidegate.commands._common import console, run, settings
from tidegate.commands.infra import _ensure_catalog_topics

app = typer.Typer(help="The topic catalog: list it, create it on the broker, prune rights left by prefixes gone.", no_args_is_help=True)


@app.command("list")
def list_() -> None:
    """Print every catalog topic with its events, partitions (as `ensure` creates it: TIDEGATE_TOPIC_PARTITIONS) and retention."""
    cfg = settings()
    prefix = cfg.topic_prefix
    table = Table("topic", "events", "partitions", "retention", "producers → consumers")
    for spec in TOPICS.values():
        retention = "forever" if spec.retention_ms < 0 else f"{spec.retention_ms // 86_400_000} d"
        events = ", ".join(str(e.model_fields["type"].default).removeprefix("tidegate.") for e in spec.events)
        table.add_row(
            prefix + spec.name,
            events,
            str(spec.partitions_given(cfg.topic_partitions)),
            retention,
            f"{', '.join(spec.producers)} → {', '.join(spec.consumers)}",
        )
    console.print(table)


@app.command()
def ensure() -> None:
    """Create the missing catalog topics (and tool request/reply topics) on the broker."""
    created = run(_ensure_catalog_topics())
    console.print(f"created {len(created)} topics" + (f": {', '.join(created)}" if created else " (all existed)"))


@app.command()
def prune(yes: bool = typer.Option(False, "--yes", help="Revoke them (without it, only list them).")) -> None:
    """List the prefixes whose ACLs remain on the broker with no topic left under them; with --yes, revoke those ACLs.

    A test or benchmark stopped before it cleaned up, or a deployment retired by deleting its topics, leaves
    its rights behind: they would grant every principal its old access to any topic created under that
    prefix later. Logs in as `admin`. A prefix that a live prefix lies under counts as live.
    """
    cfg = settings()
    stale = run(stale_rights(cfg.kafka_bootstrap, revoke=yes))
    if not stale:
        console.print("no rights of a prefix without topics")
        return
    for prefix, tools in stale.items():
        console.print(f"{prefix}" + (f"  (tools: {', '.join(tools)})" if tools else ""))
    prefixes = f"{len(stale)} prefix{'' if len(stale) == 1 else 'es'} without topics"
    done = f"revoked the rights of {prefixes}"
    console.print(done if yes else f"rights remain for {prefixes}; `tidegate topics prune --yes` revokes them")
