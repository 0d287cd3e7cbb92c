"""`tidegate audit archive`, and the archive files `verify --archive` checks: the log's oldest rows, kept out of the database."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import asyncpg
import typer
import yaml
from rich.markup import escape

from servicekit import Keyring, KitSettings, SigningKey, ToolCatalog, deployment_authority
from services.audit import (
    Archived,
    ArchiveError,
    ArchivePolicy,
    ArchiveReading,
    ArchiveRefused,
    ArchiveReport,
    ArchiveSigner,
    PostgresAuditLog,
    Recheck,
    archive_log,
    audit_keys_of,
    checkpoint_after,
    checkpoint_before,
    read_archive,
    signers_of,
    verify_archives,
)
from tidegate.commands._audit_log import with_audit_log
from tidegate.commands._common import console, err_console, fail, run, settings, shown, when
from tidegate.commands._progress import progress_display

__all__ = ["archive", "checked_archives", "export", "policy", "policy_packs", "print_archives", "verify_archives_only"]


def checked_archives(paths: list[Path], keyring: Keyring, **live: Any) -> ArchiveReport:
    try:
        return verify_archives(paths, keyring, **live)
    except OSError as exc:
        fail(f"--archive: cannot read {exc.filename}: {exc.strerror}")


def verify_archives_only(
    paths: list[Path],
    keyring: Keyring,
    *,
    as_json: bool,
    trust: list[str] | None = None,
    require_attested: bool = False,
    attested_by: list[str] | None = None,
    recheck: Recheck | None = None,
) -> None:
    """Archives alone, offline: no database is read (`recheck`: each row also held to its own signature)."""
    report = checked_archives(
        paths, keyring, trust=trust or [], require_attested=require_attested, attested_by=attested_by or [], recheck=recheck
    )
    if as_json:
        console.print_json(report.model_dump_json())
    else:
        print_archives(report)
    if not report.ok:
        raise typer.Exit(1)


def print_archives(report: ArchiveReport) -> None:
    for a in report.archives:
        start = f"after checkpoint {a.after_checkpoint}" if a.after_checkpoint is not None else "from seq 1"
        console.print(
            f"archive {shown(a.path)}: {a.rows} rows in {a.chains} chain(s), {start} through checkpoint {a.through_checkpoint} "
            f"(sha256 {a.sha256})"
        )
        if a.header == "attested":
            by = f" (sha256 {a.attested_by_sha256})" if a.attested_by_sha256 else ""
            signers = f", the {a.signers} signing keys of its rows' producers" if a.signers else ""
            console.print(
                f"  header attested by {a.attested_by}{by}: its carried keys, their retirement times{signers} and its packs are as written"
            )
        elif a.header == "unattested":
            err_console.print(
                "  [bold yellow]header not attested[/] (written before Tidegate attested headers, or its attestation was removed): "
                "the retirement times of the keys it carries and its policy packs are not proven; check retired keys against "
                "the deployment's keys folder",
                soft_wrap=True,
            )
    if report.ok:
        console.print(f"[bold green]intact:[/] {len(report.archives)} archive(s) check out, each chain and checkpoint, in sequence")
        return
    label = "NOT VERIFIED (nothing found wrong; a key is not trusted here)" if report.only_unchecked else "BROKEN"
    err_console.print(f"[bold red]{label}:[/] {escape(report.breaks[0].describe())}", soft_wrap=True)
    for brk in report.breaks[1:]:
        err_console.print(f"  also: {escape(brk.describe())}", soft_wrap=True)


async def policy_packs(log: PostgresAuditLog) -> list[ArchivePolicy]:
    """Every policy pack the deployment's policy services decided with (`policy.policy_versions`); none without that schema."""
    try:
        records = await log.pool.fetch(
            "SELECT version, files::text AS files, settings::text AS settings, published_by, first_used_at "
            "FROM policy.policy_versions ORDER BY first_used_at, version"
        )
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return []  # no policy service has run against this database
    return [
        ArchivePolicy(
            version=r["version"],
            files=json.loads(r["files"]),
            settings=json.loads(r["settings"]),
            published_by=r["published_by"],
            first_used_at=r["first_used_at"],
        )
        for r in records
    ]


def audit_signer(keys_dir: Path) -> SigningKey | None:
    """The audit's private key, to attest a file's header; None (the file is written not attested) where it is not kept."""
    if not (keys_dir / "audit" / "audit.key").is_file():
        return None
    try:
        return SigningKey.load_or_create(keys_dir, "audit")
    except (OSError, ValueError, PermissionError) as exc:
        err_console.print(f"[bold red]warning:[/] cannot load the audit key to attest the header: {exc}", soft_wrap=True)
        return None


def _signers(kit: KitSettings) -> tuple[list[ArchiveSigner], ArchiveReading]:
    """Every public key the deployment's rows may be signed with (its keys folders and tool catalog), and how they are judged."""
    tools = ToolCatalog.load(*kit.tool_dirs) if kit.tools_dir.is_dir() else None
    reading = ArchiveReading(
        retired_key_grace_s=kit.retired_key_grace_s, max_value_bytes=kit.bounds.max_bytes, max_json_depth=kit.bounds.max_depth
    )
    return signers_of(deployment_authority(kit, tools, history=True)), reading


async def _write(
    log: PostgresAuditLog, kit: KitSettings, out: Path, *, through: int, after: int | None = None, doing: str, quiet: bool
) -> Archived:
    """Write the log's rows through checkpoint `through` (after `after`'s heads, else the last prune's) to `out`, with progress.

    A checkpoint that is not one, and a chain or checkpoint that does not check out, are one line (nothing is left written).
    """
    signers, reading = _signers(kit)
    with progress_display({"rows": f"{doing} through checkpoint {through}"}, quiet=quiet) as progress:
        try:
            return await archive_log(
                log, Keyring.load(kit.keys_dir, "audit"), out, prefix=kit.topic_prefix, through=through, after=after,
                keys=audit_keys_of(kit.keys_dir), policies=await policy_packs(log), progress=lambda n, total: progress("rows", n, total),
                attest_with=audit_signer(kit.keys_dir), signers=signers, reading=reading,
            )  # fmt: skip
        except LookupError as exc:
            raise ConnectionError(str(exc)) from None
        except ArchiveRefused as exc:
            raise ConnectionError(f"refused, nothing written: {exc}") from None


def _print_written(done: Archived, checked: str) -> None:
    start = f"after checkpoint {done.previous_checkpoint_id}" if done.previous_checkpoint_id is not None else "from seq 1"
    console.print(
        f"wrote {shown(done.path)}: {done.rows} rows of {done.chains} chain(s), {start} through checkpoint {done.checkpoint_id}, {checked}"
    )
    console.print(f"sha256 {done.sha256}")
    for key in done.keys:
        state = f"retired {key.retired_at:%Y-%m-%d %H:%M:%S} UTC" if key.retired_at is not None else "current"
        console.print(f"audit key {key.key_id} ({state}): sha256 {key.sha256}")
    if done.policies:
        console.print(f"policy packs carried: {', '.join(done.policies)} (tidegate audit policy VERSION --archive FILE reads one)")
    for version in done.policies_left_out:
        err_console.print(
            f"[bold red]warning:[/] the policy pack stored as {version} (policy.policy_versions) does not hash to that version: "
            "its text was edited in the database; left out of the file (decisions naming it cannot be matched to its text)",
            soft_wrap=True,
        )
    if done.signers:
        console.print(
            f"signing keys carried: {done.signers} (services', operators', clients', tools': each row's signature checks "
            "offline with the audit key's fingerprint alone)"
        )
    if done.attested_by is not None:
        by = next((f" (sha256 {k.sha256})" for k in done.keys if k.key_id == done.attested_by), "")
        console.print(
            f"header attested by {done.attested_by}{by} (its keys, their retirement times, the signing keys and the policy packs)"
        )
    else:
        err_console.print(
            "[bold red]warning:[/] the header is NOT attested: the audit's private key (KEYS_DIR/audit/audit.key) is not on this "
            "machine, so the retirement times of the keys it carries and its policy packs are not proven to an auditor; "
            "run this where the audit service's keys folder is",
            soft_wrap=True,
        )
    if done.keys:
        console.print(
            "hand the auditor these fingerprints apart from the file: with them, `tidegate audit verify --archive FILE "
            "--trust-key SHA256` checks it on a machine without this deployment's keys, after any rotation, and "
            "`--attested-by SHA256` (the current key's) proves the retirement times it carries"
        )


def archive(
    out: Path = typer.Option(..., "--out", "-o", help="The archive file to write (gzip'd JSON lines); refused if it exists."),
    through_checkpoint: int | None = typer.Option(None, "--through-checkpoint", min=1, help="Archive through this checkpoint's heads."),
    before: str | None = typer.Option(
        None, "--before", help="Archive through the newest checkpoint taken before this time (ISO 8601, or a duration ago: 90d)."
    ),
    prune: bool = typer.Option(False, "--prune", help="Then remove the archived rows from the database (each chain's head row stays)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Write the log's rows from the last prune through a signed checkpoint to FILE, checking every chain; with --prune, remove them."""
    if (through_checkpoint is None) == (before is None):
        fail("give one of --through-checkpoint N or --before DATE")
    if out.exists():
        fail(f"--out: {out} exists; an archive is never overwritten")
    kit = settings()
    cutoff = when(before) if before is not None else None

    async def go(log: PostgresAuditLog) -> tuple[Any, int | None]:
        through = through_checkpoint
        if cutoff is not None:
            found = await checkpoint_before(log, kit.topic_prefix, cutoff)
            if found is None:
                raise ConnectionError(f"no checkpoint was taken before {cutoff:%Y-%m-%d %H:%M:%S}: nothing to archive")
            through = found.checkpoint_id
        assert through is not None
        done = await _write(log, kit, out, through=through, doing="archiving", quiet=as_json)
        if not prune:
            return done, None
        try:
            return done, await log.prune(kit.topic_prefix, done.checkpoint_id, done.sha256, done.prunable_rows)
        except asyncpg.InsufficientPrivilegeError as exc:
            raise ConnectionError(
                f"{out} is written, but this login may not prune ({exc}): run it as the operator (the schema owner's member)"
            ) from None
        except asyncpg.PostgresError as exc:
            raise ConnectionError(f"{out} is written, but the prune was refused and nothing was removed: {exc}") from None

    done, removed = run(with_audit_log(go))
    if as_json:
        console.print_json(json.dumps({**done.model_dump(), "pruned_rows": removed}))
        return
    _print_written(done, "every chain checked")
    if removed is not None:
        console.print(
            f"pruned: {removed} row(s) removed from the database; each chain is kept from the head checkpoint {done.checkpoint_id} signed"
        )
    else:
        console.print(f"nothing removed (add --prune to remove the {done.prunable_rows} row(s) it holds below the heads)")


def export(
    out: Path = typer.Option(..., "--out", "-o", help="The file to write (gzip'd JSON lines, an archive's format); refused if it exists."),
    since: str = typer.Option(..., "--since", help="From this time (ISO 8601, or a duration ago: 1d): the newest checkpoint before it."),
    until: str | None = typer.Option(
        None, "--until", help="Through this time (ISO 8601, or a duration ago): the first checkpoint at or after it; default: the newest."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Evidence of a window for an auditor: every row between two signed checkpoints, in a file anyone can verify offline.

    The file holds the rows of every chain from the newest checkpoint before --since through the first one at or after
    --until (so the window, and around it the rows up to those checkpoints), each checkpoint between with its signature,
    and nothing is removed. `tidegate audit verify --archive FILE` checks it with the audit's public key alone, and
    `tidegate audit explain TASK --archive FILE` tells a task from it.
    """
    if out.exists():
        fail(f"--out: {out} exists; an export is never overwritten")
    kit = settings()
    start, end = when(since), when(until) if until is not None else None

    async def go(log: PostgresAuditLog) -> Any:
        after = await checkpoint_before(log, kit.topic_prefix, start)
        checkpoints = await log.checkpoints(kit.topic_prefix)
        through = await checkpoint_after(log, kit.topic_prefix, end) if end is not None else (checkpoints[-1] if checkpoints else None)
        if through is None and not checkpoints:
            raise ConnectionError(
                "no checkpoint is signed yet: the audit service signs one within its checkpoint interval after it records "
                "a row (`tidegate audit verify` says so); run the export again then"
            )
        if through is None:
            newest = f" (the newest is checkpoint {checkpoints[-1].checkpoint_id}, taken {checkpoints[-1].taken_at:%Y-%m-%d %H:%M:%S})"
            raise ConnectionError(
                "no checkpoint signs the end of that window yet" + newest + ": the rows past the newest "
                "checkpoint are signed by none; export through it (omit --until), or wait for the next"
            )
        after_id = after.checkpoint_id if after is not None else None
        return await _write(log, kit, out, through=through.checkpoint_id, after=after_id, doing="exporting", quiet=as_json)

    done = run(with_audit_log(go))
    if as_json:
        console.print_json(done.model_dump_json())
        return
    _print_written(done, "every chain checked; nothing removed")
    console.print(
        f"check it anywhere: tidegate audit verify --archive {shown(done.path)} --trust-key SHA256 (each fingerprint above); "
        "without Tidegate: python3 examples/verify_audit_export/verify_audit_export.py (docs/audit.md)"
    )


def policy(
    version: str = typer.Argument(..., help="The policy version a decision names (sha256:…; a unique prefix of its digits will do)."),
    archives: list[Path] = typer.Option(
        [], "--archive", help="Read it from this archive or export (repeatable), offline; else the database."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write its Cedar files and settings.yaml into this new folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the pack as JSON (files and settings)."),
) -> None:
    """The policy pack a decision names: its Cedar files and settings, checked to hash to its version (from an archive, or the database)."""
    wanted = version.strip().removeprefix("sha256:").lower()
    if not re.fullmatch(r"[0-9a-f]{6,64}", wanted):
        fail(f"{version!r} is not a policy version: give the sha256:… a decision names (at least 6 hex digits)")
    packs: list[ArchivePolicy] = []
    if archives:
        for path in archives:
            try:
                header, _ = read_archive(path)
            except OSError as exc:
                fail(f"--archive: cannot read {exc.filename}: {exc.strerror}")
            except ArchiveError as exc:
                fail(f"--archive {path}: {exc}")
            packs += header.policies
        where = ", ".join(map(str, archives))
    else:
        packs = run(with_audit_log(policy_packs))
        where = "the database (policy.policy_versions)"
    found: dict[str, ArchivePolicy] = {}
    for p in packs:  # a genuine copy wins over an edited one of the same version
        if p.version.removeprefix("sha256:").startswith(wanted) and (p.version not in found or p.genuine):
            found[p.version] = p
    if not found:
        held = ", ".join(sorted({p.version for p in packs})) or "none"
        fail(f"no policy pack {version} in {where} (it holds: {held}); an archive written before packs were carried holds none")
    if len(found) > 1:
        fail(f"{version} names several packs: {', '.join(sorted(found))}; give more of its digits")
    pack = next(iter(found.values()))
    if not pack.genuine:
        fail(f"the pack stored as {pack.version} in {where} does not hash to that version: its text was edited; it is not evidence")
    if out is not None:
        if out.exists() and any(out.iterdir()):
            fail(f"--out: {out} exists and is not empty")
        if odd := [name for name in pack.files if Path(name).name != name or not name.endswith(".cedar")]:
            fail(f"the pack names a file {odd[0]!r} that is not a plain .cedar name: nothing written")
        out.mkdir(parents=True, exist_ok=True)
        for name, text in pack.files.items():
            (out / name).write_text(text)
        (out / "settings.yaml").write_text(yaml.safe_dump(pack.settings, sort_keys=True))
    if as_json:
        console.print_json(pack.model_dump_json())
        return
    console.print(
        f"policy {pack.version}: {len(pack.files)} Cedar file(s) ({', '.join(sorted(pack.files))}) and its settings; published by "
        f"{pack.published_by}, first decided with {pack.first_used_at or '(unknown)'}; its text hashes to its version"
    )
    if out is not None:
        console.print(f"written to {shown(str(out))}: the text the policy service compiled (`tidegate whatif --policy DIR` replays it)")
