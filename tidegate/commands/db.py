"""`tidegate db`: create each service's PostgreSQL role and migrate every schema (as the operator); see what the tables hold."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

import typer
from rich.table import Table

from tidegate.commands._catch_up import catch_up
from tidegate.commands._common import console, fail, run, settings

app = typer.Typer(
    help="The database: per-service roles and migrations, and catching up a restored one (run as the operator's role).",
    no_args_is_help=True,
)
app.command("catch-up")(catch_up)


def migrate_all() -> None:
    """Provision the roles and migrate; print what was applied (shared by `db migrate` and `infra up`)."""
    from servicekit.dbroles import credentials_file, service_role
    from tidegate.database import SCHEMAS
    from tidegate.database import migrate as provision_and_migrate

    cfg = settings()
    # A service whose login file is missing gets a new password (how a password is rotated, docs/security/database.md):
    # said by name, so a rotation is seen to have happened, and where.
    users = list(dict.fromkeys(spec.user for spec in SCHEMAS))
    new_logins = [user for user in users if not credentials_file(cfg.db_credentials_dir, user).exists()]
    applied = run(provision_and_migrate(cfg))
    done = [f"{schema}/{name}" for schema, names in applied.items() for name in names]
    console.print(
        f"database: {len(applied)} schemas at their latest version ({len(done)} migrations applied now); "
        f"service logins in {cfg.db_credentials_dir}"
    )
    for user in new_logins:
        console.print(
            f"  new password for {service_role(user)} ({credentials_file(cfg.db_credentials_dir, user)} was missing): "
            "its new connections read it from the .pgpass beside it; one that reads the JSON file alone needs a restart"
        )
    for name in done:  # by name: an upgrade's checklist (docs/operations.md) names the migrations its steps follow from
        console.print(f"  applied {name}")


@app.command("rotate")
def rotate(
    services: list[str] = typer.Argument(None, help="The services whose database login to rotate (policy, planner, …, systems)."),
    all_: bool = typer.Option(False, "--all", help="Every service's login."),
    operator: bool = typer.Option(
        False, "--operator", help="The operator's own role (the migrator, TIDEGATE_DATABASE_PASSFILE), after the services named if any."
    ),
    leaked: bool = typer.Option(
        False, "--leaked", help="The password may have leaked: also end every session of the role, so its holder is cut off now."
    ),
) -> None:
    """Give services' PostgreSQL roles (and with --operator the operator's own) new passwords now; check the former ones are refused.

    The running services pick the new password up at their next connection (they read the `.pgpass` beside the login):
    nothing to restart. The operator's is written to its passfile, which every operator command reads. Sessions already
    open keep working, unless --leaked: then every session of the role is ended, the services reconnect with the new
    password (their next query retries), and whoever held the old one is cut off. Exits 1 when a former password still
    logs in or a session from before the rotation is still open after --leaked.
    """
    from servicekit.dbroles import CannotEndSessions, RotatedLogin, rotate_logins, rotate_operator
    from tidegate.database import SCHEMAS

    cfg = settings()
    known = list(dict.fromkeys(spec.user for spec in SCHEMAS))
    chosen = known if all_ else list(dict.fromkeys(services or []))
    if not chosen and not operator:
        fail(f"name the services whose login to rotate ({', '.join(known)}), or --all, or --operator", code=2)
    unknown = [name for name in chosen if name not in known]
    if unknown:
        fail(f"no database login {', '.join(unknown)}: one of {', '.join(known)}", code=2)
    if operator and cfg.operator_database_url == cfg.database_url:  # the password is in the DSN, not in a passfile
        fail(
            "the operator's password is in TIDEGATE_DATABASE_URL, not in a passfile this command can write: give the role a "
            "new one from your secret store (ALTER ROLE … PASSWORD), or move it to TIDEGATE_DATABASE_PASSFILE",
            code=2,
        )
    if operator and not cfg.database_passfile.is_file():
        fail(f"no operator passfile at {cfg.database_passfile} (TIDEGATE_DATABASE_PASSFILE): run `tidegate infra up`", code=2)
    rotated: list[RotatedLogin] = []
    try:
        if chosen:
            rotated = run(rotate_logins(cfg.operator_database_url, chosen, cfg.db_credentials_dir, end_sessions=leaked))
        if operator:
            rotated.append(run(rotate_operator(cfg.operator_database_url, cfg.database_passfile, end_sessions=leaked)))
    except CannotEndSessions as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(str(exc))
    faults = 0
    for login in rotated:
        where = cfg.database_passfile if operator and login is rotated[-1] else cfg.db_credentials_dir
        said = [f"{login.role}: new password set and written to {where}"]
        if leaked:
            said.append(f"{login.sessions_ended} session(s) ended")
        if login.old_password_refused is None:
            said.append("no former password on file to try")
        elif login.old_password_refused:
            said.append("former password refused")
        else:
            said.append("FORMER PASSWORD STILL LOGS IN")
            faults += 1
        if leaked and login.sessions_left:
            said.append(f"{login.sessions_left} SESSION(S) FROM BEFORE STILL OPEN")
            faults += 1
        console.print("; ".join(said))
    if faults:
        fail(f"rotation not complete for {faults} check(s) above: look at pg_stat_activity and run it again")
    if leaked:
        console.print(f"done: {len(rotated)} login(s) rotated; no session opened with a former password remains")
    else:
        # Who uses what now: no service logs in as the operator's role (the CLI and `db migrate` do, from its passfile).
        users = (["the services use theirs at their next connection"] if chosen else []) + (
            [f"the operator's commands read theirs from {cfg.database_passfile} (no service logs in as the operator)"] if operator else []
        )
        console.print(
            f"done: {len(rotated)} login(s) rotated; {' and '.join(users)}; sessions already open keep the old password until "
            "they close (after a leak: --leaked)"
        )


@app.command()
def backup(
    out: Path = typer.Argument(..., help="The file to write (PostgreSQL's custom format, for pg_restore); refused if it exists."),
) -> None:
    """Dump the whole database (every service's schema) to OUT, readable by its owner alone, as the operator's role.

    The dump holds the approval schema's secrets (token hashes, sealed webhook secrets): it is written 0600, under another
    name until pg_dump has finished. It prints when it was taken and the restore's steps with the `--since` to give
    `tidegate db catch-up` (docs/operations.md, "Restoring the database").
    """
    cfg = settings()
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        fail("pg_dump is not on PATH: install PostgreSQL's client tools (Debian: postgresql-client), of the server's version or newer")
    if out.exists():
        fail(f"{out} exists: give a new file (a backup is never written over another)")
    parts = urlsplit(cfg.operator_database_url)
    env = dict(os.environ)
    dsn = cfg.operator_database_url
    if parts.password is not None:  # in the environment, never on pg_dump's command line (`ps` shows it to every user)
        env["PGPASSWORD"] = unquote(parts.password)
        dsn = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", "@", 1)).geturl()
    partial = out.with_name(f".{out.name}.partial")
    taken = datetime.now(UTC)
    partial.unlink(missing_ok=True)  # one a cut-off run left: made anew, so that its mode is ours (O_EXCL), never a file's kept mode
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as sink:
            command = [pg_dump, "--format=custom", f"--dbname={dsn}"]
            done = subprocess.run(command, stdout=sink, stderr=subprocess.PIPE, env=env, check=False)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        said = done.stderr.decode(errors="replace").strip().splitlines()
        fail(f"pg_dump failed ({done.returncode}): {said[-1] if said else 'no message'}; nothing was written")
    os.replace(partial, out)
    restore_dsn = dsn if parts.password is None else "<the operator's DSN>"  # a password is never printed
    since = (taken - timedelta(minutes=1)).astimezone().strftime("%Y-%m-%dT%H:%M:%S")
    console.print(
        f"database backed up to {out} ({out.stat().st_size:,} bytes, 0600: it holds secrets), taken at {taken:%Y-%m-%d %H:%M:%S} UTC"
    )
    console.print(
        f"to restore it: `tidegate down`; `pg_restore --clean --if-exists --dbname='{restore_dsn}' {out}`; `tidegate db migrate`; "
        f"`tidegate db catch-up --since {since}`; `tidegate up`; `tidegate audit verify --bus --complete`"
    )


@app.command()
def migrate() -> None:
    """Create (or update) one role per service, migrate every schema, grant each service only its own."""
    migrate_all()


def _size(n: float) -> str:
    if n < 1024:
        return f"{n:,.0f} B"
    for unit in ("KiB", "MiB"):
        n /= 1024
        if n < 1024:
            return f"{n:,.1f} {unit}"
    return f"{n / 1024:,.1f} GiB"


def _days(seconds: float) -> str:
    return f"{seconds / 86_400:g} d" if seconds >= 86_400 else f"{seconds / 3600:g} h"


@app.command()
def usage(as_json: bool = typer.Option(False, "--json", help="Print one JSON object a line, a table each, instead of a table.")) -> None:
    """Each table's rows and size, largest first; for working state, how long it is kept and how many rows are due.

    A service forgets its working state on a timer (docs/operations.md, 'What the database keeps'): a few rows due
    between two sweeps are normal; many, or more at each look, mean that service's sweep is not running.
    """
    from tidegate.usage import usage as read_usage

    tables = run(read_usage(settings()))
    if as_json:
        for t in tables:
            typer.echo(json.dumps(t.as_dict()))
        return
    view = Table("table", "rows (estimate)", "size", "kept", "due now", title="What the database holds")
    for t in tables:
        kept = t.kept if t.kept_s is None else f"{_days(t.kept_s)} ({t.setting})"
        view.add_row(t.name, f"{t.rows:,}", _size(t.bytes), kept, "" if t.due is None else f"{t.due:,}")
    console.print(view)
    console.print("kept 'record': nothing prunes it (the deployment's retention policy); 'due now': rows the next sweep forgets")
