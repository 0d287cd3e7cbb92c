"""`tidegate killswitch set|clear|list`: stop a tool, a tenant, or a tool for one tenant, everywhere, at once."""

from __future__ import annotations

import getpass

import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.table import Table

from schemas import ControlKillswitch, ControlKillswitchData, decode
from servicekit import OPS, ControlState, KitSettings, kafka_options
from tidegate.commands._common import console, publish_control, run, settings

__all__ = ["app", "publish_killswitch", "read_control"]

app = typer.Typer(help="Kill switches on the `control` topic: effective within a second, no restart.", no_args_is_help=True)

TOOL = typer.Option("*", "--tool", help="Tool to stop, or `*` for every tool.")
TENANT = typer.Option("*", "--tenant", help="Tenant to stop, or `*` for every tenant.")


async def publish_killswitch(kit: KitSettings, *, tenant: str, tool: str, active: bool, reason: str, set_by: str) -> ControlKillswitch:
    """Publish a kill switch record (key `killswitch:<tenant>:<tool>`, so compaction keeps the newest)."""
    event = ControlKillswitch.build(
        ControlKillswitchData(tenant_id=tenant, tool=tool, active=active, reason=reason, set_by=set_by), source="tidegate/cli"
    )
    await publish_control(kit, event)
    return event


async def read_control(kit: KitSettings, name: str = "control", state: ControlState | None = None) -> ControlState:
    """Read `control` (or `directory`, into `state`) from the beginning to its current end and return the state it describes."""
    state = state if state is not None else ControlState()
    topic = f"{kit.topic_prefix}{name}"
    consumer = AIOKafkaConsumer(bootstrap_servers=kit.kafka_bootstrap, enable_auto_commit=False, **kafka_options(kit, OPS))
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()  # no public metadata refresh in aiokafka
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return state
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)

        async def behind() -> bool:
            return any([await consumer.position(tp) < end for tp, end in ends.items()])

        while await behind():
            batch = await consumer.getmany(*tps, timeout_ms=1000, max_records=500)
            for records in batch.values():
                for record in records:
                    try:
                        await state.apply(decode(name, record.value or b""))
                    except ValueError:
                        continue  # an invalid record is the services' to dead-letter; the listing skips it
    finally:
        await consumer.stop()
    return state


@app.command("set")
def set_(
    tool: str = TOOL,
    tenant: str = TENANT,
    reason: str = typer.Option(..., "--reason", help="Why (recorded, shown in every denial)."),
    by: str = typer.Option(None, "--by", help="Who (default: the OS user)."),
) -> None:
    """Set a kill switch: every matching proposal is denied `kill_switch`, and the executor refuses matching calls."""
    if tool == "*" and tenant == "*":
        console.print("[yellow]warning:[/] stopping every tool for every tenant")
    run(publish_killswitch(settings(), tenant=tenant, tool=tool, active=True, reason=reason, set_by=by or getpass.getuser()))
    console.print(f"kill switch set: tenant={tenant} tool={tool}")


@app.command()
def clear(
    tool: str = TOOL,
    tenant: str = TENANT,
    by: str = typer.Option(None, "--by", help="Who (default: the OS user)."),
    reason: str = typer.Option("", "--reason", help="Why it is cleared."),
) -> None:
    """Clear the kill switch of exactly this scope (tenant, tool)."""
    run(publish_killswitch(settings(), tenant=tenant, tool=tool, active=False, reason=reason, set_by=by or getpass.getuser()))
    console.print(f"kill switch cleared: tenant={tenant} tool={tool}")


@app.command("list")
def list_() -> None:
    """List the active kill switches (read from the `control` topic)."""
    state = run(read_control(settings()))
    if not state.killswitches:
        console.print("no active kill switch")
        return
    table = Table("tenant", "tool", "reason", "set by", "since")
    for (tenant, tool), event in sorted(state.killswitches.items()):
        table.add_row(tenant, tool, event.data.reason, event.data.set_by, event.time.isoformat(timespec="seconds"))
    console.print(table)
