"""`tidegate db`: create each service's PostgreSQL role and migrate every schema (as the operator); see what the tables hold."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from tidegate.commands._catch_up import catch_up
from tidegate.commands._common import console, run, settings

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
