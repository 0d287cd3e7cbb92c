"""`tidegate topics`: list the catalog's topics and create them on the broker."""

from __future__ import annotations

import typer
from rich.table import Table

from schemas import TOPICS
from tidegate.commands._common import console, run, settings
from tidegate.commands.infra import _ensure_catalog_topics

app = typer.Typer(help="The topic catalog: list it, create it on the broker.", no_args_is_help=True)


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
