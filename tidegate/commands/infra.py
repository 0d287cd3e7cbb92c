"""`tidegate infra up|down|status|reset`: the local Kafka and PostgreSQL the project runs itself."""

from __future__ import annotations

import subprocess
import time

import typer

from servicekit import REPO_ROOT, ToolCatalog, catalog_topic_names, ensure_topics
from tidegate.commands._common import console, fail, run, settings
from tidegate.commands.db import migrate_all

app = typer.Typer(help="Local infrastructure: Apache Kafka (KRaft) from Maven Central and PostgreSQL from Debian.", no_args_is_help=True)

SCRIPT = REPO_ROOT / "infra" / "infra.sh"


def _script(command: str, *args: str) -> int:
    return subprocess.call(["bash", str(SCRIPT), command, *args])


def _deployment_topic_names() -> list[str]:
    """The catalog's topics and the request/reply topics of every `topic` tool in the deployment's tool catalog."""
    cfg = settings()
    topic_tools = [t.name for t in ToolCatalog.load(cfg.tools_dir).values() if t.kind == "topic"] if cfg.tools_dir.is_dir() else []
    return catalog_topic_names(topic_tools)


async def _ensure_catalog_topics() -> list[str]:
    cfg = settings()
    return await ensure_topics(
        cfg.kafka_bootstrap,
        cfg.topic_prefix,
        _deployment_topic_names(),
        partitions=cfg.topic_partitions,
        produce_bytes_per_s=cfg.kafka_outside_produce_bytes_per_s,
    )


@app.command()
def up(
    brokers: int | None = typer.Option(
        None,
        "--brokers",
        min=1,
        max=9,
        help="Kafka nodes (KRaft, each broker and controller) when the storage is first formatted: 1 (default) or 3 for a"
        " cluster with replication factor 3 and min.insync.replicas 2. Fixed once formatted (`infra reset` to change).",
    ),
) -> None:
    """Start Kafka and PostgreSQL (installing or downloading what is missing) and create the topics."""
    if _script("up", *(["--brokers", str(brokers)] if brokers is not None else [])) != 0:
        fail("infrastructure did not come up; see the log paths above")
    started = time.monotonic()
    created = run(_ensure_catalog_topics())
    console.print(f"topics: {len(created)} created under prefix {settings().topic_prefix!r} ({time.monotonic() - started:.1f}s)")
    migrate_all()
    cfg = settings()
    console.print(
        f"outside clients: bootstrap {cfg.kafka_bootstrap}, SASL_PLAINTEXT + SCRAM-SHA-512, principal `agent`"
        f" (tools: `tool-<name>`); Java client properties: {cfg.kafka_credentials_dir / 'agent.properties'}"
        " (docs/security/bus.md)"
    )


@app.command()
def down() -> None:
    """Stop the Kafka and PostgreSQL processes that `infra up` started (data is kept)."""
    raise typer.Exit(_script("down"))


@app.command()
def status() -> None:
    """Say what runs, where, and where its logs are; exit 3 when something is stopped."""
    raise typer.Exit(_script("status"))


@app.command()
def reset(yes: bool = typer.Option(False, "--yes", help="Confirm deleting all local Kafka and PostgreSQL data.")) -> None:
    """Stop everything and delete local Kafka and PostgreSQL data (downloaded jars are kept)."""
    if not yes:
        fail("this deletes every local event and row; run again with --yes")
    raise typer.Exit(_script("reset"))
