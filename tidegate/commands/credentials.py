"""`tidegate credentials`: every credential this machine holds for the deployment, how old it is, and what rotates it.

Rotation probe F5: a security policy of "every credential every 90 days" had nowhere to read a credential's age. The age
is read from the file that holds each secret, which each rotation writes anew (a key pair, a Kafka login's client file, a
PostgreSQL login), so a restore that does not keep the files' times starts their clocks again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from servicekit import SERVICES, KitSettings
from servicekit.dbroles import credentials_file
from tidegate.commands._common import console, settings

__all__ = ["Credential", "app", "credentials_of"]

app = typer.Typer(help="Security: every credential this machine holds, its age, and the command that rotates it.")

DAY_S = 86_400.0
EXIT_DUE = 1  # a credential is older than --max-age-days
EXIT_UNREAD = 4  # the database was not read: its credentials' ages are not known (with a credential due: 5, both bits)


@dataclass(frozen=True)
class Credential:
    """One secret of the deployment kept on this machine: what it is, where, when it was last set, what rotates it."""

    kind: str  # signing key, operator key, tool key, client key, kafka login, postgres login, sealing key, approver token, webhook secret
    name: str
    path: Path | str  # the file, or where in the database (an approver token: `approval.approver_tokens`)
    set_at: float | None  # epoch seconds: the file's modification time (None: not recorded, a webhook secret set before 017)
    rotate: str  # the command that rotates it, or what to do when there is none
    note: str = ""  # e.g. a rotation under way

    def age_days(self, now: float) -> float | None:
        """Days since it was set, at `now` (epoch seconds); None when that is not known."""
        return None if self.set_at is None else max(0.0, now - self.set_at) / DAY_S

    def due(self, now: float, max_age_days: float) -> bool:
        """Whether it is older than `max_age_days`, or of an age not known (nothing shows it is not)."""
        age = self.age_days(now)
        return age is None or age > max_age_days


def _found(kind: str, name: str, path: Path, rotate: str, note: str = "") -> Iterator[Credential]:
    if path.is_file():
        yield Credential(kind, name, path, path.stat().st_mtime, rotate, note)


def credentials_of(kit: KitSettings) -> list[Credential]:
    """Every credential of `kit`'s deployment found on this machine (public halves are not secrets: a private key stands for its pair)."""
    found: list[Credential] = []
    for service in SERVICES:
        found += _found("signing key", service, kit.keys_dir / service / f"{service}.key", f"tidegate keys rotate {service}")
    connector_key = kit.keys_dir / "executor" / "connector-credentials.key"
    found += _found("sealing key", "connector-credentials", connector_key, "tidegate connectors rotate-key")
    found += _found(
        "sealing key",
        "webhook-secrets",
        kit.keys_dir / "approval" / "webhook-secrets.key",
        "no command yet: a new pair means registering every webhook endpoint again (docs/security/database.md)",
    )
    for path in sorted(kit.operator_private_keys_dir.glob("*.key")):
        as_it = "" if path.stem == kit.operator else f"TIDEGATE_OPERATOR={path.stem} "
        found += _found("operator key", path.stem, path, f"{as_it}tidegate keys rotate operator")
    for path in sorted((kit.keys_dir / "tools").glob("*/*.key")):
        found += _found("tool key", path.stem, path, f"tidegate keys rotate-tool {path.stem}")
    for path in sorted(kit.client_private_keys_dir.glob("*/*.key")):
        found += _found("client key", f"{path.parent.name}/{path.stem}", path, f"tidegate clients rotate {path.parent.name} {path.stem}")
    for path in sorted(kit.kafka_credentials_dir.glob("*.properties")):
        principal = path.name.removesuffix(".properties")
        former = path.with_name(path.name + ".former")
        note = f"rotation under way: `tidegate infra rotate-login {principal} --finish`" if former.is_file() else ""
        rotate = f"tidegate infra rotate-login {principal}"
        if principal == "admin":
            rotate += " (restart the broker before --finish: it is also in its server.properties)"
        found += _found("kafka login", principal, path, rotate, note)
    controller = kit.infra_dir / "kafka" / "controller.secret"  # the broker's own PLAIN login to its controller listener
    found += _found(
        "kafka login",
        "controller",
        controller,
        "delete it, then `tidegate infra down && tidegate infra up` (a broker restart; a cluster: every node at once)",
    )
    for service in (*SERVICES, "systems"):
        found += _found("postgres login", service, credentials_file(kit.db_credentials_dir, service), f"tidegate db rotate {service}")
    if kit.operator_database_url != kit.database_url:  # the operator's password is in its passfile, not in the DSN
        found += _found("postgres login", "operator", kit.database_passfile, "tidegate db rotate --operator")
    found += _mcp_token()
    return found


@dataclass(frozen=True)
class InDatabase:
    """The approval service's credentials the operator's login reads in the database, no secret opened.

    `tokens`: each live approver token (only its hash is stored: its id, creation and expiry are what is read). `secrets`:
    each enabled webhook endpoint's secret (sealed, not opened), as old as its row's `secret_set_at` (registration or
    rotation; migration 017). `endpoints`: how many of those are not dated (set before that migration): listed with
    an unknown age, due; `from_file`: how many of those come from the operator's webhooks file. `unread`: why the
    database was not read (the files' credentials are listed all the same).
    """

    tokens: list[Credential]
    endpoints: int = 0  # enabled endpoints whose secret's age is not recorded (set before migration 017)
    unread: str = ""
    secrets: list[Credential] = field(default_factory=list)  # each enabled webhook endpoint's secret, dated when recorded
    from_file: int = 0  # of `endpoints`, those of TIDEGATE_APPROVAL_WEBHOOKS_FILE: the API does not rotate them (409)


TOKENS = "approval.approver_tokens"
ENDPOINTS = "approval.webhook_endpoints"


async def _read_database(kit: KitSettings) -> InDatabase:
    import asyncpg

    conn = await asyncpg.connect(kit.operator_database_url, timeout=10)
    try:
        rows = await conn.fetch(
            f"SELECT token_id, approver, tenant_id, operator, created_at, expires_at FROM {TOKENS} "
            "WHERE revoked_at IS NULL AND expires_at > now() ORDER BY created_at, token_id"
        )
        endpoints = await conn.fetch(
            f"SELECT tenant_id, endpoint_id, source, secret_set_at FROM {ENDPOINTS} WHERE enabled ORDER BY tenant_id, endpoint_id"
        )
    finally:
        await conn.close()
    tokens = [
        Credential(
            "approver token",
            r["token_id"],
            TOKENS,
            r["created_at"].timestamp(),
            f"tidegate approvals token rotate {r['token_id']}",
            f"{r['approver']} of {'every tenant (operator)' if r['operator'] else r['tenant_id']}, "
            f"expires {r['expires_at']:%Y-%m-%d %H:%M}",
        )
        for r in rows
    ]
    undated = [r for r in endpoints if r["secret_set_at"] is None]
    from_file = sum(1 for r in undated if r["source"] == "file")
    return InDatabase(tokens, len(undated), secrets=[_webhook_secret(r) for r in endpoints], from_file=from_file)


def _webhook_secret(row: Any) -> Credential:
    """An enabled endpoint's secret, as old as its row says (`secret_set_at`), with where it is rotated."""
    tenant, endpoint = row["tenant_id"], row["endpoint_id"]
    if row["source"] == "file":
        rotate = "in TIDEGATE_APPROVAL_WEBHOOKS_FILE (`secret`, the old one as `former_secret` until `former_secret_until`), restart"
    else:
        rotate = f"POST /api/v1/webhooks/endpoints/{endpoint}/rotate?tenant_id={tenant} (docs/approval.md)"
    set_at = row["secret_set_at"]
    note = "set before release 22: its age is not recorded, so it is due until a rotation dates it" if set_at is None else ""
    return Credential("webhook secret", f"{tenant}/{endpoint}", ENDPOINTS, None if set_at is None else set_at.timestamp(), rotate, note)


def in_database(kit: KitSettings) -> InDatabase:
    """What `_read_database` finds, or why nothing was read (a database not reached, a schema not migrated): never silent."""
    try:
        return asyncio.run(_read_database(kit))
    except Exception as exc:  # any failure to read: the files' credentials are still listed, and this is said
        return InDatabase([], 0, f"{type(exc).__name__}: {exc}")


def _mcp_token() -> list[Credential]:
    """The HTTP MCP gateway's bearer token made on first run (in the client's state folder), if this machine holds one."""
    from tidegate.client import ClientSettings
    from tidegate.mcp_gateway.bearer import former_token_file, token_file

    path = token_file(ClientSettings())
    note = "rotation under way: `tidegate mcp rotate-token --finish`" if former_token_file(path).is_file() else ""
    return list(_found("http token", "mcp-gateway", path, "tidegate mcp rotate-token", note))


@app.command("credentials")
def credentials(
    max_age_days: float = typer.Option(
        90.0, "--max-age-days", min=0.0, help="A credential set longer ago than this is due (your security policy's rotation period)."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per credential, for a monitor."),
) -> None:
    """Every credential this machine holds for the deployment: its age, whether it is due, and the command that rotates it.

    Signing keys (services, operator, tools, clients), sealing keys, Kafka logins and PostgreSQL logins, each as old as
    the file that holds it (each rotation writes it anew); from the database, each live approver token, as old as its
    creation, and each enabled webhook endpoint's secret, as old as its registration or last rotation (one set before
    release 22 has no recorded age: listed DUE until rotated).
    Exit status (for a cron job or a monitor): 0 when none is older than --max-age-days and the database was read;
    1 when one is (listed DUE with the command that rotates it); 4 when the database could not be read (not reached,
    refused, not migrated: said on stderr, the files' credentials listed all the same), so "nothing due" is never read
    from a list that left the database's credentials out; 5 when both.
    """
    kit = settings()
    now = time.time()
    database = in_database(kit)
    found = credentials_of(kit) + database.tokens + database.secrets
    due = [c for c in found if c.due(now, max_age_days)]
    if as_json:
        for c in found:
            age = c.age_days(now)
            row = asdict(c) | {"path": str(c.path), "age_days": None if age is None else round(age, 2), "due": c in due}
            row["set_at"] = None if c.set_at is None else datetime.fromtimestamp(c.set_at, UTC).isoformat()
            typer.echo(json.dumps(row))
    else:
        if not found:
            console.print(f"no credential found for this deployment (keys in {kit.keys_dir}, logins in {kit.kafka_credentials_dir})")
        for c in found:
            age = c.age_days(now)
            shown = "unknown   " if c.set_at is None else datetime.fromtimestamp(c.set_at, UTC).strftime("%Y-%m-%d")
            aged = "     ?" if age is None else f"{age:6.1f}"
            flag = "DUE " if c in due else "ok  "
            line = f"{flag} {c.kind:<14} {c.name:<24} set {shown}  {aged} days   rotate: {c.rotate}"
            typer.echo(line + (f"   ({c.note})" if c.note else ""))
        told = ": rotate each with the command beside it" if due else ""
        typer.echo(f"{len(due)} of {len(found)} older than {max_age_days:g} days{told}")
    _say_database(database)
    status = (EXIT_DUE if due else 0) | (EXIT_UNREAD if database.unread else 0)
    if status:
        raise typer.Exit(status)


def _say_database(database: InDatabase) -> None:
    """How many webhook secrets are not dated, or why the database was not read: on stderr, after the list."""
    if database.unread:
        said = (
            "approver tokens and webhook endpoints not listed: the database was not read as the operator "
            f"(TIDEGATE_DATABASE_URL, TIDEGATE_DATABASE_PASSFILE): {database.unread}. Their ages are not known, so none "
            f"of them is counted due: exit {EXIT_UNREAD} (with a credential due, {EXIT_UNREAD | EXIT_DUE}). Check that "
            "PostgreSQL answers (`tidegate infra up`, or your server) and that this shell reads the operator's DSN and "
            "passfile, then run it again"
        )
    elif database.endpoints:
        over_api = database.endpoints - database.from_file
        said = (
            f"{database.endpoints} webhook endpoint(s) enabled: their secrets' age is not recorded (set before release 22): "
            "each is listed DUE until its secret is changed"
        )
        if over_api:
            said += (
                f"; {over_api} registered over the API: rotate each with "
                "`POST /api/v1/webhooks/endpoints/{id}/rotate?tenant_id=` (docs/approval.md)"
            )
        if database.from_file:
            # The API answers such an endpoint 409 operator_endpoint: its secret is the file's, written at the service's start.
            said += (
                f"; {database.from_file} of TIDEGATE_APPROVAL_WEBHOOKS_FILE: give each a new `secret` there (the old one as "
                "`former_secret` until `former_secret_until`) and restart the approval service (the API does not rotate them)"
            )
    else:
        return
    typer.echo(said, err=True)
