"""The audit log as `tidegate audit`'s commands open it: the operator's login, and one line for a database without it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from servicekit import KitSettings, ToolCatalog, deployment_authority
from services.audit import PostgresAuditLog, Recheck, signature_recheck
from tidegate.commands._common import settings

__all__ = ["row_recheck", "with_audit_log"]

T = TypeVar("T")


async def with_audit_log(use: Callable[[PostgresAuditLog], Awaitable[T]]) -> T:
    """Run `use` over the deployment's audit log as the operator; a missing or older schema is a `ConnectionError` (one line, exit 1)."""
    log = await PostgresAuditLog.connect(settings().operator_database_url)  # a database down or a refused login: ConnectionError
    try:
        return await use(log)
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError) as exc:
        raise ConnectionError(f"no audit log in this database ({exc}): has the audit service run here?") from exc
    except asyncpg.UndefinedColumnError as exc:
        raise ConnectionError(f"the audit schema is older than this CLI ({exc}): start the audit service once to migrate it") from exc
    finally:
        await log.close()


def row_recheck(kit: KitSettings, prefix: str | None = None) -> Recheck:
    """Each row of the deployment `prefix` (default: `kit`'s) observed again from its own value with `kit`'s keys.

    What `verify --signatures` and `explain` hold each row to: the history authority (a retired key's grace judged at
    the row's broker time), and the time each key was put on file (`Authority.added_at`).
    """
    tools = ToolCatalog.load(*kit.tool_dirs) if kit.tools_dir.is_dir() else None
    authority = deployment_authority(kit, tools, history=True)
    return signature_recheck(authority.check, prefix or kit.topic_prefix, kit.bounds, added_at=authority.added_at)
