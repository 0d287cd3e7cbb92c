"""A service pool skips asyncpg's reset round trip only when the service leaves no session state on its connections."""

from __future__ import annotations

import re
from pathlib import Path

from servicekit import REPO_ROOT

SERVICES = REPO_ROOT / "services"
# What outlives a transaction on a pooled connection: session advisory locks, LISTEN, a SET without LOCAL.
SESSION_STATE = re.compile(
    r"pg_(?:try_)?advisory_lock\(|\bLISTEN\b|add_listener\(|[\"']\s*SET\s+(?!LOCAL\b)"
)  # SQL is written in capitals here


def _holds_session_state(service: Path) -> list[str]:
    found = []
    for path in sorted(service.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if SESSION_STATE.search(line) and not line.lstrip().startswith("#"):
                found.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    return found


# Session state a reset of advisory locks alone (`session_state="advisory_locks"`) leaves behind: LISTEN, a SET without LOCAL.
BEYOND_ADVISORY_LOCKS = re.compile(r"\bLISTEN\b|add_listener\(|[\"']\s*SET\s+(?!LOCAL\b)")


def _asks_for_reset(service: Path) -> bool:
    app = service / "app.py"
    return app.exists() and ("session_state=True" in app.read_text() or _resets_advisory_locks_only(service))


def _resets_advisory_locks_only(service: Path) -> bool:
    app = service / "app.py"
    return app.exists() and 'session_state="advisory_locks"' in app.read_text()


def test_every_service_that_holds_session_state_has_its_connections_reset() -> None:
    services = [p for p in sorted(SERVICES.iterdir()) if (p / "app.py").exists()]
    holding = {service.name: _holds_session_state(service) for service in services}
    assert holding["executor"], "the scan must see the executor's claim locks (session advisory locks)"
    missing = {name: lines for name, lines in holding.items() if lines and not _asks_for_reset(SERVICES / name)}
    assert not missing, f"pass session_state=True to ServiceProcess.pool_of for: {missing}"


def test_the_scan_tells_session_state_from_transaction_state() -> None:
    assert SESSION_STATE.search('await conn.execute("SELECT pg_advisory_lock($1)", key)')
    assert SESSION_STATE.search('await conn.execute("SET statement_timeout = 0")')
    assert not SESSION_STATE.search("await conn.execute(\"SELECT pg_advisory_xact_lock(hashtext('x'))\")")
    assert not SESSION_STATE.search('await conn.execute(f"SET LOCAL ROLE {WRITER_ROLE}")')


def test_the_in_process_tools_keep_no_session_state_on_their_pool() -> None:
    """The executor releases the tools' connections without a reset (`ToolContext.pool`): no tool may leave session state on one."""
    holding = {folder: _holds_session_state(REPO_ROOT / folder) for folder in ("systems", "connectors")}
    assert not any(holding.values()), f"a tool holds session state on ToolContext.pool, which is never reset: {holding}"


def test_a_service_whose_reset_ends_only_advisory_locks_holds_no_other_session_state() -> None:
    """`session_state="advisory_locks"` skips `CLOSE ALL; UNLISTEN *; RESET ALL`: its code may hold no LISTEN, no session SET."""
    services = [p for p in sorted(SERVICES.iterdir()) if _resets_advisory_locks_only(p)]
    assert [p.name for p in services] == ["executor"]
    beyond = {p.name: [line for line in _holds_session_state(p) if BEYOND_ADVISORY_LOCKS.search(line)] for p in services}
    assert not any(beyond.values()), f"pass session_state=True instead: a released connection would keep this state: {beyond}"
    assert BEYOND_ADVISORY_LOCKS.search('await conn.execute("SET statement_timeout = 0")')
    assert BEYOND_ADVISORY_LOCKS.search('await conn.execute("LISTEN tidegate")')
    assert not BEYOND_ADVISORY_LOCKS.search('await conn.execute("SELECT pg_advisory_lock($1)", key)')
