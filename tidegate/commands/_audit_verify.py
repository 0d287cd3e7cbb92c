"""`tidegate audit verify`: the chains and checkpoints; on request the bus's checkpoints, completeness, content, signatures, archives."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import typer
from aiokafka.errors import KafkaError
from rich.markup import escape

from servicekit import OPS, Keyring, deployment_authority, kafka_options
from servicekit.bus_history import HistoryNotReadable, handled_offsets
from services.audit import (
    ArchiveReport,
    CompletenessReport,
    ContentReport,
    Missing,
    PostgresAuditLog,
    VerifyReport,
    check_complete,
    check_content,
    read_published_checkpoints,
    recorded_missing,
    starting_heads,
    verify_log,
)
from tidegate.commands._audit_archive import checked_archives, print_archives, verify_archives_only
from tidegate.commands._audit_log import row_recheck, with_audit_log
from tidegate.commands._audit_story import check_fingerprints, offline_recheck, read_scope
from tidegate.commands._common import console, err_console, fail, run, settings
from tidegate.commands._progress import progress_display

__all__ = ["verify"]

AUDIT_LOGIN = "audit"  # the audit service's Kafka login, and its consumer group's name (`bus_rights`)


_VERIFY_EVERY = 5000  # rows between two progress reports (verify reads thousands of rows a second)


class _Reporting:
    """The log as `verify_log` reads it, telling `progress` how many chain rows were read of the `total` the chains' heads hold."""

    def __init__(self, log: PostgresAuditLog, total: int, progress: Callable[[int, int], None]) -> None:
        self._log, self._total, self._progress, self.read = log, total, progress, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)

    async def chain_rows(self, topic: str, partition: int, first: int = 1, last: int | None = None) -> AsyncIterator[Any]:
        """The chain's rows, as the log yields them, counted."""
        async for row in self._log.chain_rows(topic, partition, first, last):
            self.read += 1
            if self.read % _VERIFY_EVERY == 0:
                self._progress(self.read, self._total)
            yield row
        self._progress(self.read, self._total)


async def _reporting(
    log: PostgresAuditLog, prefix: str, progress: Callable[[int, int], None], starts: dict[tuple[str, int], Any] | None = None
) -> PostgresAuditLog:
    """`log`, reporting the rows `verify_log` reads to `progress` (rows read, rows its chains hold by their heads from `starts` on)."""
    starts = starts or {}
    total = sum(head.seq - (starts[tp].seq - 1 if tp in starts else 0) for tp, head in (await log.heads(prefix)).items())
    progress(0, total)
    return cast(PostgresAuditLog, _Reporting(log, total, progress))  # the same log to `verify_log`: every other read passes through


def verify(
    bus: bool = typer.Option(False, "--bus", help="Also compare with the checkpoints published on Kafka (catches deleted checkpoints)."),
    complete: bool = typer.Option(
        False, "--complete", help="Also prove every offset the bus still holds (every topic, partition) has its row; list the missing."
    ),
    content: bool = typer.Option(
        False,
        "--content",
        help="Also compare each row whose offset the bus still holds with the bus's record there (timestamp, key, headers, value): "
        "names a row the audit service did not write. Reads every record the bus keeps.",
    ),
    signatures: bool = typer.Option(
        False,
        "--signatures",
        help="Also observe each row stored as a valid event again with the deployment's keys: names a row claiming a signature "
        "its value does not carry (about ten times the time of the chains alone).",
    ),
    catch_up_s: float = typer.Option(
        15.0,
        "--catch-up-s",
        min=0,
        help="With --complete: how long the newest records of a partition may take to be recorded (the audit service "
        "is a poll behind on a live deployment) before they count as missing. 0: report them at once.",
    ),
    from_checkpoint: int | None = typer.Option(
        None,
        "--from-checkpoint",
        min=1,
        help="Check each chain only from the heads this signed checkpoint holds on (fast, incremental); the rows before are not re-hashed.",
    ),
    archives: list[Path] = typer.Option(
        [],
        "--archive",
        help="Verify this archive file offline (repeat for a sequence of archives); no database is read unless --with-log.",
    ),
    with_log: bool = typer.Option(
        False, "--with-log", help="With --archive: also verify the live log, and that the archives are the ones its prunes recorded."
    ),
    trust_keys: list[str] = typer.Option(
        [],
        "--trust-key",
        metavar="SHA256",
        help="With --archive: also trust the audit key the file carries with this fingerprint (sha256 of the raw public key, as "
        "`audit export` printed it; confirm it with the deployment's operator). Repeat for each key (one a rotation).",
    ),
    require_attested: bool = typer.Option(
        False,
        "--require-attested",
        help="With --archive: a file whose header the audit key did not attest (written before Tidegate 21, or its attestation "
        "removed) is a break, not a note.",
    ),
    attested_by: list[str] = typer.Option(
        [],
        "--attested-by",
        metavar="SHA256",
        help="With --archive: the fingerprint of the audit key current when the file was written (`audit export` printed it); a "
        "header attested by another key, or not attested, is a break: an attestation proves the retirement of the other "
        "keys, never its own key's. Repeat for files written under different keys.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Recompute every hash chain of the deployment and check its signed checkpoints; exit 1 on a broken link or a missing record."""
    kit = settings()
    if trust_keys and not archives:
        fail("--trust-key trusts a key an archive file carries: give --archive FILE too")
    if require_attested and not archives:
        fail("--require-attested is about archive files' headers: give --archive FILE too")
    if attested_by and not archives:
        fail("--attested-by is about archive files' headers: give --archive FILE too")
    check_fingerprints("--trust-key", trust_keys)
    check_fingerprints("--attested-by", attested_by)
    if archives and not with_log:
        scope = read_scope(archives)
        rows_checked = offline_recheck(archives, scope, trust_keys) if signatures else None  # with the keys the files carry
        if signatures and not as_json:
            console.print("holding every row of the files to its own signature too (--signatures)")
        verify_archives_only(
            archives, Keyring.load(kit.keys_dir, "audit"), as_json=as_json, trust=trust_keys, require_attested=require_attested,
            attested_by=attested_by,
            recheck=rows_checked,
        )  # fmt: skip
        return

    def waiting(newest: list[Missing]) -> None:
        count = sum(m.count for m in newest)
        err_console.print(f"waiting up to {catch_up_s:g} s for the audit service to record the newest {count} record(s) of the bus")

    archived: ArchiveReport | None = None
    compared: ContentReport | None = None
    recheck = row_recheck(kit) if signatures else None

    async def go(log: PostgresAuditLog) -> tuple[VerifyReport, CompletenessReport | None]:
        options = kafka_options(kit, OPS)
        published = await read_published_checkpoints(kit.kafka_bootstrap, kit.topic_prefix, client_options=options) if bus else []
        keyring = Keyring.load(kit.keys_dir, "audit")
        labels = {"rows": "verifying the chains", "content": "comparing rows with the bus"}
        with progress_display(labels, quiet=as_json) as progress:
            try:
                starts = await starting_heads(log, keyring, prefix=kit.topic_prefix, from_checkpoint=from_checkpoint)
                counted = await _reporting(log, kit.topic_prefix, lambda done, total: progress("rows", done, total), starts)
                report = await verify_log(
                    counted, keyring, prefix=kit.topic_prefix, extra_checkpoints=published, from_checkpoint=from_checkpoint,
                    recheck=recheck, operators=deployment_authority(kit),
                )  # fmt: skip
            except LookupError as exc:
                raise ConnectionError(str(exc)) from None  # one line, exit 1: there is nothing to start from
            if content:
                nonlocal compared
                compared = await check_content(
                    log, kit.kafka_bootstrap, kit.topic_prefix, client_options=options,
                    progress=lambda done, total: progress("content", done, total), acknowledged=_acknowledged(report),
                )  # fmt: skip
        if archives:
            prunes = await log.prunes(kit.topic_prefix)
            live_from = report.kept_from if report.kept_from_reason == "pruned" else None
            nonlocal archived
            archived = checked_archives(
                archives, keyring, prunes=prunes, live_from=live_from, trust=trust_keys, require_attested=require_attested,
                attested_by=attested_by,
                recheck=recheck,  # the archived rows held to their own signatures too, with the deployment's keys
            )  # fmt: skip
        if not complete:
            return report, None
        found = await check_complete(
            log, kit.kafka_bootstrap, kit.topic_prefix, client_options=options, catch_up_s=catch_up_s, waiting=waiting
        )
        if not found.missing:
            return report, found
        return report, found.model_copy(update={"missing": recorded_missing(found.missing, await _committed_by_audit(kit, found))})

    report, completeness = run(with_audit_log(go))
    if as_json:
        doc = json.loads(report.model_dump_json())
        if completeness is not None:
            doc["completeness"] = json.loads(completeness.model_dump_json())
        if archived is not None:
            doc["archives"] = json.loads(archived.model_dump_json())
        if compared is not None:
            doc["content"] = json.loads(compared.model_dump_json())
        console.print_json(json.dumps(doc))
    else:
        rate = report.rows / report.seconds if report.seconds else 0.0
        console.print(
            f"checked {report.rows} rows in {report.chains} chain(s) and {report.checkpoints} checkpoint(s) "
            f"in {report.seconds:.2f} s ({rate:,.0f} rows/s)"
        )
        _print_start(report)
        _print_signed(report)
        if report.signatures_checked is not None:
            console.print(
                f"observed every row again from its own value ({report.signatures_checked} stored as valid events: their signatures "
                "checked); each row's columns, verdict and duplicate flag held to it"
            )
        for acked in report.acknowledged:
            console.print(f"[yellow]acknowledged:[/] {escape(acked.describe())}", soft_wrap=True)
        if report.ok:
            console.print("[bold green]intact:[/] every chain and checkpoint checks out")
        else:
            err_console.print(f"[bold red]BROKEN:[/] {report.breaks[0].describe()}")
            for brk in report.breaks[1:]:
                err_console.print(f"  also: {brk.describe()}")
        if not bus:
            # The database's own checkpoints prove nothing to someone who can rewrite the database: the published copies can.
            none = " (none is stored)" if report.rows and not report.checkpoints else ""
            err_console.print(
                f"checked against the checkpoints stored in the database{none}: a superuser can rewrite the chains and delete those; "
                "add --bus to compare with the checkpoints the audit published on Kafka"
            )
        if completeness is not None:
            _print_completeness(completeness)
        if compared is not None:
            _print_content(compared)
        if archived is not None:
            print_archives(archived)
    if any(part is not None and not part.ok for part in (report, completeness, compared, archived)):
        raise typer.Exit(1)


def _acknowledged(report: VerifyReport) -> set[tuple[str, int, int, bytes, int]]:
    """The conflicts operators acknowledged, as `check_content` lists their rows apart."""
    return {(a.topic, a.partition, a.offset, bytes.fromhex(a.record_sha256), a.seq) for a in report.acknowledged if a.seq is not None}


def _print_content(c: ContentReport) -> None:
    console.print(f"compared {c.compared} row(s) of {c.partitions} partitions with the records the bus holds in {c.seconds:.2f} s")
    if c.not_on_bus:
        err_console.print(f"{c.not_on_bus} row(s) of chains whose partition the bus does not have: not compared")
    for m in c.acknowledged:
        console.print(f"[yellow]acknowledged:[/] {escape(m.describe())}", soft_wrap=True)
    if c.ok:
        but = f", but the {len(c.acknowledged)} row(s) of acknowledged conflicts" if c.acknowledged else ""
        console.print(f"[bold green]as on the bus:[/] every row the bus can vouch for holds the bus's record{but}")
        return
    err_console.print(f"[bold red]NOT AS ON THE BUS:[/] {len(c.mismatches)} row(s) differ from the bus")
    for m in c.mismatches[:50]:
        err_console.print(f"  {escape(m.describe())}", soft_wrap=True)
    if len(c.mismatches) > 50:
        err_console.print(f"  … and {len(c.mismatches) - 50} more (--json lists them all)")


def _print_start(report: VerifyReport) -> None:
    if report.kept_from_reason == "pruned":
        console.print(
            f"the log is pruned through checkpoint {report.kept_from}: each chain checked from the head it signed; "
            f"{report.rows_before} earlier row(s) are archived (verify them with --archive), "
            f"{report.checkpoints_before} earlier checkpoint(s) checked for signature and id only"
        )
    elif report.kept_from_reason == "requested":
        console.print(
            f"[yellow]incremental:[/] each chain checked from the heads of checkpoint {report.kept_from} on; "
            f"{report.rows_before} earlier row(s) were not re-hashed, {report.checkpoints_before} earlier checkpoint(s) "
            "checked for signature and id only"
        )


def _when(at: datetime) -> str:
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}"
    return f"{max(seconds, 0):.0f} s"


def _print_signed(report: VerifyReport) -> None:
    """The newest checkpoint and the rows past it; every restore, and what each superseded (`--bus`)."""
    newest = report.newest
    if newest is None:
        console.print(f"[yellow]no checkpoint:[/] none of the {report.rows_unsigned} row(s) is signed yet")
    else:
        console.print(
            f"newest checkpoint: {newest.checkpoint_id}, taken {_when(newest.taken_at)} ({_age(newest.age_s)} ago); "
            f"{report.rows_unsigned} row(s) lie past it, unsigned yet"
        )
    for r in report.restores:
        taken = f"taken {_when(r.taken_at)}" if r.taken_at is not None else "missing"
        console.print(
            f"[yellow]restore:[/] checkpoint {r.checkpoint_id} ({taken}) signs the heads the database held when the audit service "
            f"found it behind the bus; checkpoints {r.superseded_from}..{r.checkpoint_id - 1} were superseded. If nobody restored "
            "the database from a backup, they were deleted from it: tampering (docs/audit.md)",
            soft_wrap=True,
        )
        if r.superseded is None:
            console.print("  add --bus to check the published checkpoints it superseded")
        for cp in r.superseded or ():
            console.print(
                f"  superseded: checkpoint {cp.checkpoint_id} (taken {_when(cp.taken_at)}): its heads up to the restored ones are "
                f"checked by hash; the {cp.rows_past_restore} row(s) it signed past them by count only (recorded again from "
                "the bus, they hash anew; `--content` compares them with the bus while it holds them)",
                soft_wrap=True,
            )


async def _committed_by_audit(kit: Any, found: CompletenessReport) -> dict[tuple[str, int], int]:
    """What the audit service's consumer group committed in the partitions with records missing (read without joining it).

    The service commits only what it stored, so a range it committed past was recorded, and its rows were removed; one
    it did not is lag. Asked with the audit's own Kafka login when this machine holds it (the operator's may not
    describe the group); without it, or refused, nothing is said of it: empty.
    """
    login = kafka_options(kit, AUDIT_LOGIN)
    if "sasl_plain_username" in kafka_options(kit, OPS) and "sasl_plain_username" not in login:
        return {}  # no audit login on this machine: a client without one would wait out its timeout on a broker that wants one
    committed: dict[tuple[str, int], int] = {}
    try:
        for topic in sorted({m.topic for m in found.missing}):
            name, group = topic.removeprefix(kit.topic_prefix), kit.topic_prefix + AUDIT_LOGIN
            handled = await handled_offsets(kit.kafka_bootstrap, kit.topic_prefix, name, group, client_options=login)
            committed |= {(topic, partition): offset for partition, offset in handled.items()}
    except (HistoryNotReadable, KafkaError, OSError, TimeoutError):
        return {}
    return committed


def _print_completeness(c: CompletenessReport) -> None:
    console.print(
        f"compared {c.offsets} offsets of {c.partitions} partitions of {c.topics} topics on the bus with the log in {c.seconds:.2f} s"
    )
    if c.archived:
        console.print(f"{c.archived} older offset(s) the bus still holds were pruned into archives: not compared (see --archive)")
    if c.ok:
        console.print("[bold green]complete:[/] every record the bus holds has exactly one row")
        return
    err_console.print(f"[bold red]INCOMPLETE:[/] {c.missing_records} record(s) in {len(c.missing)} range(s) have no row")
    for m in c.missing[:50]:
        err_console.print(f"  {m.describe()}")
    if len(c.missing) > 50:
        err_console.print(f"  … and {len(c.missing) - 50} more range(s) (--json lists them all)")
