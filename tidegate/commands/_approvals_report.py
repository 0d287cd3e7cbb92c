"""`tidegate approvals report`: why humans rejected, edited or called needless a call, and how approvals go."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from tidegate.commands._approvals_client import AsJson
from tidegate.commands._approvals_tokens import repo_call
from tidegate.commands._common import TEXT_MAX, console, run, settings, shown

__all__ = ["report"]


def report(
    since: Annotated[str, typer.Option("--since", help="Start: a duration ago (`30d`, `12h`) or an ISO time.")] = "30d",
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    fast_s: Annotated[float, typer.Option("--fast", help="An approval faster than this many seconds is a rubber-stamp signal.")] = 10.0,
    as_json: AsJson = False,
) -> None:
    """Why humans rejected, edited or called needless calls (by tool, workflow, reason, policy, with examples), and approval quality.

    Reads the recorded events (tasks, decisions, approvals) of the window as the ops principal; approver groups come
    from the approval service's tokens where the database is reachable.
    """
    from services.approval import review_report, reviews_from_events
    from tidegate.ops.autonomy import read_record

    window = run(read_record(settings(), since, tenant))
    events = [r.event for r in window.events]
    try:
        groups = {t.approver: ",".join(t.groups) or "?" for t in run(repo_call("tokens"))}
    except (OSError, ConnectionError):  # the database is elsewhere: report without groups
        groups = {}
    doc = review_report(reviews_from_events(events, groups), fast_s=fast_s)
    doc["skipped"] = window.skipped.as_dict()
    if as_json:
        print(json.dumps(doc, indent=2, default=str))
        return
    counts = ", ".join(f"{k} {v}" for k, v in sorted(doc["outcomes"].items())) or "none"
    rate = {k: "-" if v is None else f"{v:.1%}" for k, v in doc["rates"].items()}
    said = f"reject {rate['reject']}, edit {rate['edit']} (of the decided); expire {rate['expire']} (of every request)"
    console.print(f"{doc['reviews']} approval requests since {since}: counts {counts}; rates {said}; {window.skipped.summary()}")
    for dim in ("reason", "tool", "workflow", "policy"):
        rows = doc["reasons"][dim]
        if not rows:
            continue
        table = Table(dim, "reason (reject, edit, or approved: needless)", "count", title=f"reasons given by {dim}")
        for name, counts in rows.items():
            for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]):
                table.add_row(shown(name), shown(reason), str(n))
        console.print(table)
    for reason, examples in doc["examples"].items():
        for ex in examples:
            said = f": “{ex['comment']}”" if ex["comment"] else ""
            console.print(shown(f"{reason}: {ex['tool']} {ex['outcome']} by {ex['approver']}{said} — {ex['explain']}", TEXT_MAX))
    times = Table("by", "group", "n", "p50 s", "p95 s", title="time to decision")
    for by, rows in doc["time_to_decision_s"].items():
        for name, t in rows.items():
            times.add_row(by.removeprefix("by_"), shown(name), str(t["n"]), str(t["p50"]), str(t["p95"]))
    console.print(times)
    stamp = doc["rubber_stamp"]
    console.print(
        f"rubber-stamp signals: {stamp['fast_approvals']} approvals faster than {stamp['fast_s']} s; "
        f"approvers who never reject or edit: {', '.join(map(shown, stamp['never_reject'])) or 'none'}"
    )
