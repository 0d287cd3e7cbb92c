"""`tidegate topics`: list the catalog's topics, create them on the broker, revoke the rights of prefixes gone."""

from __future__ import annotations

import json

import typer
from rich.table import Column, Table

from schemas import TOPICS
from servicekit import TopicCheck, check_topics, stale_rights
from servicekit.bus_acls import HeldRule, RightsCheck, check_rights
from servicekit.bus_admin import produce_rates, tools_of
from servicekit.bus_rights import ADMIN, PRINCIPALS
from servicekit.topics_admin import check_quotas, quota_line
from tidegate.commands._common import console, run, settings
from tidegate.commands.infra import _deployment_topic_names, _ensure_catalog_topics, say_aligned

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


EXIT_NOT_ALIGNED = 1


def _state(check: TopicCheck) -> str:
    """What `check` shows of one topic: ok, missing, or each value that is not the catalog's (now → asked)."""
    if check.missing:
        return "[red]missing[/red]"
    parts = [f"[red]{key} {now} → {asked}[/red]" for key, (now, asked) in check.misaligned.items()]
    parts += [f"own {key} {now} (catalog {asked}), kept" for key, (now, asked) in check.own.items()]
    return "; ".join(parts) or "ok"


def _rule_json(rule: HeldRule, state: str) -> str:
    return json.dumps({"rule": str(rule), "state": state, **vars(rule)})


def _print_rights(rights: RightsCheck, as_json: bool) -> None:
    """Each right the table grants that the broker lacks (a fault), each rule it holds beyond them (a warning), and a summary."""
    if as_json:
        for rule in rights.missing:
            print(_rule_json(rule, "missing"))
        for rule in rights.extra:
            print(_rule_json(rule, "extra"))
        summary = {"authorizer": rights.authorizer, "granted": rights.granted, "missing": len(rights.missing), "extra": len(rights.extra)}
        print(json.dumps({"rights": summary | {"ok": rights.ok}}))
        return
    if not rights.authorizer:
        console.print("rights: the broker has no authorizer, so it keeps no ACLs and enforces none (nothing to compare)")
        return
    for rule in rights.missing:
        console.print(f"[red]missing right[/red]: {rule}", markup=True, highlight=False)
    for rule in rights.extra:
        console.print(f"[yellow]WARNING[/yellow]: a rule the table does not grant: {rule}", highlight=False)
    if rights.missing:
        console.print(
            f"{len(rights.missing)} of the {rights.granted} rights the table grants are missing on the broker: `tidegate topics ensure`"
            " grants them (docs/security/bus.md)"
        )
    else:
        console.print(f"all {rights.granted} rights the table grants are on the broker")
    if rights.extra:
        console.print(
            f"{len(rights.extra)} rule{'' if len(rights.extra) == 1 else 's'} on the broker the table does not grant (kept by"
            " `ensure`): see that each is meant"
        )


def _crowded_steps(name: str) -> str:
    """What an operator does about junk on `control` or `directory` (`name`): whose login wrote it, and the two steps."""
    writers = [p for p, rights in PRINCIPALS.items() if p != ADMIN and name in rights.writes]
    rotations = " and ".join(f"`tidegate infra rotate-login {p} --leaked`" for p in writers)
    logins = " and ".join(f"`{p}`" for p in writers)
    return (
        f"Only the {logins} login (and `admin`) may write it, so junk there says its password is out: rotate it "
        f"({rotations}, then restart what uses it); set TIDEGATE_START_CHECKPOINTS=true on every service so that only "
        "their next start reads the junk, which cannot be deleted (docs/security/bus.md, 'Junk on control or directory')"
    )


@app.command()
def check(
    as_json: bool = typer.Option(
        False, "--json", help="One JSON object per topic, then one per right missing or rule extra, then one summing the rights up."
    ),
) -> None:
    """Compare the broker with the catalog and the table of rights: each topic, and each principal's ACLs. Changes nothing.

    Topics: present, stamped by the broker (LogAppendTime), never compacted. A topic missing, or whose timestamp type or
    cleanup policy is not the catalog's (a topic an older release created `CreateTime`, or one changed by hand), is a fault;
    a retention or partition count of the topic's own is shown and is not. Rights: every ACL the table
    (servicekit.bus_rights) grants each principal on this prefix, its tools' topics and the sandboxes; each one the broker
    lacks (a read right a release added, say) is named and is a fault; a rule the broker holds beyond them on those names
    is a warning. Produce quotas: each principal's on the broker that is not what the settings ask (what `ensure` sets) is
    a warning. Any fault exits 1: `tidegate topics ensure` mends them all (the topics' own settings kept). A broker
    without an authorizer is said in one line. Logs in as `admin`.
    """
    cfg = settings()
    names = _deployment_topic_names()
    checks = run(check_topics(cfg.kafka_bootstrap, cfg.topic_prefix, names, partitions=cfg.topic_partitions))
    rights = run(check_rights(cfg.kafka_bootstrap, cfg.topic_prefix, tools_of(names)))
    faults = [c for c in checks if not c.ok]
    if as_json:
        for c in checks:
            print(json.dumps({
                "topic": c.topic, "ok": c.ok, "missing": c.missing, "partitions": c.partitions, "catalog_partitions": c.asked_partitions,
                "config": dict(c.config), "misaligned": {k: {"now": n, "catalog": a} for k, (n, a) in c.misaligned.items()},
                "own": {k: {"now": n, "catalog": a} for k, (n, a) in c.own.items()},
                **({} if c.records is None else {"records": c.records, "crowded": c.crowded}),
            }))  # fmt: skip
    else:
        table = Table("partitions", "timestamp", "cleanup", "retention ms", "state")
        table.columns.insert(0, Column("topic", overflow="fold"))
        for c in checks:
            table.add_row(
                c.topic,
                "—" if c.partitions is None else str(c.partitions),
                c.config.get("message.timestamp.type", "—"),
                c.config.get("cleanup.policy", "—"),
                c.config.get("retention.ms", "—"),
                _state(c),
            )
        console.print(table)
        if faults:
            console.print(
                f"{len(faults)} of {len(checks)} topics are not as the catalog asks: `tidegate topics ensure` creates the missing ones and "
                "aligns the others (their own retention and partitions kept; docs/operations.md, 'Upgrading')"
            )
        else:
            console.print(f"all {len(checks)} topics are on the broker as the catalog asks")
        for c in checks:
            if c.crowded:
                console.print(
                    f"[yellow]warning:[/] {c.topic} holds {c.records:,} records, kept forever and read whole by every service "
                    f"before it serves (each start reads and dead-letters what is refused among them again): far more than are "
                    f"signed there"
                )
                console.print(f"  {_crowded_steps(c.topic.removeprefix(cfg.topic_prefix))}", highlight=False)
    _print_rights(rights, as_json)
    _print_quotas(run(check_quotas(cfg.kafka_bootstrap, _settings_rates(names))), as_json)
    if faults or not rights.ok:
        raise typer.Exit(EXIT_NOT_ALIGNED)


def _settings_rates(names: list[str]) -> dict[str, float | None]:
    """Each principal's produce quota as this shell's settings ask: what `tidegate topics ensure` and `infra up` set."""
    cfg = settings()
    return produce_rates(
        tools_of(names),
        produce_bytes_per_s=cfg.kafka_outside_produce_bytes_per_s,
        ops_produce_bytes_per_s=cfg.kafka_ops_produce_bytes_per_s,
        approval_produce_bytes_per_s=cfg.kafka_approval_produce_bytes_per_s,
        services_produce_bytes_per_s=cfg.kafka_services_produce_bytes_per_s,
    )


def _print_quotas(unlike: dict[str, tuple[float | None, float | None]], as_json: bool) -> None:
    """Each produce quota `ensure` would change (a warning: a quota bounds a login, it grants nothing), or that none would."""
    if as_json:
        for principal, (now, asked) in sorted(unlike.items()):
            print(json.dumps({"quota": principal, "now": now, "settings": asked}))
        return
    for principal, (now, asked) in sorted(unlike.items()):
        console.print(f"[yellow]WARNING[/yellow]: {quota_line(principal, now, asked)} (broker → settings)", highlight=False)
    if unlike:
        console.print(f"{len(unlike)} produce quota(s) not as the settings say: `tidegate topics ensure` sets them")
    else:
        console.print("every produce quota is as the settings say")


@app.command()
def ensure() -> None:
    """Create the missing catalog topics (and tool request/reply topics), grant every principal's ACLs, set the produce quotas.

    An existing topic whose cleanup policy or timestamp type is not the catalog's is given the catalog's, its own
    retention and partitions kept; each one changed is named with what changed, and each produce quota changed.
    Idempotent: run again, it says it created and changed nothing.
    """
    ensured = run(_ensure_catalog_topics())
    console.print(f"created {len(ensured)} topics" + (f": {', '.join(ensured)}" if ensured else " (all existed)"), highlight=False)
    say_aligned(ensured)
    if not ensured.aligned:
        console.print("changed no existing topic's configs (each has the catalog's cleanup policy and timestamp type)")
    if not ensured.quotas:
        console.print("changed no produce quota (each principal's is as the settings say)")


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
