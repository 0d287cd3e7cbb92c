"""Every schema of a Tidegate deployment, and the one call that provisions and migrates them all."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlsplit

import services.approval
import services.audit
import services.executor
import services.planner
import services.policy
import systems
from servicekit import KitSettings
from servicekit.dbroles import DEFAULT_ROLE_PREFIX, Grant, SchemaSpec, provision

__all__ = ["AUDIT_WRITER_ROLE", "SCHEMAS", "local_superuser_url", "migrate"]

# Created by the audit schema's first migration; the only role that may INSERT into the log.
AUDIT_WRITER_ROLE = "tidegate_audit_writer"


def _migrations(package: object) -> Path:
    return Path(str(package.__file__)).parent / "migrations"  # type: ignore[attr-defined]


SCHEMAS: tuple[SchemaSpec, ...] = (
    SchemaSpec("planner", _migrations(services.planner), user="planner"),
    SchemaSpec("policy", _migrations(services.policy), user="policy"),
    SchemaSpec("approval", _migrations(services.approval), user="approval"),
    # Connector grants are the operator's (`tidegate connectors`, signed with the operator's key): the executor only reads them.
    SchemaSpec("executor", _migrations(services.executor), user="executor", read_only=("connector_grants",)),
    SchemaSpec("audit", _migrations(services.audit), user="audit", grant=Grant.APPEND_ONLY, writer_role=AUDIT_WRITER_ROLE),
    # The executor's in-process tools (the demo systems of record) log in as a role of their own.
    *(SchemaSpec(name, systems.MIGRATIONS / name, user="systems") for name in systems.SYSTEMS),
)


async def migrate(kit: KitSettings, *, role_prefix: str = DEFAULT_ROLE_PREFIX) -> dict[str, list[str]]:
    """Create the roles, migrate every schema, grant each service its own; as `kit.operator_database_url`'s role (the migrator)."""
    return await provision(kit.operator_database_url, SCHEMAS, kit.db_credentials_dir, role_prefix=role_prefix)


def local_superuser_url(kit: KitSettings, database: str = "postgres") -> str:
    """The superuser of the cluster `infra up` runs in `kit.infra_dir`: over its socket, as the cluster's owner or root.

    The superuser has no password and never logs in over TCP (infra/infra.sh's pg_hba.conf): only the
    system user that owns the cluster (and root) reaches it, through peer authentication.
    """
    port = urlsplit(kit.database_url).port or kit.pg_port
    return f"postgresql://postgres@/{quote(database, safe='')}?host={quote(str(kit.infra_dir / 'pg' / 'run'))}&port={port}"
