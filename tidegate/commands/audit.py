"""`tidegate audit`: verify the log, archive and prune it, tell and explain a task's story, search it, acknowledge its conflicts.

Each job is its own module: `_audit_verify` (verify), `_audit_archive` (archive, and archive files), `_audit_story`
(show, explain, search), `_audit_actions` (actions: one line per action across tasks), `_audit_conflicts` (conflicts list,
ack); `_audit_log` opens the log for them.
"""

from __future__ import annotations

import typer

from tidegate.commands import _audit_conflicts
from tidegate.commands._audit_actions import actions
from tidegate.commands._audit_archive import archive, export, policy
from tidegate.commands._audit_story import explain, search_, show
from tidegate.commands._audit_verify import verify

__all__ = ["app"]

app = typer.Typer(
    help="The audit log: verify its chains, archive and prune, show and explain a task, search, read a policy, acknowledge conflicts.",
    no_args_is_help=True,
)
app.command()(verify)
app.command()(archive)
app.command()(export)
app.command()(policy)
app.command()(show)
app.command()(explain)
app.command("search")(search_)
app.command()(actions)
app.add_typer(_audit_conflicts.app, name="conflicts", help=_audit_conflicts.app.info.help)
