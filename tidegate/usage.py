"""What the database holds, table by table, and whether each service's sweep keeps its working state within its setting.

Working state (docs/operations.md, "What the database keeps, and for how long") is forgotten by the service that
owns it, on a timer. `usage` shows each table's rows and size and, for working state, how many rows are older than
the setting says they may be: a few are due between two sweeps; many, or a count that grows from one look to the
next, mean the service's sweep is not running (the service is down, or its log says why the sweep failed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from pydantic_settings import BaseSettings

from servicekit import KitSettings
from servicekit.db import connect
from services.approval import ApprovalSettings
from services.planner import PlannerSettings
from services.policy import PolicySettings
from tidegate.database import SCHEMAS

__all__ = ["PASSING_THROUGH", "WORKING_STATE", "Swept", "TableUsage", "usage"]


@dataclass(frozen=True)
class Swept:
    """A table of working state: when each row was written, which rows may go, and the setting that says how long they stay."""

    schema: str
    table: str
    written_at: str
    settings: type[BaseSettings]  # the owning service's settings
    field: str  # the one of them that says how long, in seconds
    only: str = ""  # a condition the rows the sweep may forget also meet

    @property
    def name(self) -> str:
        """`schema.table`."""
        return f"{self.schema}.{self.table}"

    @property
    def setting(self) -> str:
        """The environment variable of the setting."""
        return f"{self.settings.model_config.get('env_prefix', '')}{self.field}".upper()

    def kept_s(self) -> float:
        """The setting's value, as the service reads it from the environment."""
        return float(getattr(self.settings(), self.field))


WORKING_STATE: tuple[Swept, ...] = (
    Swept("planner", "processed_events", "seen_at", PlannerSettings, "applied_events_kept_s"),
    Swept("policy", "provenance", "learned_at", PolicySettings, "task_state_kept_s"),
    Swept("policy", "untrusted_texts", "learned_at", PolicySettings, "task_state_kept_s"),
    Swept("policy", "records", "read_at", PolicySettings, "task_state_kept_s"),
    Swept("policy", "call_outcomes", "seen_at", PolicySettings, "task_state_kept_s"),
    Swept("policy", "tasks_learned", "learned_at", PolicySettings, "task_state_kept_s"),
    Swept("policy", "reservations", "created_at", PolicySettings, "task_state_kept_s", only="status <> 'reserved'"),
    Swept("approval", "task_events", "at", ApprovalSettings, "task_events_kept_s"),
)
"""Every table whose rows a service forgets on its timer (each service's sweep names the same tables; a unit test holds them to it)."""

PASSING_THROUGH = frozenset({"planner.outbox", "approval.outbox"})
"""Tables whose rows are deleted as they are done with: events waiting to be published."""


@dataclass(frozen=True)
class TableUsage:
    """One table: its rows (PostgreSQL's estimate; counted when never analysed) and size; for working state, its setting and due rows."""

    name: str
    rows: int
    bytes: int
    setting: str | None = None
    kept_s: float | None = None
    due: int | None = None  # rows older than the setting: the sweep forgets them at its next round

    @property
    def kept(self) -> str:
        """How long its rows stay: `working state` (see `setting`), `until published`, `migrations` or `record` (nothing prunes it)."""
        if self.kept_s is not None:
            return "working state"
        return "until published" if self.name in PASSING_THROUGH else "migrations" if self.name.endswith(".schema_migrations") else "record"

    def as_dict(self) -> dict[str, object]:
        """For `--json`."""
        return {
            "table": self.name, "rows": self.rows, "bytes": self.bytes, "kept": self.kept, "setting": self.setting, "kept_s": self.kept_s,
            "due": self.due,
        }  # fmt: skip


_TABLES = """
SELECT n.nspname || '.' || c.relname AS name, format('%I.%I', n.nspname, c.relname) AS quoted,
       greatest(coalesce(s.n_live_tup, 0), c.reltuples::bigint) AS estimate, c.reltuples < 0 AS never_analysed,
       pg_total_relation_size(c.oid) AS bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'p')
ORDER BY bytes DESC, name
"""


async def _rows(conn: asyncpg.Connection, table: asyncpg.Record) -> int:
    """The table's rows: PostgreSQL's estimate, or a count for a table never vacuumed nor analysed.

    Such a table has no estimate (`reltuples` is -1), and the statistics' live count starts again at 0 when the
    server restarts, so the estimate would say 0 of a table that holds rows. Autovacuum analyses a table once
    about 50 rows have changed, so one never analysed is small, or new: the count is cheap.
    """
    if not table["never_analysed"]:
        return int(table["estimate"])
    return int(await conn.fetchval(f"SELECT count(*) FROM {table['quoted']}"))


async def usage(kit: KitSettings, *, now: datetime | None = None) -> list[TableUsage]:
    """Every table of the deployment's schemas, largest first, as the operator's role reads them.

    Rows due are counted with the BRIN index the sweep itself uses: on a large table the count reads about the pages
    forgetting them would (next to nothing when none is due).
    """
    now = now or datetime.now(UTC)
    swept = {s.name: s for s in WORKING_STATE}
    conn = await connect(kit.operator_database_url)  # down, or refusing the login: one line that says what to do
    try:
        rows = await conn.fetch(_TABLES, [s.name for s in SCHEMAS])
        out = []
        for r in rows:
            s = swept.get(r["name"])
            count = await _rows(conn, r)
            if s is None:
                out.append(TableUsage(r["name"], count, r["bytes"]))
                continue
            kept = s.kept_s()
            cutoff = now - timedelta(seconds=kept)
            only = f" AND {s.only}" if s.only else ""
            due = await conn.fetchval(f"SELECT count(*) FROM {s.name} WHERE {s.written_at} < $1{only}", cutoff)
            out.append(TableUsage(r["name"], count, r["bytes"], s.setting, kept, due))
        return out
    finally:
        await conn.close()
