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


def _asks_for_reset(service: Path) -> bool:
    app = service / "app.py"
    return app.exists() and "session_state=True" in app.read_text()


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
