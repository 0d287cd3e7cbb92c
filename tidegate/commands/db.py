"""`tidegate db migrate`: create each service's PostgreSQL role and migrate every schema (as the operator)."""

from __future__ import annotations

import typer

from tidegate.commands._common import console, run, settings

app = typer.Typer(help="The database: per-service roles and migrations (run as the operator's role).", no_args_is_help=True)


def migrate_all() -> None:
    """Provision the roles and migrate; print what was applied (shared by `db migrate` and `infra up`)."""
    from tidegate.database import migrate as provision_and_migrate

    cfg = settings()
    applied = run(provision_and_migrate(cfg))
    done = [f"{schema}/{name}" for schema, names in applied.items() for name in names]
    console.print(
        f"database: {len(applied)} schemas at their latest version ({len(done)} migrations applied now); "
        f"service logins in {cfg.db_credentials_dir}"
    )


@app.command()
def migrate() -> None:
    """Create (or update) one role per service, migrate every schema, grant each service only its own."""
    migrate_all()
