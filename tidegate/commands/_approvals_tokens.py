"""`tidegate approvals token`: approver API tokens, made, rotated, listed and revoked as the operator, in the database.

Tokens are stored hashed in the approval service's schema and signed with the operator's key; these commands run where
the database is reachable. A row that does not verify (made before tokens were signed, or written by the database's
login) is shown refused, and re-issued only once the operator confirms who it names (or passes --yes).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from tidegate.commands._approvals_shown import interactive
from tidegate.commands._common import TEXT_MAX, console, fail, run, settings, shown
from tidegate.commands._whole_ids import print_listing

if TYPE_CHECKING:
    from services.approval import PgApprovalRepository, RowPins, TokenInfo

__all__ = ["repo_call", "token_app"]

token_app = typer.Typer(
    help="Approver API tokens (stored hashed in the approval service's schema; operator commands, run where the database is reachable). "
    "Tokens expire (default TIDEGATE_APPROVAL_TOKEN_TTL_DAYS, 30 days); rotate replaces one and revokes the old at once.",
    no_args_is_help=True,
)


@asynccontextmanager
async def _operator_repo(*, revocations: bool = True) -> AsyncIterator[PgApprovalRepository]:
    """The approval repository as the operator: tokens it writes are signed with the operator's key, rows it reads checked.

    It reads `control` and `directory` first (the tokens revoked there stay revoked whatever their rows say) and
    publishes each revocation on `control`, signed with the operator's key, before it writes it in the table.
    `revocations` False: neither (a token made, which reads and revokes none: `token create --force` needs no bus).
    """
    from servicekit import apply_migrations, create_pool, deployment_authority, operator_key
    from services.approval import PgApprovalRepository, RowPins, approval_seals
    from tidegate.commands._common import publish_signed_control, signed_control
    from tidegate.commands.killswitch import read_control

    kit = settings()
    pins = None
    if revocations:
        pins = RowPins(
            await read_control(kit, "directory", await read_control(kit)),
            sign=lambda record, sequence: signed_control(kit, record, "not revoked", "nothing changed", sequence=sequence),
            publish=lambda record: publish_signed_control(kit, record),
            operator=True,
        )
    seals = approval_seals(deployment_authority(kit), operator_key=operator_key(kit), pins=pins)
    pool = await create_pool(kit.operator_database_url, max_size=2)
    try:
        import services.approval

        await apply_migrations(pool, "approval", Path(services.approval.__file__).parent / "migrations")
        yield PgApprovalRepository(pool, seals=seals)
    finally:
        await pool.close()


async def repo_call(what: str, *args: Any, **kwargs: Any) -> Any:
    """Call one method of the approval repository as the operator (`_operator_repo`; making a token reads no bus)."""
    async with _operator_repo(revocations=what != "add_token") as repo:
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
    force: Annotated[
        bool,
        typer.Option("--force", help="Create it for a tenant that is not onboarded (one onboarded later), without reading `control`."),
    ] = False,
) -> None:
    """Create an approver token and print it once (only its SHA-256 is stored).

    A tenant that is not onboarded is refused (a typo made a token whose approver saw an empty queue for ever), and a
    group that none of the tenant's `approver_groups` names is warned about: it counts only where any approver does.
    """
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
    if not operator and not force:
        _check_tenant_and_groups(tenant_id, names)
    token = new_token()
    info = run(
        repo_call("add_token", hash_token(token), approver, tenant_id, names, expires_at=_expiry(expires_in_days), operator=operator)
    )
    kind = "operator token" if operator else "token"
    console.print(
        f"{kind} {info.token_id} for {shown(approver)} ({shown(tenant_id)}; groups {shown(', '.join(names))}; "
        f"expires {info.expires_at:%Y-%m-%d %H:%M}). Shown once, keep it safe:"
    )
    print(token)


def _check_tenant_and_groups(tenant: str, groups: list[str]) -> None:
    """Refuse a tenant nothing onboarded (exit 2, the nearest names); warn of groups the tenant's `approver_groups` never name.

    A class the tenant's `approver_groups` leaves out counts any approver, so a group of no class is not wrong as such (a
    `support` approver for low-risk writes); but one meant for a class that names its groups (`fnance` for `financial`)
    would see the request and be told its vote does not count, or not see it at all.
    """
    import difflib

    from tidegate.commands._known import onboarded_tenants, pack_settings, refuse_unknown
    from tidegate.commands.killswitch import read_control

    kit = settings()
    state = run(read_control(kit))
    run(read_control(kit, "directory", state))
    pack = pack_settings(kit, state)
    refuse_unknown("tenant", tenant, onboarded_tenants(kit, state, pack), "onboarded (`tidegate tenant show` lists them)")
    effective = pack.of_control(state, tenant) or pack.tenant(tenant)
    named = {group for each in effective.approver_groups.values() for group in each}
    for group in groups if named else ():  # no class names its groups: every approver counts everywhere
        if group == "admin" or group in named:
            continue
        near = difflib.get_close_matches(group, sorted(named), n=2)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        classes = "; ".join(f"{risk}: {', '.join(each)}" for risk, each in sorted(effective.approver_groups.items()))
        console.print(
            f"[yellow]warning:[/] group {shown(group)}{hint} is in none of {shown(tenant)}'s approver_groups ({shown(classes)}): "
            "its approvals count only for the classes that accept any approver"
        )


Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (for scripts): what is shown is done.")]


def _successor_expiry(old: TokenInfo, days: float | None) -> datetime:
    """When a rotated token's successor expires: when the old one would have (what it had left), or `days` from now when given.

    A row that does not verify (one made before tokens were signed, re-issued) may carry any expiry, one the database's
    login wrote too: its successor keeps at most the default lifetime.
    """
    if days is not None or old.expires_at is None:
        return _expiry(days)
    expires: datetime = old.expires_at
    return expires if old.unproven is None else min(expires, _expiry(None))


def _live(info: TokenInfo) -> bool:
    """Whether a token (as `token list` reads it) is neither revoked nor expired."""
    return bool(info.revoked_at is None and info.expires_at is not None and info.expires_at > datetime.now(UTC))


async def _rotate_each(olds: list[TokenInfo], days: float | None) -> tuple[list[tuple[TokenInfo, TokenInfo | None, str]], str]:
    """Rotate each token (its successor signed with the operator's key), in one session: (old, successor or None, new token).

    And, when PostgreSQL failed on the way, what it failed on (`_rotation_failed`): the successors made before are
    returned all the same (each shown once: lost, its approver would have no token), the rest are not tried.
    """
    from services.approval import hash_token, new_token

    done: list[tuple[TokenInfo, TokenInfo | None, str]] = []
    repo: PgApprovalRepository | None = None
    try:
        async with _operator_repo() as opened:
            repo = opened
            for old in olds:
                token = new_token()
                # A row that verified when shown is rotated only if it still does (no re-issue of a row changed since).
                info = await repo.rotate_token(
                    old.token_id, hash_token(token), _successor_expiry(old, days), reissue=old.unproven is not None
                )
                done.append((old, info, token))
    except _database_errors() as exc:
        if isinstance(exc, FileNotFoundError | PermissionError) and repo is None:
            raise  # a key file missing or not allowed to sign, before anything is done: `run` says which
        return done, _rotation_failed(olds[len(done) :], f"{type(exc).__name__}: {exc}", repo.token_pins if repo is not None else None)
    return done, ""


def _rotation_failed(left: list[TokenInfo], failure: str, pins: RowPins | None) -> str:
    """What a rotation that PostgreSQL failed left: the token it was rotating (revoked or not) and those not tried."""
    current, rest = left[0], left[1:]
    if pins is not None and pins.revoked(current.token_id):
        tenant = "--operator" if current.operator else f"--tenant {current.tenant_id}"
        said = (
            f"token {current.token_id} IS revoked (published on `control`: every approval service refuses it), but PostgreSQL "
            f"failed before its successor was stored ({failure}): {current.approver} has no successor. Once PostgreSQL "
            f"answers, run `tidegate approvals token revoke {current.token_id}` (writes its row) and `tidegate approvals "
            f"token create --approver {current.approver} --groups {','.join(current.groups)} {tenant}`"
        )
    else:
        said = (
            f"token {current.token_id} is NOT rotated: it still works ({failure}, before anything was published); run "
            f"`tidegate approvals token rotate {current.token_id}` again once that is mended"
        )
    return said + (f"; not tried, still live: {', '.join(t.token_id for t in rest)}" if rest else "")


def _print_rotated(old: TokenInfo, info: TokenInfo, token: str) -> None:
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
    tokens: list[TokenInfo] = run(repo_call("tokens"))
    found = next((t for t in tokens if t.token_id == token_id), None)
    if found is None or not _live(found):
        fail(f"no live token {token_id} (unknown, revoked or expired: create a new one)")
    if found.unproven is not None:
        console.print(
            f"[yellow]{shown(token_id)} is {shown(found.unproven, TEXT_MAX)}: the service refuses it. Its row names "
            f"{shown(found.approver)} ({shown(found.tenant_id)}; groups {shown(', '.join(found.groups))}"
            f"{'; operator' if found.operator else ''}): anyone with the service's database login could have written it.[/]"
        )
        if not yes and (not interactive() or not typer.confirm("re-issue it, signed with your operator key?", default=False)):
            fail("not re-issued (revoke it with `tidegate approvals token revoke`, or confirm in a terminal, or pass --yes)")
    rotated, failed = run(_rotate_each([found], expires_in_days))
    if failed:
        fail(failed)
    [(old, info, token)] = rotated
    if info is None:
        fail(f"{token_id} was not rotated: it was revoked, expired or changed since it was read (`tidegate approvals token list`)")
    _print_rotated(old, info, token)


def _rotate_all(token_id: str | None, tenant: str | None, days: float | None, yes: bool) -> None:
    """`token rotate --all --tenant T`: every live token of the tenant whose row verifies, shown first and confirmed."""
    if token_id is not None or tenant is None:
        fail("--all rotates every live token of one tenant: give --tenant TENANT (and no token id)")
    tokens: list[TokenInfo] = run(repo_call("tokens"))
    live = [t for t in tokens if t.tenant_id == tenant and _live(t)]
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
        if not interactive():
            fail(f"give --yes to rotate these {len(olds)} tokens without a prompt (or run this in a terminal to confirm)")
        if not typer.confirm(f"revoke these {len(olds)} tokens now and print their successors?", default=False):
            fail("nothing rotated")
    missed = []
    rotated, failed = run(_rotate_each(olds, days))
    for old, info, token in rotated:  # those made before a failure too: each is shown only now
        if info is None:
            missed.append(old.token_id)
        else:
            _print_rotated(old, info, token)
    if failed:
        fail(failed + (f"; not rotated (revoked, expired or changed since they were read): {', '.join(missed)}" if missed else ""))
    if missed:
        fail(f"not rotated (revoked, expired or changed since they were read): {', '.join(missed)}")


@token_app.command("list")
def token_list(as_json: bool = typer.Option(False, "--json", help="One JSON document (a list): what scripts read.")) -> None:
    """List tokens (never the tokens themselves), with the key that signed each; a token the service refuses says why.

    A table when it fits the terminal, else a block per token with its id whole on a line of its own; `--json` for scripts.
    """
    tokens: list[TokenInfo] = run(repo_call("tokens"))
    if as_json:
        fields = ("token_id", "approver", "tenant_id", "operator", "groups", "created_at", "expires_at", "last_used_at", "revoked_at")
        docs = [{f: getattr(info, f) for f in fields} | {"key_id": info.key_id, "refused": info.unproven} for info in tokens]
        print(json.dumps(docs, default=lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v), indent=2))  # times: ISO 8601
        return
    headers = ("token id", "approver", "tenant", "groups", "created", "expires", "last used", "revoked", "proof")
    rows = [
        (
            shown(info.token_id, None),
            shown(info.approver),
            shown(info.tenant_id) + (" (operator)" if info.operator else ""),
            shown(",".join(info.groups)),
            f"{info.created_at:%Y-%m-%d %H:%M}",
            f"{info.expires_at:%Y-%m-%d %H:%M}" if info.expires_at else "",
            f"{info.last_used_at:%Y-%m-%d %H:%M}" if info.last_used_at else "",
            f"{info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "",
            shown(info.key_id or "") if info.unproven is None else "[red]REFUSED: " + shown(info.unproven, TEXT_MAX) + "[/]",
        )
        for info in tokens
    ]
    print_listing(headers, rows)  # the token id whole, whatever the width: `token revoke` takes it


def _database_errors() -> tuple[type[BaseException], ...]:
    """What PostgreSQL failing looks like to asyncpg: the server's refusal, a connection lost or never made, a timeout."""
    import asyncpg

    return (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


async def _revoke(token_id: str) -> tuple[bool | None, str, bool]:
    """Revoke a token as the operator: (whether it was live, "", False), or (None, what failed, whether it is published).

    Published: its revocation is on `control` all the same, so the token is revoked and its row not yet written.
    """
    repo: PgApprovalRepository | None = None
    try:
        async with _operator_repo() as opened:
            repo = opened
            return await opened.revoke_token(token_id), "", False
    except _database_errors() as exc:
        pins = repo.token_pins if repo is not None else None
        published = bool(pins is not None and pins.revoked(token_id))
        if isinstance(exc, FileNotFoundError | PermissionError) and not published:
            raise  # a key file missing or not allowed to sign, before anything is published: `run` says which
        return None, f"{type(exc).__name__}: {exc}", published


@token_app.command("revoke")
def token_revoke(token_id: str) -> None:
    """Revoke a token at once: published on `control` (every approval service refuses it from then on), then written in its row.

    Exit 1, saying which, when PostgreSQL fails on the way: either the token is NOT revoked (it failed before the
    revocation was published: the token still works) or it IS revoked but its row still says live (published, the row
    not written). Either way run the same command again once the database answers.
    """
    done, failure, published = run(_revoke(token_id))
    again = f"run `tidegate approvals token revoke {token_id}` again once PostgreSQL answers"
    if failure and published:
        fail(
            f"token {token_id} IS revoked: its revocation is published on `control`, so every approval service refuses it from "
            f"now on; but writing it in its database row failed ({failure}), so its row still says live (`token list` shows it "
            f"live, and an approval service that did not revoke it calls that a rollback): {again}, to write the row"
        )
    if failure:
        fail(
            f"token {token_id} is NOT revoked: it still works. PostgreSQL failed before its revocation was published "
            f"({failure}); {again} (check `tidegate infra up`, or TIDEGATE_DATABASE_URL and TIDEGATE_DATABASE_PASSFILE)"
        )
    if not done:
        fail(f"no live token {token_id}")
    console.print(f"revoked {shown(token_id)}")
