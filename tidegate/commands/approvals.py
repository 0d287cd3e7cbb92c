"""`tidegate approvals`: list, show, approve and reject through the approval service's HTTP API; manage tokens.

Each job is its own module: `_approvals_queue` (list, show, approve, reject), `_approvals_tokens` (token create,
rotate, list, revoke), `_approvals_report` (report), `_approvals_adopt` (adopt: the operator's, in the database);
`_approvals_client` calls the service's API for the queue and `_approvals_shown` writes a request as a person reads it.
"""

from __future__ import annotations

import typer

from tidegate.commands._approvals_adopt import adopt
from tidegate.commands._approvals_client import configured_url, service_url
from tidegate.commands._approvals_queue import approve, list_, reject, show
from tidegate.commands._approvals_report import report
from tidegate.commands._approvals_tokens import token_app

__all__ = ["app", "configured_url", "service_url", "token_app"]

app = typer.Typer(
    help="Approvers: the queue of escalated actions, and your decisions (HTTP API of the approval service).", no_args_is_help=True
)
app.add_typer(token_app, name="token")
app.command("list")(list_)
app.command()(show)
app.command()(approve)
app.command()(reject)
app.command()(report)
app.command()(adopt)
