"""The database as a trust boundary: one PostgreSQL role per service, schemas owned by a role nobody logs in as.

`provision` is run by the migrator (the operator's role, `tidegate` by default: `tidegate infra up`,
`tidegate db migrate`, the tests' fixture). It creates a NOLOGIN owner role and one LOGIN role per
service, applies every schema's migrations, hands every object to the owner role, and grants each
service only what it needs in its own schema. Each service's password is generated here on first
run and kept 0600 in its own folder of the credentials directory, `<dir>/<service>/<service>.json` (so a
deployment mounts into each service its own folder and nothing else, as with the keys);
`service_database_url` is how a service finds its DSN. Passwords reach PostgreSQL only as SCRAM-SHA-256
verifiers computed here (`scram_verifier`), never as text a server log or `pg_stat_statements` could keep.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from servicekit.db import apply_migrations, create_pool
from servicekit.private_files import write_private
from servicekit.settings import KitSettings

__all__ = [
    "DEFAULT_ROLE_PREFIX",
    "PROVISION_LOCK",
    "CannotEndSessions",
    "Grant",
    "RotatedLogin",
    "SchemaSpec",
    "credentials_file",
    "login_passfile",
    "owner_role",
    "provision",
    "rotate_logins",
    "rotate_operator",
    "scram_verifier",
    "service_database_url",
    "service_role",
    "with_database",
    "with_login",
    "with_passfile",
]

DEFAULT_ROLE_PREFIX = "tidegate_"
log = logging.getLogger(__name__)
Connection = asyncpg.Connection | PoolConnectionProxy
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class Grant:
    """What a service's role may do with the tables of its schema."""

    READ_WRITE = "read_write"  # SELECT, INSERT, UPDATE, DELETE; sequences
    APPEND_ONLY = "append_only"  # SELECT; INSERT only through the schema's writer role (the audit log)


@dataclass(frozen=True)
class SchemaSpec:
    """One schema: its migrations and the one service (login) whose role works in it.

    Args:
        name: The schema.
        migrations: Directory of its `NNN_*.sql` files.
        user: The service (or `systems`, the executor's in-process tools) that works in it.
        grant: `Grant.READ_WRITE`, or `Grant.APPEND_ONLY` with `writer_role`.
        writer_role: A NOLOGIN role (created by the schema's migrations) the user may `SET ROLE` to for inserts.
        read_only: Tables of a `READ_WRITE` schema the user may only read: what the operator writes for it (the
            executor's connector grants), so that the service's own login cannot write them at all.
    """

    name: str
    migrations: Path
    user: str
    grant: str = Grant.READ_WRITE
    writer_role: str | None = None
    read_only: tuple[str, ...] = ()


def service_role(service: str, prefix: str = DEFAULT_ROLE_PREFIX) -> str:
    """Name of a service's login role."""
    return _checked(f"{prefix}{service}")


def owner_role(prefix: str = DEFAULT_ROLE_PREFIX) -> str:
    """Name of the NOLOGIN role that owns every schema and table."""
    return _checked(f"{prefix}owner")


def _checked(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"not a plain PostgreSQL role name: {name!r}")
    return name


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def credentials_file(credentials_dir: Path, service: str) -> Path:
    """Where `service`'s login is kept: `<credentials_dir>/<service>/<service>.json`, in a folder of its own."""
    return credentials_dir / service / f"{service}.json"


def login_passfile(credentials_dir: Path, service: str) -> Path:
    """The same login in libpq's passfile format, beside `credentials_file`: what the service connects with."""
    return credentials_dir / service / f"{service}.pgpass"


def service_database_url(kit: KitSettings, service: str) -> str:
    """The DSN `service` logs in with: `kit.database_url`'s host and database, the service's own role.

    With the login's passfile (which `provision` writes) the DSN names it, and asyncpg reads it at each new
    connection: a password rotated by `tidegate db migrate` is picked up without a restart. Without one (a
    login mounted from a secret store as the JSON file alone) the password is in the DSN.

    Raises:
        RuntimeError: No credentials for the service (the migrator has not provisioned the roles yet).
    """
    path = credentials_file(kit.db_credentials_dir, service)
    try:
        creds = json.loads(path.read_text())
    except FileNotFoundError:
        raise RuntimeError(
            f"no database credentials for {service} at {path}: run `tidegate infra up` or `tidegate db migrate` first"
        ) from None
    passfile = login_passfile(kit.db_credentials_dir, service)
    if passfile.is_file():
        return with_passfile(kit.database_url, str(creds["user"]), passfile)
    return with_login(kit.database_url, str(creds["user"]), str(creds["password"]))


def with_login(dsn: str, user: str, password: str) -> str:
    """`dsn` with its user and password replaced (and no `passfile`: the password is the login's own)."""
    return _logged_in(dsn, f"{quote(user, safe='')}:{quote(password, safe='')}", [])


def with_passfile(dsn: str, user: str, passfile: Path) -> str:
    """`dsn` as `user`, with no password but libpq's `passfile` parameter naming where it is read at each connection."""
    return _logged_in(dsn, quote(user, safe=""), [("passfile", str(passfile))])


def _logged_in(dsn: str, login: str, query: list[tuple[str, str]]) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    kept = [(k, v) for k, v in parse_qsl(parts.query) if k != "passfile"]
    return urlunsplit(parts._replace(netloc=f"{login}@{host}", query=urlencode(kept + query)))


def with_database(dsn: str, database: str) -> str:
    """`dsn` on another database of the same server, with the same login."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{quote(database, safe='')}"))


def _password(credentials_dir: Path, service: str, role: str) -> str:
    """The service's password: the one stored, or a new one; kept 0600 with its passfile (never committed: the folder is git-ignored).

    A login of the former flat layout (`<credentials_dir>/<service>.json`) moves into the service's folder. The passfile
    is written anew from the JSON file each time, so a password put there by hand reaches it on the next migration.
    """
    path = credentials_file(credentials_dir, service)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    flat = credentials_dir / f"{service}.json"
    if flat.exists() and not path.exists():
        os.replace(flat, path)
    stored = json.loads(path.read_text()) if path.exists() else {}
    password = str(stored["password"]) if stored.get("user") == role and stored.get("password") else None
    if password is None:
        password = secrets.token_urlsafe(32)
        write_private(path, json.dumps({"user": role, "password": password}))
    write_private(login_passfile(credentials_dir, service), _passfile_line(role, password, path))
    return password


def _passfile_line(role: str, password: str, source: Path) -> str:
    # asyncpg's passfile reader does not undo libpq's escapes: a password that would need one cannot be written there.
    if any(c in password for c in ":\\\n"):
        raise ValueError(f"the password in {source} holds ':', '\\' or a line break: give {role} one without (passfile format)")
    return f"*:*:*:{role}:{password}\n"


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = 4096) -> str:
    """What PostgreSQL stores for `password` under SCRAM-SHA-256 (RFC 5802, 7677), as libpq's `PQencryptPasswordConn` makes it.

    Sent in `CREATE/ALTER ROLE … PASSWORD`, it sets the password without the password itself reaching the server, its
    logs or `pg_stat_statements`. Only ASCII passwords: libpq first applies SASLprep, which changes no ASCII text.
    """
    if not password.isascii():
        raise ValueError("a database password must be ASCII (SASLprep, which PostgreSQL applies, is not done here)")
    salt = secrets.token_bytes(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def _ensure_role(conn: Connection, role: str, password: str | None) -> None:
    login = f"LOGIN PASSWORD {_literal(scram_verifier(password))}" if password is not None else "NOLOGIN"
    if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
        try:
            await conn.execute(f"CREATE ROLE {_ident(role)} {login} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS")
            return
        except asyncpg.DuplicateObjectError:  # created meanwhile by a concurrent provisioning
            pass
    # Only a superuser may even restate NOSUPERUSER: set the login, then check the rest was never granted.
    await conn.execute(f"ALTER ROLE {_ident(role)} {login}")
    powers = await conn.fetchrow(
        "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = $1", role
    )
    granted = [name for name, value in (powers or {}).items() if value]
    if granted:
        raise RuntimeError(f"role {role} has {', '.join(granted)}: a superuser must revoke them (ALTER ROLE {role} NO…)")


async def _grant_membership(conn: Connection, role: str, member: str) -> None:
    if not await conn.fetchval("SELECT pg_has_role($1, $2, 'MEMBER')", member, role):
        await conn.execute(f"GRANT {_ident(role)} TO {_ident(member)}")


async def _hand_to_owner(conn: Connection, schema: str, owner: str) -> None:
    """Make `owner` own the schema and everything in it (migrations ran as the migrator)."""
    await conn.execute(f"ALTER SCHEMA {_ident(schema)} OWNER TO {_ident(owner)}")
    kinds = {"r": "TABLE", "p": "TABLE", "f": "FOREIGN TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE"}
    # Tables first: a table's owned sequences follow it, and may not be moved on their own.
    for kind_set in (("r", "p", "f", "v", "m"), ("S",)):
        rows = await conn.fetch(
            "SELECT c.relname, c.relkind::text AS kind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relkind::text = ANY($2::text[]) AND c.relowner <> $3::regrole",
            schema,
            list(kind_set),
            owner,
        )
        for r in rows:
            await conn.execute(f"ALTER {kinds[r['kind']]} {_ident(schema)}.{_ident(r['relname'])} OWNER TO {_ident(owner)}")
    for r in await conn.fetch(
        "SELECT p.oid::regprocedure::text AS sig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = $1 AND p.proowner <> $2::regrole",
        schema,
        owner,
    ):
        await conn.execute(f"ALTER ROUTINE {r['sig']} OWNER TO {_ident(owner)}")
    for r in await conn.fetch(
        "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
        "WHERE n.nspname = $1 AND t.typtype IN ('e', 'd') AND t.typowner <> $2::regrole",
        schema,
        owner,
    ):
        await conn.execute(f"ALTER TYPE {_ident(schema)}.{_ident(r['typname'])} OWNER TO {_ident(owner)}")


async def _grant(conn: Connection, spec: SchemaSpec, role: str) -> None:
    s = _ident(spec.name)
    await conn.execute(f"REVOKE ALL ON SCHEMA {s} FROM PUBLIC")
    await conn.execute(f"GRANT USAGE ON SCHEMA {s} TO {_ident(role)}")
    if spec.grant == Grant.READ_WRITE:
        await conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {_ident(role)}")
        await conn.execute(f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {s} TO {_ident(role)}")
        for table in spec.read_only:  # after every migration, as the grant above is
            await conn.execute(f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {s}.{_ident(table)} FROM {_ident(role)}")
    elif spec.grant == Grant.APPEND_ONLY:
        if spec.writer_role is None:
            raise ValueError(f"schema {spec.name}: an append-only grant needs its writer role")
        await conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {_ident(role)}")
        await _grant_membership(conn, _checked(spec.writer_role), role)
    else:
        raise ValueError(f"schema {spec.name}: unknown grant {spec.grant!r}")


# The advisory lock every provisioning holds, on the cluster's `postgres` database: advisory locks are per database, and
# roles (CREATE/ALTER ROLE, GRANT … TO) are cluster-wide, so two migrations into two databases of one cluster each held
# their own database's lock and raced on the same roles (`tuple concurrently updated`, one failed now and then).
# Its own key: a migration into the `postgres` database itself then takes both locks without waiting for itself.
PROVISION_LOCK = "tidegate.provision.cluster"
CLUSTER_DATABASE = "postgres"


@asynccontextmanager
async def _cluster_lock(migrator_dsn: str) -> AsyncIterator[None]:
    """Hold `PROVISION_LOCK` on the cluster's `postgres` database; without a connection there, nothing (said)."""
    try:
        conn = await asyncpg.connect(with_database(migrator_dsn, CLUSTER_DATABASE))
    except (asyncpg.PostgresError, OSError) as exc:  # no such database, or no CONNECT on it: the per-database lock alone
        log.warning(
            "not serialised with other databases' migrations on this cluster (no connection to its %r database: %s): "
            "two migrations into two databases at once may fail one (`tuple concurrently updated`); run it again",
            CLUSTER_DATABASE,
            exc,
        )
        yield
        return
    try:
        await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", PROVISION_LOCK)
        yield
    finally:
        await conn.close()  # the session's end releases its advisory lock


async def provision(
    migrator_dsn: str, schemas: Sequence[SchemaSpec], credentials_dir: Path, *, role_prefix: str = DEFAULT_ROLE_PREFIX
) -> dict[str, list[str]]:
    """Create the roles, migrate every schema, hand it to the owner role and grant each service its own; idempotent.

    Runs as the migrator (a role with CREATEROLE that owns the database). Returns the migrations applied
    now, by schema. A service's stored password is kept; a missing one is generated.
    """
    owner = owner_role(role_prefix)
    users = _unique(spec.user for spec in schemas)
    async with _cluster_lock(migrator_dsn):  # roles are cluster-wide: provisionings of several databases, one after the other
        return await _provision(migrator_dsn, schemas, credentials_dir, owner, users, role_prefix)


async def _provision(
    migrator_dsn: str, schemas: Sequence[SchemaSpec], credentials_dir: Path, owner: str, users: list[str], role_prefix: str
) -> dict[str, list[str]]:
    pool = await create_pool(migrator_dsn, max_size=2)
    applied: dict[str, list[str]] = {}
    try:
        async with pool.acquire() as conn:
            # And on this database (the one lock there is when the cluster's `postgres` database is not reachable).
            await conn.execute("SELECT pg_advisory_lock(hashtextextended('tidegate.provision', 0))")
            try:
                migrator = await conn.fetchval("SELECT current_user")
                await _ensure_role(conn, owner, None)
                await _grant_membership(conn, owner, migrator)
                for user in users:
                    role = service_role(user, role_prefix)
                    await _ensure_role(conn, role, _password(credentials_dir, user, role))
                await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
                for spec in schemas:
                    applied[spec.name] = await apply_migrations(pool, spec.name, spec.migrations)
                    await _hand_to_owner(conn, spec.name, owner)
                    await _grant(conn, spec, service_role(spec.user, role_prefix))
            finally:
                await conn.execute("SELECT pg_advisory_unlock(hashtextextended('tidegate.provision', 0))")
    finally:
        await pool.close()
    return applied


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


@dataclass(frozen=True)
class RotatedLogin:
    """What `rotate_logins` did to one service's role, and what it found after: the end state an operator checks."""

    role: str
    sessions_ended: int  # sessions of the role ended (with `end_sessions`): whatever password they logged in with
    old_password_refused: bool | None  # a login with the former password, tried after: refused (None: no former password on file)
    sessions_left: int  # sessions of the role that began before the new password was set, still open after


class CannotEndSessions(RuntimeError):
    """The migrator may not end other roles' sessions (it needs `pg_signal_backend`)."""


async def rotate_logins(
    migrator_dsn: str,
    services: Sequence[str],
    credentials_dir: Path,
    *,
    end_sessions: bool = False,
    role_prefix: str = DEFAULT_ROLE_PREFIX,
) -> list[RotatedLogin]:
    """Give each service's role a new password now, written to its login files; with `end_sessions`, end its open sessions.

    The password is set on the role first (its SCRAM verifier: the password never reaches the server), then written to
    `<service>.json` and its `.pgpass`, which each new connection of the service reads: nothing to restart. A session
    opened with the former password stays open unless `end_sessions` (a login that may have leaked): then every session of
    the role is ended (`pg_terminate_backend`, which needs `pg_signal_backend`), the services' pools reconnect with the
    new password on their next query (a transient error, retried), and whoever else held the former password is cut off.
    Each result says whether the former password is refused now (tried) and how many sessions from before remain.
    """
    rotated: list[RotatedLogin] = []
    pool = await create_pool(migrator_dsn, max_size=1)
    try:
        async with pool.acquire() as conn:
            if end_sessions and not await conn.fetchval(
                "SELECT rolsuper OR pg_has_role(current_user, 'pg_signal_backend', 'MEMBER') FROM pg_roles WHERE rolname = current_user"
            ):
                who = await conn.fetchval("SELECT current_user")
                raise CannotEndSessions(
                    f"the operator role {who} may not end other roles' sessions: run `tidegate infra up` (it grants "
                    f"pg_signal_backend), or as a superuser `GRANT pg_signal_backend TO {who}`; nothing was rotated"
                )
            for service in services:
                role = service_role(service, role_prefix)
                path = credentials_file(credentials_dir, service)
                stored = json.loads(path.read_text()) if path.exists() else {}
                former = str(stored["password"]) if stored.get("user") == role and stored.get("password") else None
                password = secrets.token_urlsafe(32)
                since = await conn.fetchval("SELECT clock_timestamp()")
                await _ensure_role(conn, role, password)
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                write_private(path, json.dumps({"user": role, "password": password}))
                write_private(login_passfile(credentials_dir, service), _passfile_line(role, password, path))
                ended = await _end_sessions(conn, role) if end_sessions else 0
                refused = None if former is None else not await _logs_in(migrator_dsn, role, former)
                left = await _sessions_before(conn, role, since, wait_s=5.0 if end_sessions else 0.0)
                rotated.append(RotatedLogin(role, ended, refused, left))
    finally:
        await pool.close()
    return rotated


def _passfile_logins(text: str) -> list[tuple[str, str]]:
    """The entries of a libpq passfile: (`host:port:database:user`, password), comments and blank lines left out."""
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            where, _, password = line.rpartition(":")
            found.append((where, password))
    return found


async def rotate_operator(migrator_dsn: str, passfile: Path, *, end_sessions: bool = False) -> RotatedLogin:
    """Give the operator's (migrator's) own role a new password now, written to its passfile; with `end_sessions`, end its sessions.

    The passfile (`infra up` writes it: one entry per address of the local PostgreSQL) keeps its comments and entries,
    each with the new password; `infra up` sets whatever password the file holds, so it keeps this one. The password is
    set (`ALTER ROLE CURRENT_USER`, its SCRAM verifier) in a transaction committed only once the file is replaced
    (`write_private`): a passfile that cannot be written (mounted read-only, a full disk) leaves the role on the former
    password, never on one kept nowhere, which locked the operator out of the database. With
    `end_sessions` (a password that may have leaked) every other session of the role is ended, so whoever held the former
    password is cut off, an operator command running elsewhere included. The result says whether the former password is
    refused now and how many sessions from before remain (this command's own not counted).

    Raises:
        ValueError: The passfile holds no entry, or entries of more than one role or password, or of another role than
            the one `migrator_dsn` logs in as, or it cannot be written: nothing is changed.
        CannotEndSessions: `end_sessions` without `pg_signal_backend`: nothing is changed.
    """
    text = passfile.read_text()  # noqa: ASYNC240 - one small local file, read once before connecting
    entries = _passfile_logins(text)
    roles = {where.rsplit(":", 1)[-1] for where, _ in entries}
    passwords = {password for _, password in entries}
    if len(roles) != 1 or len(passwords) != 1:
        raise ValueError(f"{passfile} holds {len(entries)} entries of {len(roles)} role(s): expected the operator's entries alone")
    (role,), (former,) = roles, passwords
    password = secrets.token_urlsafe(32)
    conn = await asyncpg.connect(migrator_dsn, timeout=10)
    try:
        if end_sessions and not await conn.fetchval(
            "SELECT rolsuper OR pg_has_role(current_user, 'pg_signal_backend', 'MEMBER') FROM pg_roles WHERE rolname = current_user"
        ):
            raise CannotEndSessions(
                f"the operator role {role} may not end sessions: run `tidegate infra up` (it grants pg_signal_backend), or as a "
                f"superuser `GRANT pg_signal_backend TO {role}`; nothing was rotated"
            )
        me = await conn.fetchval("SELECT current_user")
        if me != role:  # the password changed would be `me`'s, written under `role`'s entries: `me` locked out
            raise ValueError(
                f"{passfile} holds the entries of role {role}, but the operator's connection logs in as {me}: nothing changed; "
                f"point TIDEGATE_DATABASE_PASSFILE at {me}'s passfile"
            )
        since = await conn.fetchval("SELECT clock_timestamp()")
        lines = [
            line if not line.strip() or line.lstrip().startswith("#") else f"{line.rpartition(':')[0]}:{password}"
            for line in text.splitlines()
        ]
        await _set_password_with_file(conn, passfile, text, "\n".join(lines) + "\n", password, dsn=migrator_dsn, role=role)
        ended = await _end_sessions(conn, me) if end_sessions else 0
        refused = not await _logs_in(migrator_dsn, role, former)
        left = await _sessions_before(conn, me, since, wait_s=5.0 if end_sessions else 0.0)
    finally:
        await conn.close()
    return RotatedLogin(role, ended, refused, left)


async def _set_password_with_file(
    conn: Connection, passfile: Path, former_text: str, text: str, password: str, *, dsn: str, role: str
) -> None:
    """Give `conn`'s role `password` and `passfile` `text`: both, or neither (the file as it was, the former password kept).

    A COMMIT whose answer is lost (the connection reset, the command cancelled) may have gone through: the file then
    says whichever password `role` logs in with on `dsn` (the former one only when the new one is refused or the server
    cannot be asked), never the former password of a role the server moved on.
    """
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(f"ALTER ROLE CURRENT_USER PASSWORD {_literal(scram_verifier(password))}")
        write_private(passfile, text)
    except OSError as exc:
        await tx.rollback()
        raise ValueError(
            f"could not write {passfile} ({exc}): nothing changed, the former password still logs in; make the file "
            "writable by this command (or rotate the password in the secret store it comes from)"
        ) from exc
    except BaseException:
        await tx.rollback()
        raise
    try:
        await tx.commit()
    except BaseException:
        try:
            took = await _logs_in(dsn, role, password)
        except Exception:  # the server not reached: it cannot say, and the former password is kept as before
            took = False
        if not took:
            write_private(passfile, former_text)  # the role kept its former password: so does its file
        raise


async def _end_sessions(conn: Connection, role: str) -> int:
    """End every session of `role` but `conn`'s own (the operator rotating its own password keeps the one it works on)."""
    return int(
        await conn.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()",
            role,
        )
    )


async def _sessions_before(conn: Connection, role: str, since: object, *, wait_s: float) -> int:
    """How many sessions of `role` but `conn`'s own that began before `since` are open; waits up to `wait_s` for ended ones to go."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        left = int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid() AND backend_start < $2",
                role,
                since,
            )
        )
        if left == 0 or asyncio.get_running_loop().time() >= deadline:
            return left
        await asyncio.sleep(0.1)


async def _logs_in(dsn: str, role: str, password: str) -> bool:
    """Whether `role` still logs in with `password` on `dsn`'s server (what the holder of a former password would try)."""
    try:
        conn = await asyncpg.connect(with_login(dsn, role, password), timeout=10)
    except asyncpg.InvalidPasswordError:
        return False
    await conn.close()
    return True
