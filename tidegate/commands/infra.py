"""`tidegate infra up|down|status|reset`: the local Kafka and PostgreSQL the project runs itself."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime, timedelta

import typer

from servicekit import REPO_ROOT, ToolCatalog, catalog_topic_names, ensure_topics
from servicekit.bus_auth import read_mechanism
from servicekit.topics_admin import Ensured
from tidegate.commands._common import console, fail, run, settings
from tidegate.commands.db import migrate_all

app = typer.Typer(help="Local infrastructure: Apache Kafka (KRaft) from Maven Central and PostgreSQL from Debian.", no_args_is_help=True)

SCRIPT = REPO_ROOT / "infra" / "infra.sh"


def _script(command: str, *args: str) -> int:
    return subprocess.call(["bash", str(SCRIPT), command, *args])


def _deployment_topic_names() -> list[str]:
    """The catalog's topics and the request/reply topics of every `topic` tool in the deployment's tool catalog."""
    cfg = settings()
    topic_tools = [t.name for t in ToolCatalog.load(*cfg.tool_dirs).values() if t.kind == "topic"] if cfg.tools_dir.is_dir() else []
    return catalog_topic_names(topic_tools)


async def _ensure_catalog_topics() -> Ensured:
    cfg = settings()
    return await ensure_topics(
        cfg.kafka_bootstrap,
        cfg.topic_prefix,
        _deployment_topic_names(),
        partitions=cfg.topic_partitions,
        produce_bytes_per_s=cfg.kafka_outside_produce_bytes_per_s,
        ops_produce_bytes_per_s=cfg.kafka_ops_produce_bytes_per_s,
        approval_produce_bytes_per_s=cfg.kafka_approval_produce_bytes_per_s,
        services_produce_bytes_per_s=cfg.kafka_services_produce_bytes_per_s,
    )


def say_aligned(ensured: Ensured) -> None:
    """Each existing topic `ensure_topics` gave the catalog's configs, and each quota it changed (nothing said when none)."""
    for line in ensured.changes():
        console.print(line, highlight=False)


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
    say_aligned(created)
    migrate_all()
    cfg = settings()
    console.print(
        f"outside clients: bootstrap {cfg.kafka_bootstrap}, SASL_PLAINTEXT + "
        f"{read_mechanism(cfg.kafka_credentials_dir / 'agent.properties')}, principal `agent`"
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


@app.command("rotate-login")
def rotate_login(
    principal: str = typer.Argument(..., help="The Kafka principal whose password to rotate (ops, a service, agent, tool-<name>, admin)."),
    finish: bool = typer.Option(
        False, "--finish", help="Retire the former password (overwritten, never deleted), once every client has the new file."
    ),
    leaked: bool = typer.Option(
        False, "--leaked", help="The password may have leaked: the new one at once, the former refused now, no overlap."
    ),
) -> None:
    """Give a Kafka login a new password with no downtime: both work until --finish, then only the new one.

    The new password is set on the SCRAM mechanism the login does not use (the broker takes SCRAM-SHA-512 and -256) and
    written to `<principal>.properties`; the former file is kept as `<principal>.properties.former` until --finish
    retires the former credential (a password nobody holds: a deleted SCRAM credential locks SCRAM-SHA-512 out at the
    broker's next start). Each step checks at the broker, by logging in, what it says. `admin` is also the brokers' own
    login to each other (`server.properties`, written at each node's start): restart every node between the two steps
    (--finish refuses while a node's file, or the broker, says a node is still on the former login), and at once after --leaked.
    """
    from aiokafka.errors import KafkaError

    from servicekit import SERVICES
    from servicekit.bus_rotation import (
        SETTLE_S,
        RotationRefused,
        finish_rotation,
        former_file,
        rotate_now,
        session_max_s,
        start_rotation,
    )

    if finish and leaked:
        fail("--finish or --leaked, not both", code=2)
    cfg = settings()
    folder, bootstrap = cfg.kafka_credentials_dir, cfg.kafka_bootstrap
    kafka_dir = cfg.infra_dir / "kafka"
    configs = [kafka_dir / "server.properties", *sorted(kafka_dir.glob("node-*/server.properties"))]
    try:
        step = finish_rotation if finish else rotate_now if leaked else start_rotation
        # admin's password is also each node's own login to the others: its steps check the nodes' files
        nodes = {"broker_configs": configs} if principal == "admin" else {}
        done = run(step(bootstrap, folder, principal, **nodes))
    except RotationRefused as exc:
        fail(str(exc))
    path = folder / f"{principal}.properties"
    new = f"the new password ({done.mechanism}) {'logs in' if done.new_logs_in else 'DOES NOT LOG IN'}"
    old = f"the former ({done.former_mechanism}) {'is refused' if done.former_refused else 'still logs in'}"
    console.print(f"{principal}: {new}; {old}; client settings in {path}")
    if done.settled_s:
        console.print(f"(the broker took {done.settled_s:.1f} s to apply the change: the check tried again until it showed)")
    restart = f"`tidegate restart {principal}`" if principal in SERVICES else f"hand {path} to every client that logs in as {principal}"
    if principal == "ops":
        restart = "nothing to restart: the CLI reads the file at each command"
    if principal == "admin":
        restart = (
            "restart the broker (`tidegate infra down && tidegate infra up`; a cluster: one node at a time): each node logs in "
            "to the others as admin with the password its server.properties got at its start; the CLI reads admin's file at each command"
        )
        if leaked:
            restart += " (NOW: until then a node's own login to the others is refused at its next one)"
    if not finish and not leaked:
        if not done.new_logs_in or done.former_refused:
            fail(f"the overlap is not in place after {SETTLE_S:g} s ({new}; {old}): nothing is retired; look at the broker's log")
        console.print(
            f"next: {restart}; then `tidegate infra rotate-login {principal} --finish` (until then both passwords work; "
            f"the former login is in {former_file(folder, principal)})"
        )
        return
    if not done.new_logs_in or not done.former_refused:
        fail(f"rotation of {principal} not complete after {SETTLE_S:g} s: {new}; {old}")
    if leaked:
        console.print(f"next: {restart}")

        async def read_bound() -> tuple[float | None, Exception | None]:
            try:
                return await session_max_s(bootstrap, folder), None
            except (KafkaError, OSError) as exc:  # the rotation took (checked above): only the bound is not known
                return None, exc

        bound, unread = run(read_bound())
        if unread is not None:
            console.print(
                f"done: {principal} logs in with the new password only. The broker's session bound could not be read"
                f" ({type(unread).__name__}: {unread}): a connection opened with the former password lasts until the broker ends"
                " its login (TIDEGATE_KAFKA_SESSION_MAX_S) or, if it never does, until the broker restarts; see it with"
                " `tidegate infra up` (it warns about a node without the bound)"
            )
            return
        if bound is None:
            console.print(
                "the broker never ends a session (connections.max.reauth.ms 0: started before TIDEGATE_KAFKA_SESSION_MAX_S, or"
                " set to 0): a connection opened with the former password stays open until it closes. End them: restart the"
                " broker once the clients use the new file (`tidegate infra down && tidegate infra up`; a cluster: one node at"
                " a time); it then ends sessions after TIDEGATE_KAFKA_SESSION_MAX_S"
            )
        else:
            until = datetime.now(UTC) + timedelta(seconds=bound)
            console.print(
                f"done: {principal} logs in with the new password only; a connection opened with the former password is"
                f" closed at its first request after {until:%H:%M:%S} UTC at the latest (the broker ends every login after"
                f" {bound:g} s, connections.max.reauth.ms)"
            )
            return
    console.print(f"done: {principal} logs in with the new password only")
