"""`tidegate approvals`: list, show, approve and reject through the approval service's HTTP API; manage tokens."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import httpx
import typer
from rich.table import Table

from tidegate.commands._common import TEXT_MAX, console, fail, one_line, run, settings, shown

__all__ = ["app", "configured_url", "service_url", "token_app"]

app = typer.Typer(
    help="Approvers: the queue of escalated actions, and your decisions (HTTP API of the approval service).", no_args_is_help=True
)
token_app = typer.Typer(
    help="Approver API tokens (stored hashed in the approval service's schema; operator commands, run where the database is reachable). "
    "Tokens expire (default TIDEGATE_APPROVAL_TOKEN_TTL_DAYS, 30 days); rotate replaces one and revokes the old at once.",
    no_args_is_help=True,
)
app.add_typer(token_app, name="token")

Url = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="TIDEGATE_APPROVAL_URL",
        help="Base URL of the approval service (default: where it listens by the same settings, TIDEGATE_APPROVAL_PUBLIC_URL "
        "or TIDEGATE_APPROVAL_HTTP_HOST and _HTTP_PORT).",
    ),
]
Token = Annotated[
    str | None, typer.Option("--token", envvar="TIDEGATE_APPROVER_TOKEN", help="Your approver token (or a one-time link token).")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table.")]
ReviewReason = Annotated[
    str | None,
    typer.Option(
        "--reason",
        help="Why you reject or edit: wrong_recipient, wrong_amount, policy_should_have_denied, should_not_need_approval, "
        "tone_content, missing_context, other, or one your tenant added (`GET /api/v1/review-reasons`).",
    ),
]
_ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # a service listening on every address is reached on this machine's loopback

_STATUS_WORDS = {
    401: "not authenticated: the token is unknown, revoked, expired or already used (set TIDEGATE_APPROVER_TOKEN or pass --token)",
    429: "too many requests: wait and try again",
    403: "not allowed",
    404: "not found",
    409: "conflict: the request is no longer in the state you saw",
    422: "invalid input",
    503: "the approval service cannot answer now (starting, or its database away); try again in a moment",
}


def configured_url() -> str | None:
    """Where the approval service listens, by the settings it reads itself: its public URL, else its HTTP host and port.

    None when its port is 0 (any free port): then only `--url` can say where.
    """
    from pydantic import ValidationError

    from services.approval import ApprovalSettings

    try:
        service = ApprovalSettings()
    except ValidationError as exc:
        fail(f"the approval service's settings (TIDEGATE_APPROVAL_*): {exc.errors()[0]['msg']}; or pass --url", code=2)
    if service.public_url:
        return service.public_url
    if service.http_port == 0:
        return None
    host = _ANY_ADDRESS.get(service.http_host, service.http_host)
    return f"http://[{host}]:{service.http_port}" if ":" in host else f"http://{host}:{service.http_port}"


def service_url() -> str:
    """The URL the approvals commands call when no `--url` (nor TIDEGATE_APPROVAL_URL) is given."""
    url = configured_url()
    if url is None:
        fail("TIDEGATE_APPROVAL_HTTP_PORT is 0 (any free port): pass --url or set TIDEGATE_APPROVAL_URL to where it listens", code=2)
    return url


def _explain(response: httpx.Response) -> NoReturn:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text
    message = detail.get("message") if isinstance(detail, dict) else json.dumps(detail)
    code = f" [{detail.get('code')}]" if isinstance(detail, dict) and detail.get("code") else ""
    words = _STATUS_WORDS.get(response.status_code, "error")
    fail(f"{response.status_code} {words}{one_line(code)}: {one_line(message, TEXT_MAX)}")  # fail shows [..] as text


def _call(
    method: str, url: str | None, path: str, token: str | None, body: dict[str, Any] | None = None, params: dict[str, Any] | None = None
) -> Any:
    url = url or service_url()
    if not token:
        fail("no approver token: set TIDEGATE_APPROVER_TOKEN or pass --token (an admin creates one with `tidegate approvals token create`)")
    try:
        response = httpx.request(
            method,
            url.rstrip("/") + path,
            json=body,
            params={k: v for k, v in (params or {}).items() if v is not None},
            headers={"Authorization": f"Bearer {token}"},
            timeout=15,
        )
    except httpx.HTTPError as exc:
        fail(f"cannot reach the approval service at {url}: {exc} (is it running? `tidegate up`)")
    if response.status_code >= 400:
        _explain(response)
    return response.json()


CONTEXT_ARGS_MAX = 300  # characters of an earlier call's args in `show` (cut with …; `--json` has them all)
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


def _interactive() -> bool:
    """Whether a person at a terminal can confirm what is shown (not a script, not a pipe)."""
    return sys.stdin.isatty()


def _minute(iso: str) -> str:
    """A time of the API as a person reads it in a queue: `2026-12-05 05:40 UTC` (as given when it is not ISO 8601)."""
    try:
        return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return iso


def _decided(item: dict[str, Any]) -> str | None:
    """Who settled a request and when (`resolved (confirmed_done) by sue@… at …`); None while it is open or when nobody decided it."""
    if item["status"] == "pending" or not item.get("decided_by"):
        return None
    found = f" ({item['resolution']})" if item.get("resolution") else ""
    at = f" at {item['decided_at']}" if item.get("decided_at") else ""
    return f"{item['status']}{found} by {item['decided_by']}{at}"


def _why_not(item: dict[str, Any]) -> str:
    """Why the caller cannot decide it: `already …` for a settled request (the service's reason may name a group instead)."""
    decided = _decided(item)
    return f"already {decided}" if decided else str(item["cannot_decide_because"])


def _not_counted(item: dict[str, Any]) -> list[str]:
    """A line for each approval the request's row holds that the service does not count: who, why, and what to do."""
    return [
        f"[yellow]not counted: {shown(n['approver'])}: {shown(n['why'], TEXT_MAX)}; {shown(n['fix'], TEXT_MAX)}[/]"
        for n in item.get("not_counted") or []
    ]


def _print_one(item: dict[str, Any]) -> None:
    """One request, each value as it is and on its own line (`shown`): text a proposer wrote cannot fake another line."""
    what = (item["approval_id"], item["kind"], item["status"], item["tenant_id"])
    console.print("[bold]{}[/]  {}  [bold]{}[/]  {}".format(*map(shown, what)) + f"  task {shown(item['task_id'])}")
    console.print(
        f"tool {shown(item['tool'])} (risk {shown(item['risk'])}, costs ~${item.get('estimated_cost_usd') or 0:.4f}), "
        f"requested by {shown(item.get('requested_by') or '?')}, expires {shown(item['expires_at'])}"
    )
    summary = item.get("summary") or {}
    if summary.get("subject"):
        console.print("what: " + shown(summary["subject"], None))
    if summary.get("tool_does"):
        console.print("the tool: " + shown(summary["tool_does"], TEXT_MAX))
    console.print("args: " + shown(json.dumps(item["args"], sort_keys=True), limit=None))
    console.print(f"digest: {shown(item['action_digest'])}")
    for found in summary.get("untrusted_args") or []:
        console.print(f"[yellow]untrusted: {shown(found['arg'])}: {shown(found['why'], TEXT_MAX)}[/]")
    if summary.get("on_approve"):
        console.print("on approve: " + shown(summary["on_approve"], TEXT_MAX))
    for reason in item["reasons"]:
        console.print(f"  reason [cyan]{shown(reason['code'])}[/] ({shown(reason['policy_id'])}): " + shown(reason["message"], TEXT_MAX))
    if item.get("facts"):
        console.print("facts: " + shown(json.dumps(item["facts"], sort_keys=True), limit=None))
    if item.get("result_error"):
        error = item["result_error"]
        console.print(f"executor error: {shown(error.get('type'))}: " + shown(error.get("message"), TEXT_MAX))
    console.print(f"approvals: {len(item['approvers'])}/{item['required_approvals']} " + ", ".join(map(shown, item["approvers"])))
    for said in _not_counted(item):
        console.print("  " + said)
    if item.get("killswitch"):
        ks = item["killswitch"]
        console.print(f"[yellow]kill switch active on {shown(ks['tool'])}@{shown(ks['tenant_id'])}: {shown(ks['reason'], TEXT_MAX)}[/]")
    if not item["can_decide"]:
        console.print(f"[yellow]you cannot decide it: {shown(_why_not(item), TEXT_MAX)}[/]")
    if "cost" in item:
        cost = item["cost"]
        review = summary.get("human_review_usd")
        console.print(
            f"task cost so far: spent ${cost['spent_usd']:.4f}, reserved ${cost['reserved_usd']:.4f}"
            + (f"; your decision costs ${review:.2f} of a person's time (as `tidegate costs` prices it)" if review is not None else "")
        )
        for ev in item.get("context", []):
            kind = ev["type"].removeprefix("tidegate.")
            line = (ev["at"], kind, ev["action_id"], ev["tool"], ev.get("outcome") or "")
            called = f"  {shown(json.dumps(ev['args'], sort_keys=True), CONTEXT_ARGS_MAX)}" if ev.get("args") else ""
            console.print("  " + "  ".join(map(shown, line)) + f"  ${ev['cost_usd']:.4f}" + called)


@app.command("list")
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
    items = _call("GET", url, "/api/v1/approvals", token, params=params)
    if as_json:
        console.print_json(data=items)
        return
    # One block a request, its id first and whole whatever the width (a pipe is 80 columns): it is what `approve` and `show`
    # take. The second line tells requests apart: the amount, payee and record (the summary).
    for item in items:
        uncounted = len(item.get("not_counted") or [])
        approvals_so_far = f"{len(item['approvers'])}/{item['required_approvals']} approvals" + (
            f" ({uncounted} not counted)" if uncounted else ""
        )
        what = f"{item['tool']} · {item['tenant_id']}"
        head = (item["approval_id"], item["status"], what, approvals_so_far)
        console.print("[bold]{}[/]  {}  {}  {}".format(*map(shown, head)))
        subject = (item.get("summary") or {}).get("subject")
        if subject:
            console.print("  " + shown(subject, None))
        decide = "you may decide: " + ("yes" if item["can_decide"] else "no: " + shown(_why_not(item), TEXT_MAX))
        reasons = ", ".join(shown(r["code"]) for r in item["reasons"])
        console.print(f"  {reasons} · expires {shown(_minute(item['expires_at']))} · {decide}")
        for said in _not_counted(item):
            console.print("  " + said)
    if not items:
        console.print("nothing waits for you" if status == "pending" else "no request")


@app.command()
def show(approval_id: str, url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """Show one request with its reasons, facts, the task's context and cost so far."""
    item = _call("GET", url, _approval(approval_id), token)
    if as_json:
        console.print_json(data=item)
        return
    _print_one(item)
    if item["can_decide"]:
        command = f"tidegate approvals approve {item['approval_id']} --digest {item['action_digest']}"
        console.print(shown(f"to approve this exact call: {command}", None))


@app.command()
def approve(
    approval_id: str,
    url: Url = None,
    token: Token = None,
    comment: Annotated[str | None, typer.Option("--comment", "-m", help="Why.")] = None,
    edit_args: Annotated[
        str | None, typer.Option("--edit-args", help="Replacement args as JSON (or @file.json); policy re-evaluates them.")
    ] = None,
    digest: Annotated[
        str | None, typer.Option("--digest", help="The action digest you reviewed (default: the current one, shown first).")
    ] = None,
    reason: ReviewReason = None,
) -> None:
    """Approve the call (optionally with edited args). Binds to the digest you reviewed.

    Without --digest the call is shown in full and approved only once you confirm it in a terminal: the call may
    have changed since you looked (a re-proposal under the same action id), and an approval binds to what you saw.
    """
    path = _approval(approval_id)
    if reason is not None and edit_args is None:
        fail("--reason says why you edited the args: give it with --edit-args (or with `tidegate approvals reject`)")
    edited = None
    if edit_args is not None:
        try:
            text = Path(edit_args[1:]).read_text() if edit_args.startswith("@") else edit_args
        except OSError as exc:
            fail(f"--edit-args: cannot read {edit_args[1:]}: {exc.strerror}")
        try:
            edited = json.loads(text)
        except ValueError as exc:
            fail(f"--edit-args is not valid JSON: {exc}")
        if not isinstance(edited, dict):
            fail("--edit-args must be a JSON object")
    if digest is None:
        current = _call("GET", url, path, token)
        _print_one(current)
        if not current["can_decide"]:  # settled, expired, not yours: no --digest makes it approvable
            fail(f"nothing to approve: {_why_not(current)}")
        if not _interactive():
            fail(f"give --digest {current['action_digest']} to approve the call shown above (or run this in a terminal to confirm it)")
        if not typer.confirm("approve this exact call?", default=False):
            fail("not approved")
        digest = current["action_digest"]
        if current.get("edited_args") is not None and current["status"] == "pending" and edited != current["edited_args"]:
            warning = (
                f"{', '.join(current['approvers'])} approved edited args {json.dumps(current['edited_args'], sort_keys=True)}; "
                "yours differ, so the count restarts with you (pass the same --edit-args to concur)"
            )
            console.print(f"[yellow]{shown(warning, None)}[/]")
    item = _call(
        "POST",
        url,
        f"{path}/approve",
        token,
        body={"action_digest": digest, "comment": comment, "edited_args": edited} | _reason(reason if edited is not None else None),
    )
    if item["status"] == "pending":
        console.print(f"recorded your approval ({len(item['approvers'])}/{item['required_approvals']}); waiting for another approver")
    else:
        _print_outcome(approval_id.strip(), item)


def _print_outcome(approval_id: str, item: dict[str, Any]) -> None:
    """What became of the request after your decision: its status, and how it was resolved if it was."""
    resolution = f" ({shown(item['resolution'], TEXT_MAX)})" if item.get("resolution") else ""
    console.print(f"{shown(approval_id)}: [bold]{shown(item['status'])}[/]{resolution}")


def _reason(reason: str | None) -> dict[str, str]:
    """The `review_reason` of a body, when one was given."""
    return {"review_reason": reason} if reason else {}


@app.command()
def reject(
    approval_id: str,
    url: Url = None,
    token: Token = None,
    comment: Annotated[str | None, typer.Option("--comment", "-m", help="Why.")] = None,
    reason: ReviewReason = None,
) -> None:
    """Reject the call (for a follow-up: record that it did not happen)."""
    item = _call("POST", url, _approval(approval_id, "/reject"), token, body={"comment": comment} | _reason(reason))
    _print_outcome(approval_id.strip(), item)


@asynccontextmanager
async def _operator_repo() -> AsyncIterator[Any]:
    """The approval repository as the operator: tokens it writes are signed with the operator's key, rows it reads checked."""
    from servicekit import apply_migrations, create_pool, deployment_authority, operator_key
    from services.approval import PgApprovalRepository, approval_seals

    kit = settings()
    seals = approval_seals(deployment_authority(kit), operator_key=operator_key(kit))
    pool = await create_pool(kit.operator_database_url, max_size=2)
    try:
        import services.approval

        await apply_migrations(pool, "approval", Path(services.approval.__file__).parent / "migrations")
        yield PgApprovalRepository(pool, seals=seals)
    finally:
        await pool.close()


async def _repo_call(what: str, *args: Any, **kwargs: Any) -> Any:
    """Call one method of the approval repository as the operator (`_operator_repo`)."""
    async with _operator_repo() as repo:
        return await getattr(repo, what)(*args, **kwargs)


ExpiresIn = Annotated[
    float | None,
    typer.Option("--expires-in-days", min=0.001, max=3650, help="Lifetime of the token (default: TIDEGATE_APPROVAL_TOKEN_TTL_DAYS, 30)."),
]


def _expiry(days: float | None) -> datetime:
    from services.approval import ApprovalSettings

    return datetime.now(UTC) + timedelta(days=days or ApprovalSettings().token_ttl_days)


@token_app.command("create")
def token_create(
    approver: Annotated[str, typer.Option(help="The approver's identity, e.g. bob@acme.example.")],
    groups: Annotated[
        str, typer.Option(help="Comma-separated approver groups, e.g. finance,support (`admin`: manages the tenant's webhooks).")
    ],
    tenant: Annotated[str | None, typer.Option(help="Tenant the approver decides for; the token acts in that tenant only.")] = None,
    operator: Annotated[
        bool, typer.Option("--operator", help="An operator token: every tenant (tenant `*`), webhook endpoints of any tenant.")
    ] = False,
    expires_in_days: ExpiresIn = None,
) -> None:
    """Create an approver token and print it once (only its SHA-256 is stored)."""
    from servicekit.people import approver_name
    from services.approval import hash_token, new_token

    names = [g.strip() for g in groups.split(",") if g.strip()]
    if not names:
        fail("--groups needs at least one group")
    if operator == (tenant is not None and tenant != "*"):
        fail("give either --tenant TENANT (an approver of that tenant) or --operator (every tenant), not both")
    if not operator and tenant in (None, "*"):
        fail("--tenant is required (a token acts in one tenant); an operator token across tenants is --operator")
    tenant_id = "*" if operator else str(tenant)
    try:
        approver = approver_name(approver)  # stored as the store would: normalised (`servicekit.people`)
    except ValueError as exc:
        fail(f"--approver: {exc}", code=2)
    token = new_token()
    info = run(
        _repo_call("add_token", hash_token(token), approver, tenant_id, names, expires_at=_expiry(expires_in_days), operator=operator)
    )
    kind = "operator token" if operator else "token"
    console.print(
        f"{kind} {info.token_id} for {shown(approver)} ({shown(tenant_id)}; groups {shown(', '.join(names))}; "
        f"expires {info.expires_at:%Y-%m-%d %H:%M}). Shown once, keep it safe:"
    )
    print(token)


Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (for scripts): what is shown is done.")]


def _successor_expiry(old: Any, days: float | None) -> datetime:
    """When a rotated token's successor expires: when the old one would have (what it had left), or `days` from now when given.

    A row that does not verify (one made before tokens were signed, re-issued) may carry any expiry, one the database's
    login wrote too: its successor keeps at most the default lifetime.
    """
    if days is not None or old.expires_at is None:
        return _expiry(days)
    expires: datetime = old.expires_at
    return expires if old.unproven is None else min(expires, _expiry(None))


def _live(info: Any) -> bool:
    """Whether a token (as `token list` reads it) is neither revoked nor expired."""
    return bool(info.revoked_at is None and info.expires_at is not None and info.expires_at > datetime.now(UTC))


async def _rotate_each(olds: list[Any], days: float | None) -> list[tuple[Any, Any, str]]:
    """Rotate each token (its successor signed with the operator's key), in one session: (old, successor or None, new token)."""
    from services.approval import hash_token, new_token

    done = []
    async with _operator_repo() as repo:
        for old in olds:
            token = new_token()
            # A row that verified when shown is rotated only if it still does (no re-issue of a row changed since).
            info = await repo.rotate_token(old.token_id, hash_token(token), _successor_expiry(old, days), reissue=old.unproven is not None)
            done.append((old, info, token))
    return done


def _print_rotated(old: Any, info: Any, token: str) -> None:
    successor = f"its successor {info.token_id} for {shown(info.approver)} expires {info.expires_at:%Y-%m-%d %H:%M}"
    console.print(f"{shown(old.token_id)} revoked; {successor}. Shown once, keep it safe:")
    print(token)


@token_app.command("rotate")
def token_rotate(
    token_id: Annotated[
        str | None, typer.Argument(help="The token to replace (its id, as `token list` shows it); none with --all.")
    ] = None,
    expires_in_days: Annotated[
        float | None,
        typer.Option(
            "--expires-in-days",
            min=0.001,
            max=3650,
            help="Lifetime of the successor from now (default: it expires when the old token would have).",
        ),
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Every live token of --tenant (after a leak): shown, then rotated once you confirm (or --yes).")
    ] = False,
    tenant: Annotated[str | None, typer.Option(help="With --all: the tenant whose tokens are rotated (`*`: the operator tokens).")] = None,
    yes: Yes = False,
) -> None:
    """Replace a live token with a new one (same approver, tenant, groups and expiry), print it once, and revoke the old one at once.

    The successor expires when the old token would have, unless --expires-in-days gives it a lifetime from now. It is
    signed with your operator key. A token made before tokens were signed (or one whose row does not verify) is
    re-issued too, once you confirm who it names (or with --yes): the service refuses such a token until then, and its
    successor keeps at most the default lifetime (TIDEGATE_APPROVAL_TOKEN_TTL_DAYS). With --all, every live token of
    a tenant is rotated, except such unverified ones: each of those is re-issued alone, after checking who it names.
    """
    if all_:
        _rotate_all(token_id, tenant, expires_in_days, yes)
        return
    if token_id is None or tenant is not None:
        fail("give the id of the token to rotate (`tidegate approvals token list`), or --all --tenant TENANT for every token of a tenant")
    found = next((t for t in run(_repo_call("tokens")) if t.token_id == token_id), None)
    if found is None or not _live(found):
        fail(f"no live token {token_id} (unknown, revoked or expired: create a new one)")
    if found.unproven is not None:
        console.print(
            f"[yellow]{shown(token_id)} is {shown(found.unproven, TEXT_MAX)}: the service refuses it. Its row names "
            f"{shown(found.approver)} ({shown(found.tenant_id)}; groups {shown(', '.join(found.groups))}"
            f"{'; operator' if found.operator else ''}): anyone with the service's database login could have written it.[/]"
        )
        if not yes and (not _interactive() or not typer.confirm("re-issue it, signed with your operator key?", default=False)):
            fail("not re-issued (revoke it with `tidegate approvals token revoke`, or confirm in a terminal, or pass --yes)")
    [(old, info, token)] = run(_rotate_each([found], expires_in_days))
    if info is None:
        fail(f"{token_id} was not rotated: it was revoked, expired or changed since it was read (`tidegate approvals token list`)")
    _print_rotated(old, info, token)


def _rotate_all(token_id: str | None, tenant: str | None, days: float | None, yes: bool) -> None:
    """`token rotate --all --tenant T`: every live token of the tenant whose row verifies, shown first and confirmed."""
    if token_id is not None or tenant is None:
        fail("--all rotates every live token of one tenant: give --tenant TENANT (and no token id)")
    live = [t for t in run(_repo_call("tokens")) if t.tenant_id == tenant and _live(t)]
    olds, unverified = [t for t in live if t.unproven is None], [t for t in live if t.unproven is not None]
    for t in unverified:
        console.print(
            f"[yellow]left as it is: {shown(t.token_id)} ({shown(t.approver)}) is {shown(t.unproven, TEXT_MAX)}: the service refuses it; "
            f"re-issue it alone after checking who it names (`tidegate approvals token rotate {shown(t.token_id)}`) or revoke it[/]"
        )
    if not olds:
        fail(f"no live token of tenant {tenant!r} to rotate")
    table = Table("token id", "approver", "groups", "expires", "successor expires", title=f"live tokens of {shown(tenant)}")
    for t in olds:
        assert t.expires_at is not None  # live
        table.add_row(
            shown(t.token_id),
            shown(t.approver),
            shown(",".join(t.groups)),
            f"{t.expires_at:%Y-%m-%d %H:%M}",
            f"{_successor_expiry(t, days):%Y-%m-%d %H:%M}",
        )
    console.print(table)
    if not yes:
        if not _interactive():
            fail(f"give --yes to rotate these {len(olds)} tokens without a prompt (or run this in a terminal to confirm)")
        if not typer.confirm(f"revoke these {len(olds)} tokens now and print their successors?", default=False):
            fail("nothing rotated")
    missed = []
    for old, info, token in run(_rotate_each(olds, days)):
        if info is None:
            missed.append(old.token_id)
        else:
            _print_rotated(old, info, token)
    if missed:
        fail(f"not rotated (revoked, expired or changed since they were read): {', '.join(missed)}")


@token_app.command("list")
def token_list() -> None:
    """List tokens (never the tokens themselves), with the key that signed each; a token the service refuses says why."""
    table = Table("token id", "approver", "tenant", "groups", "created", "expires", "last used", "revoked", "proof")
    for info in run(_repo_call("tokens")):
        table.add_row(
            info.token_id,
            shown(info.approver),
            shown(info.tenant_id) + (" (operator)" if info.operator else ""),
            shown(",".join(info.groups)),
            f"{info.created_at:%Y-%m-%d %H:%M}",
            f"{info.expires_at:%Y-%m-%d %H:%M}" if info.expires_at else "",
            f"{info.last_used_at:%Y-%m-%d %H:%M}" if info.last_used_at else "",
            f"{info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "",
            shown(info.key_id or "") if info.unproven is None else "[red]REFUSED: " + shown(info.unproven, TEXT_MAX) + "[/]",
        )
    console.print(table)


@token_app.command("revoke")
def token_revoke(token_id: str) -> None:
    """Revoke a token at once."""
    if not run(_repo_call("revoke_token", token_id)):
        fail(f"no live token {token_id}")
    console.print(f"revoked {shown(token_id)}")


@app.command()
def report(
    since: Annotated[str, typer.Option("--since", help="Start: a duration ago (`30d`, `12h`) or an ISO time.")] = "30d",
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    fast_s: Annotated[float, typer.Option("--fast", help="An approval faster than this many seconds is a rubber-stamp signal.")] = 10.0,
    as_json: AsJson = False,
) -> None:
    """Why humans rejected or edited calls (by tool, workflow, reason, policy, with examples to explain), and approval quality.

    Reads the recorded events (tasks, decisions, approvals) of the window as the ops principal; approver groups come
    from the approval service's tokens where the database is reachable.
    """
    from services.approval import review_report, reviews_from_events
    from tidegate.ops.autonomy import read_record

    window = run(read_record(settings(), since, tenant))
    events = [r.event for r in window.events]
    try:
        groups = {t.approver: ",".join(t.groups) or "?" for t in run(_repo_call("tokens"))}
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
        table = Table(dim, "reason (reject or edit)", "count", title=f"rejections and edits by {dim}")
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
