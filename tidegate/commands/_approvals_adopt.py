"""`tidegate approvals adopt`: the signed event each request pending across an upgrade was opened from, kept in it.

Release 23 keeps the `action.decided` a request was opened from (`record.decision`) and refuses to approve a request
without it (`409 request_unproven`): a request opened by an older release has none. The audit log holds every record
of the bus as it was received, byte for byte (`audit.log.value`), so the policy's escalation of each such request is
there, signed. This command, run once by the operator after the approval service is upgraded, reads the pending
requests without one (the approval schema) and the `action.decided` records of their actions (the audit log), both
with the operator's login, which may read both (the approval service's login may not read the audit schema), and
keeps in each request the newest record that the approval service will accept at every showing
(`services.approval._decision_proofs.adoption_refusal`: it verifies as the policy's escalation of exactly that action,
tenant, task and step, and the row's copy is what it signed). A forged or tampered record, one of another action or
tenant, an allow, or a row the database login rewrote is refused, and said why; nothing is copied from it.

A follow-up (an unknown outcome to resolve) keeps the executor's signed `action.unknown` since release 25, and one without
it can be resolved neither way (`_decision_proofs`): for a follow-up pending across the upgrade to 25 this command keeps
that record of its action the same way.

Copying is safe because nothing is taken on trust: the service checks the kept bytes each time it shows the request.
It is idempotent: a request that keeps a decision is not read again; one settled or changed while it runs is left.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import asyncpg
import typer

from servicekit import KitSettings, ToolCatalog, deployment_authority
from servicekit.authority import Authority
from services.approval import UNADOPTED, UNADOPTED_ORDER, ApprovalRecord, UnreadableRequest, adoption_refusal, read_record
from services.audit import PostgresAuditLog, SearchFilters
from tidegate.commands._audit_log import with_audit_log
from tidegate.commands._common import console, err_console, run, settings
from tidegate.commands._progress import Report, progress_display

__all__ = ["Adopted", "adopt", "adopt_pending"]

DECIDED = "tidegate.action.decided"
OPENED_FROM = {"approval": DECIDED, "follow_up": "tidegate.action.unknown"}  # the event each kind of request keeps
CANDIDATES = 50  # `action.decided` records read per action, newest first (an action is decided a handful of times)
_PENDING = (
    "SELECT approval_id, tenant_id, action_id, tool, version, record::text FROM approval.approvals "
    f"WHERE {UNADOPTED} ORDER BY {UNADOPTED_ORDER}"
)
# Only a row still pending, at the version read and still without a decision: a vote or a settle meanwhile wins.
_KEEP = (
    "UPDATE approval.approvals SET version = version + 1, "
    "record = record || jsonb_build_object('decision', $2::text, 'version', version + 1) "
    f"WHERE approval_id = $1 AND version = $3 AND {UNADOPTED} RETURNING approval_id"
)


@dataclass(frozen=True)
class Adopted:
    """What became of one request: `outcome` adopted, not_found, refused or changed (settled or written while this ran)."""

    approval_id: str
    tenant_id: str
    action_id: str
    tool: str
    outcome: str
    why: str | None = None
    event_id: str | None = None  # the adopted record's event id (its place in the audit log: `audit explain <action>`)


def _kept(record: ApprovalRecord, rows: Sequence[tuple[str | None, bytes]], authority: Authority) -> tuple[Adopted, str | None]:
    """The outcome for `record` given its action's `action.decided` records (`(event_id, value)`, newest first), and the text to keep."""
    of = {"approval_id": record.approval_id, "tenant_id": record.tenant_id, "action_id": record.action_id, "tool": record.tool}
    if not rows:
        kept = OPENED_FROM[record.kind].removeprefix("tidegate.")
        none = f"the audit log holds no {kept} of this action (pruned, or not ingested yet: `tidegate audit verify --complete`)"
        return Adopted(**of, outcome="not_found", why=none), None
    refusals = []
    for event_id, value in rows:
        text = value.decode("utf-8", "replace")  # as the approval service keeps what it receives (`_bus_intake`)
        why = adoption_refusal(record, text, authority)
        if why is None:
            return Adopted(**of, outcome="adopted", event_id=event_id), text
        refusals.append(why)
    more = f" (and {len(refusals) - 1} other record(s) of its action refused)" if len(refusals) > 1 else ""
    return Adopted(**of, outcome="refused", why=refusals[0] + more), None


async def adopt_pending(kit: KitSettings, log: PostgresAuditLog, *, dry_run: bool = False, report: Report | None = None) -> list[Adopted]:
    """Keep the policy's signed decision in each pending request without one; what became of each (see the module)."""
    tools = ToolCatalog.load(*kit.tool_dirs) if kit.tools_dir.is_dir() else None
    authority = deployment_authority(kit, tools)  # the approval service's own (`services.approval.app.build`)
    conn = await asyncpg.connect(kit.operator_database_url, timeout=10)
    try:
        pending = await conn.fetch(_PENDING)
        out: list[Adopted] = []
        for done, row in enumerate(pending):
            if report is not None:
                report("adopt", done, len(pending))
            try:
                record = read_record(row["record"], row["approval_id"], row["tenant_id"])
            except UnreadableRequest as exc:  # written by no release of the service (its login?): said, and the others adopted
                of = {k: row[k] for k in ("approval_id", "tenant_id", "action_id", "tool")}
                out.append(Adopted(**of, outcome="refused", why=f"its row is not a request this release reads ({exc.why})"))
                continue
            kind = OPENED_FROM[record.kind]
            found = SearchFilters(event_type=kind, action_id=record.action_id, topic_prefix=kit.topic_prefix, include_duplicates=True)
            rows = [(r.event_id, r.value) for r in await log.search(found, limit=CANDIDATES, newest=True) if r.value is not None]
            outcome, text = _kept(record, rows[::-1], authority)  # newest first
            if text is not None and not dry_run and await conn.fetchval(_KEEP, record.approval_id, text, row["version"]) is None:
                outcome = Adopted(**{**asdict(outcome), "outcome": "changed", "why": "settled or written while this ran: run again"})
            out.append(outcome)
        if report is not None:
            report("adopt", len(pending), len(pending))
        return out
    finally:
        await conn.close()


def adopt(
    dry_run: bool = typer.Option(False, "--dry-run", help="Check each request and say what would be adopted; write nothing."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object: the summary and each request's outcome."),
) -> None:
    """Keep the policy's signed decision in each request pending across the upgrade to release 23, from the audit log.

    Run once after the approval service is upgraded (docs/approval.md), as the operator where the
    database is reachable; running it again does nothing more. Exit 0 when every pending request keeps its decision,
    1 when some did not (not found, refused, or settled or written while it ran), each said: reject it, the agent may
    propose the call again.
    """
    kit = settings()
    with progress_display({"adopt": "pending requests"}, quiet=as_json) as report:
        outcomes = run(with_audit_log(lambda log: adopt_pending(kit, log, dry_run=dry_run, report=report)))
    counts = {k: sum(1 for o in outcomes if o.outcome == k) for k in ("adopted", "not_found", "refused", "changed")}
    if as_json:
        console.print_json(json.dumps({"dry_run": dry_run, **counts, "requests": [asdict(o) for o in outcomes]}))
    else:
        verb = "would adopt" if dry_run else "adopted"
        for o in outcomes:
            line = f"{o.approval_id} ({o.tool}, tenant {o.tenant_id}, action {o.action_id}): "
            said = f"{o.outcome.replace('_', ' ')}: {o.why}"
            line += f"{verb} the signed event {o.event_id} it was opened from" if o.outcome == "adopted" else said
            (console if o.outcome == "adopted" else err_console).print(line, soft_wrap=True, markup=False, highlight=False)
        if not outcomes:
            console.print("nothing to adopt: every pending request keeps the policy's signed decision", highlight=False)
        else:
            console.print(
                f"{verb} {counts['adopted']}, not found {counts['not_found']}, refused {counts['refused']}, "
                f"changed meanwhile {counts['changed']}",
                highlight=False,
            )
        if counts["not_found"] or counts["refused"]:
            err_console.print(
                "a request not adopted cannot be approved: reject it (`tidegate approvals reject`; the agent may propose the call "
                "again); a refused one may have been rewritten with the approval service's database login (docs/security/database.md)",
                soft_wrap=True, highlight=False,
            )  # fmt: skip
    if len(outcomes) > counts["adopted"]:
        raise typer.Exit(1)
