"""What PostgreSQL's time goes to, statement by statement (`pg_stat_statements`), over one phase of a benchmark.

The database is a quarter of the machine's CPU per governed action (docs/benchmarks.md) and /proc says only
which service's backends spent it. `pg_stat_statements` (PostgreSQL's contrib module, loaded by the local
cluster, infra/infra.sh) counts each statement's executions, the time spent planning and executing them
and the WAL they wrote. Two readings around a phase, their difference per governed action, largest first.

Its times are by the wall clock: on a machine whose cores are all busy they include waits for a core, so
they are shares, not CPU. Statements are told apart by what they write or read (the tables), not by their
text, which is long: a service's statement is one CTE that writes four tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import asyncpg

from servicekit.dbroles import DEFAULT_ROLE_PREFIX

__all__ = ["Reading", "Statement", "read", "summarise", "what"]

SERVICE_OF_ROLE = {"audit_writer": "audit"}  # the audit's backends write as their own role (`SET LOCAL ROLE`)

_QUERY = """SELECT u.rolname AS role, s.queryid, s.toplevel, s.query, s.calls, s.plans, s.total_exec_time, s.total_plan_time,
       s.wal_bytes
FROM pg_stat_statements s JOIN pg_roles u ON u.oid = s.userid JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = $1"""


@dataclass(frozen=True)
class Statement:
    """One statement's counters at a reading (`pg_stat_statements`), cumulative since the module's last reset."""

    role: str
    query: str
    calls: int
    plans: int
    exec_ms: float
    plan_ms: float
    wal_bytes: int


Reading = dict[tuple[str, int, bool], Statement]
"""The statements run in one database, by (role, query id, top level)."""


async def read(admin_url: str, database: str) -> Reading | None:
    """The counters of every statement run in `database` now; None when the cluster does not load `pg_stat_statements`."""
    conn = await asyncpg.connect(admin_url)
    try:
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            rows = await conn.fetch(_QUERY, database)
        except asyncpg.PostgresError:  # not in shared_preload_libraries: the view refuses to be read
            return None
    finally:
        await conn.close()
    return {
        (r["role"], r["queryid"], r["toplevel"]): Statement(
            r["role"], r["query"], r["calls"], r["plans"], r["total_exec_time"], r["total_plan_time"], int(r["wal_bytes"])
        )
        for r in rows
    }


def service(role: str) -> str:
    """The service (or `operator`) a PostgreSQL role is the login of."""
    if not role.startswith(DEFAULT_ROLE_PREFIX):
        return "operator" if role == DEFAULT_ROLE_PREFIX.rstrip("_") else role  # the operator logs in as `tidegate`
    name = role.removeprefix(DEFAULT_ROLE_PREFIX)
    return SERVICE_OF_ROLE.get(name, name)


_TABLE = r"((?:\"?\w+\"?\.)?\"?\w+\"?)"
_WRITES = (
    ("inserts into", re.compile(r"\bINSERT\s+INTO\s+" + _TABLE, re.IGNORECASE)),  # an upsert's DO UPDATE is of the same table
    ("updates", re.compile(r"(?<!DO\s)\bUPDATE\s+" + _TABLE, re.IGNORECASE)),
    ("deletes from", re.compile(r"\bDELETE\s+FROM\s+" + _TABLE, re.IGNORECASE)),
)
_READ = re.compile(r"\b(?:FROM|JOIN)\s+((?:\"?\w+\"?\.)\"?\w+\"?)", re.IGNORECASE)
_COPY = re.compile(r"^\s*COPY\s+" + _TABLE, re.IGNORECASE)


def _tables(pattern: re.Pattern[str], query: str) -> list[str]:
    return list(dict.fromkeys(t.replace('"', "") for t in pattern.findall(query)))


def what(query: str) -> str:
    """A statement told by what it does: the tables it inserts into, updates or deletes from, else those it reads, else its first words.

    A COPY says so: its time counts receiving its rows from the client, as fast as the client sends them.
    """
    if copied := _COPY.match(query):
        return "copies rows into " + copied.group(1).replace('"', "")
    written = [f"{verb} {', '.join(tables)}" for verb, pattern in _WRITES if (tables := _tables(pattern, query))]
    if written:
        return "; ".join(written)
    if read_ := _tables(_READ, query):
        return "reads " + ", ".join(read_)
    return " ".join(query.split())[:60]


def summarise(before: Reading, after: Reading, actions: int, *, top: int = 10) -> dict[str, Any]:
    """What the statements run between two readings cost per governed action: the `top` by time, and the totals.

    Per statement: calls, milliseconds executing and planning, the share of its calls that were planned (a
    prepared statement whose custom plans look cheaper than a generic one is planned at every call), KB of WAL.
    """
    rows = []
    for key, now in after.items():
        then = before.get(key)
        calls = now.calls - (then.calls if then else 0)
        if calls <= 0:
            continue
        plans = now.plans - (then.plans if then else 0)
        exec_ms = now.exec_ms - (then.exec_ms if then else 0.0)
        plan_ms = now.plan_ms - (then.plan_ms if then else 0.0)
        wal = now.wal_bytes - (then.wal_bytes if then else 0)
        rows.append((service(now.role), what(now.query), calls, plans, exec_ms, plan_ms, wal))
    if not rows or actions <= 0:
        return {}
    by_service: dict[str, float] = {}
    for name, _, _, _, exec_ms, plan_ms, _ in rows:
        by_service[name] = by_service.get(name, 0.0) + (exec_ms + plan_ms) / actions
    rows.sort(key=lambda r: r[4] + r[5], reverse=True)
    return {
        "actions": actions,
        "statements": [
            {
                "service": name,
                "what": label,
                "calls": calls / actions,
                "exec_ms": exec_ms / actions,
                "plan_ms": plan_ms / actions,
                "planned": plans / calls,
                "wal_kb": wal / 1024 / actions,
            }
            for name, label, calls, plans, exec_ms, plan_ms, wal in rows[:top]
        ],
        "calls": sum(r[2] for r in rows) / actions,
        "exec_ms": sum(r[4] for r in rows) / actions,
        "plan_ms": sum(r[5] for r in rows) / actions,
        "wal_kb": sum(r[6] for r in rows) / 1024 / actions,
        "by_service": dict(sorted(by_service.items(), key=lambda kv: kv[1], reverse=True)),
    }
