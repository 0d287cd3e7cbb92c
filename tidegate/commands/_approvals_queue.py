"""The approver's queue and decisions in `tidegate approvals`: list, show, approve and reject through the service's HTTP API.

An approval binds to the call the approver saw (its `action_digest`): without `--digest` the call is shown in full and
approved only once a person at a terminal confirms it.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer

from schemas import APPROVE_REASONS
from tidegate.commands._approvals_client import AsJson, Token, Url, call
from tidegate.commands._approvals_shown import decision_did, interactive, outcome_line, queue_lines, request_lines, watched, why_not
from tidegate.commands._common import console, fail, shown

__all__ = ["approve", "list_", "reject", "show"]

ReviewReason = Annotated[
    str | None,
    typer.Option(
        "--reason",
        help="Why you reject or edit: wrong_recipient, wrong_amount, policy_should_have_denied, should_not_need_approval, "
        "tone_content, missing_context, other, or one your tenant added (`GET /api/v1/review-reasons`). Approving the call "
        "unchanged takes only should_not_need_approval (a human should not have been asked: the autonomy signal).",
    ),
]
Wait = Annotated[
    float | None,
    typer.Option(
        "--wait",
        min=0,
        help="Seconds to wait, after a grant, for what became of the call (executed, failed, denied by policy) "
        "(default: 15 at a terminal, 0 in a pipe or a script).",
    ),
]
WAIT_AT_A_TERMINAL_S = 15.0  # a grant runs in a second or two; a person at a terminal is told what became of it
_APPROVAL_ID = re.compile(r"^(ap|fu)-[0-9a-f]{1,64}$")
_STATUSES = ("pending", "granted", "rejected", "expired", "resolved", "all")


def _approval(approval_id: str, then: str = "") -> str:
    """The API path of one request: its id checked for shape and quoted, so a pasted id cannot reach another route.

    Whitespace around it (a paste from a chat message or a table) is stripped first.
    """
    approval_id = approval_id.strip()
    if not _APPROVAL_ID.match(approval_id):
        fail(f"{approval_id!r} is not an approval id (ap-… or fu-… with hex digits, as `tidegate approvals list` shows them)")
    return f"/api/v1/approvals/{quote(approval_id, safe='')}{then}"


def list_(
    url: Url = None,
    token: Token = None,
    tenant: Annotated[str | None, typer.Option(help="Tenant (default: your own).")] = None,
    tool: Annotated[str | None, typer.Option(help="Only this tool.")] = None,
    reason: Annotated[str | None, typer.Option(help="Only this reason code, e.g. outcome_unknown.")] = None,
    status: Annotated[
        str | None, typer.Option(help="pending, granted, rejected, expired, resolved or all (default: pending; with --action: all).")
    ] = None,
    action: Annotated[str | None, typer.Option(help="Only this action id (the idempotency key a system of record shows).")] = None,
    as_json: AsJson = False,
) -> None:
    """List approval requests (pending by default; with --action, of every status unless --status is given)."""
    status = status or ("all" if action else "pending")
    if status not in _STATUSES:
        fail(f"--status is one of {', '.join(_STATUSES)}, not {status!r}")
    params = {"tenant": tenant, "tool": tool, "reason": reason, "status": status, "action": action}
    items = call("GET", url, "/api/v1/approvals", token, params=params)
    if as_json:
        console.print_json(data=items)
        return
    for item in items:
        for line in queue_lines(item):
            console.print(line)
    if not items:
        console.print("nothing waits for you" if status == "pending" else "no request")


def show(approval_id: str, url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """Show one request with its reasons, facts, the task's context and cost so far."""
    item = call("GET", url, _approval(approval_id), token)
    if as_json:
        console.print_json(data=item)
        return
    for line in request_lines(item):
        console.print(line)
    if item["can_decide"]:
        command = f"tidegate approvals approve {item['approval_id']} --digest {item['action_digest']}"
        # One line whatever the terminal's width (the terminal wraps it, Rich does not break it): copied from a narrow
        # terminal, a line Rich broke pasted as two commands, the digest cut off (`--digest` without a value, or half of one).
        console.print(shown(f"to approve this exact call: {command}", None), soft_wrap=True)


def approve(
    approval_id: str,
    url: Url = None,
    token: Token = None,
    comment: Annotated[str | None, typer.Option("--comment", "-m", help="Why.")] = None,
    edit_args: Annotated[
        str | None,
        typer.Option(
            "--edit-args",
            help="Changes to the call's args as JSON (or @file.json), a JSON merge patch (RFC 7396): the keys given replace the "
            "call's, `null` removes one, the others are kept; policy re-evaluates the result.",
        ),
    ] = None,
    digest: Annotated[
        str | None, typer.Option("--digest", help="The action digest you reviewed (default: the current one, shown first).")
    ] = None,
    reason: ReviewReason = None,
    replace_edit: Annotated[
        bool,
        typer.Option(
            "--replace-edit",
            help="Approve another call than another approver's pending edit, discarding it (with -m saying why; they are told). "
            "Without it the service refuses such an approval (409 edit_pending).",
        ),
    ] = False,
    wait: Wait = None,
) -> None:
    """Approve the call (optionally with edited args). Binds to the digest you reviewed.

    Without --digest the call is shown in full and approved only once you confirm it in a terminal: the call may
    have changed since you looked (a re-proposal under the same action id), and an approval binds to what you saw.
    """
    path = _approval(approval_id)
    if reason is not None and edit_args is None and reason not in APPROVE_REASONS:
        fail(
            f"--reason {reason} says the call is wrong: give it with --edit-args (or with `tidegate approvals reject`); approving "
            f"unchanged takes only --reason {' or '.join(APPROVE_REASONS)}"
        )
    edited = None
    current = None
    if edit_args is not None:
        try:
            text = Path(edit_args[1:]).read_text() if edit_args.startswith("@") else edit_args
        except OSError as exc:
            fail(f"--edit-args: cannot read {edit_args[1:]}: {exc.strerror}")
        try:
            patch = json.loads(text)
        except ValueError as exc:
            fail(f"--edit-args is not valid JSON: {exc}")
        if not isinstance(patch, dict):
            fail("--edit-args must be a JSON object")
        current = call("GET", url, path, token)
        edited = merge_patch(current["args"], patch)
        console.print(shown(f"edited args: {json.dumps(edited, sort_keys=True)}", None))
    if digest is None:
        current = current or call("GET", url, path, token)
        for line in request_lines(current):
            console.print(line)
        if not current["can_decide"]:  # settled, expired, not yours: no --digest makes it approvable
            fail(f"nothing to approve: {why_not(current)}")
        if not interactive():
            fail(f"give --digest {current['action_digest']} to approve the call shown above (or run this in a terminal to confirm it)")
        if not typer.confirm("approve this exact call?", default=False):
            fail("not approved")
        digest = current["action_digest"]
        if current.get("edited_args") is not None and current["status"] == "pending" and edited != current["edited_args"]:
            warning = (
                f"{', '.join(current['approvers'])} approved edited args {json.dumps(current['edited_args'], sort_keys=True)}; "
                "yours differ: pass the same --edit-args to concur, or --replace-edit -m <why> to discard that edit"
            )
            console.print(f"[yellow]{shown(warning, None)}[/]")
    item = call(
        "POST",
        url,
        f"{path}/approve",
        token,
        body={"action_digest": digest, "comment": comment, "edited_args": edited}
        | _reason(reason)
        | ({"replace_edit": True} if replace_edit else {}),
    )
    if item["status"] == "pending":
        console.print(f"recorded your approval ({len(item['approvers'])}/{item['required_approvals']}); waiting for another approver")
    else:
        console.print(outcome_line(approval_id.strip(), item))
        _say_what_it_did(item, url, path, token, wait)


def _say_what_it_did(item: dict[str, Any], url: str | None, path: str, token: str | None, wait: float | None) -> None:
    """The line under a decision: what it does next, and of a grant, once its result arrives within `wait`, what became of it.

    The answer said `ap-…: granted` and no more, while the refund ran a second later (the approver2am probe).
    """
    deadline = time.monotonic() + (wait if wait is not None else WAIT_AT_A_TERMINAL_S if watched() else 0.0)
    while item["status"] == "granted" and item.get("outcome") is None and time.monotonic() < deadline:
        time.sleep(1.0)
        item = call("GET", url, path, token)
    if said := decision_did(item):
        console.print(shown(said, None))


def merge_patch(target: Any, patch: Any) -> Any:
    """`patch` applied to `target` as a JSON merge patch (RFC 7396): what `--edit-args` means.

    Eight lines of the RFC's own pseudocode; no kept library is worth a dependency for them.
    """
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def _reason(reason: str | None) -> dict[str, str]:
    """The `review_reason` of a body, when one was given."""
    return {"review_reason": reason} if reason else {}


def reject(
    approval_id: str,
    url: Url = None,
    token: Token = None,
    comment: Annotated[str | None, typer.Option("--comment", "-m", help="Why.")] = None,
    reason: ReviewReason = None,
) -> None:
    """Reject the call (for a follow-up: record that it did not happen)."""
    item = call("POST", url, _approval(approval_id, "/reject"), token, body={"comment": comment} | _reason(reason))
    console.print(outcome_line(approval_id.strip(), item))
    if said := decision_did(item):
        console.print(shown(said, None))
