"""Administer logins and rights on the broker through Kafka's Admin API (no JVM per call).

aiokafka's admin client has no `create_acls`, `alter_user_scram_credentials` or `alter_client_quotas`, but it sends
any request built from its protocol classes: CreateAcls/DeleteAcls v1 are in aiokafka, and the
AlterUserScramCredentials v0 (KIP-554) and AlterClientQuotas v0 (KIP-546) structures are declared here.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import SecurityDisabled, for_code
from aiokafka.protocol.admin import CreateAclsRequest_v1, DeleteAclsRequest_v1, DescribeClientQuotasRequest
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Array,
    Boolean,
    CompactArray,
    CompactBytes,
    CompactString,
    Float64,
    Int8,
    Int16,
    Int32,
    Schema,
    String,
    TaggedFields,
)

from servicekit.bus_acls import held_rules, prefixes_of
from servicekit.bus_auth import client_properties, kafka_options, read_mechanism, read_password
from servicekit.bus_rights import (
    ADMIN,
    AGENT,
    OPS,
    PRINCIPALS,
    AclBinding,
    acl_bindings,
    principal_names,
    retired_bindings,
    sandbox_bindings,
    tool_principal,
)
from servicekit.private_files import write_private
from servicekit.settings import KitSettings

__all__ = [
    "APPROVAL_PRODUCE_BYTES_PER_S",
    "DIRECTORY_WRITERS",
    "OPS_PRODUCE_BYTES_PER_S",
    "OUTSIDE_PRODUCE_BYTES_PER_S",
    "PLATFORM_PRINCIPALS",
    "alter_scram",
    "ensure_principals",
    "grant_rights",
    "granted_prefixes",
    "produce_quotas",
    "produce_quotas_set",
    "produce_rates",
    "quotas_unlike",
    "revoke_rights",
    "tools_of",
    "unknowable_password",
]

OUTSIDE_PRODUCE_BYTES_PER_S = 4 * 1024 * 1024
"""What each outside principal (`agent`, `tool-<name>`) may produce a second, all its clients together, by default: some
2,700 proposals of 1.5 KB a second. Past it the broker slows that principal's clients down (it delays their answers), and
no one else's: a leaked or runaway agent login cannot fill the bus, and the audit log that keeps every record, at broker
speed (`KitSettings.kafka_outside_produce_bytes_per_s`; docs/security/bus.md, Quotas)."""

OPS_PRODUCE_BYTES_PER_S = 1024 * 1024
"""What the `ops` principal (the operator's CLI, and the replay and eval sandboxes' services) may produce a second, all its
clients together, by default. `ops` writes `control`, which is kept forever and read from the start by every service
before it serves: unbounded, whoever holds `ops.properties` alone (no operator key) appended 100,000 unsigned records in
3 s, each dead-lettered again by every start. At 1 MiB/s a control record (a kill switch, a pack of a few hundred KB)
still goes out at once, and a sandbox's replay moves ~700 records of 1.5 KB a second
(`KitSettings.kafka_ops_produce_bytes_per_s`; docs/security/bus.md, Quotas)."""

APPROVAL_PRODUCE_BYTES_PER_S = 1024 * 1024
"""What the `approval` principal may produce a second, all its clients together, by default. It writes `directory`, kept
forever and read whole by the policy and every approval copy before they serve: unbounded, whoever holds its password
(no signing key) appended 50,000 junk records in 1.2 s, and the next start of the policy and approval took 3 minutes and
dead-lettered each record again. Its own output is human-paced (escalations, decisions, directories, endpoint pins), so
1 MiB/s delays nothing it sends (`KitSettings.kafka_approval_produce_bytes_per_s`; docs/security/bus.md, Quotas)."""

DIRECTORY_WRITERS = tuple(p for p, rights in PRINCIPALS.items() if p != ADMIN and "directory" in rights.writes)
"""The principals the table lets write `directory` (the approval service's): each produces under
`approval_produce_bytes_per_s`, as `ops`, the writer of `control`, under its own quota."""

PLATFORM_PRINCIPALS = tuple(p for p in PRINCIPALS if p not in (ADMIN, OPS, AGENT, *DIRECTORY_WRITERS))
"""The services' principals without a quota of their own (planner, policy, executor, audit): each under
`services_produce_bytes_per_s` when the deployment sets one (`KitSettings.kafka_services_produce_bytes_per_s`)."""

log = logging.getLogger(__name__)

_ALLOW = 3
_ANY_HOST = "*"
_SCRAM = {"SCRAM-SHA-256": (1, "sha256"), "SCRAM-SHA-512": (2, "sha512")}  # Kafka's ScramMechanism type, and Hi()'s hash
_ITERATIONS = 8192


class _CreateAcls(Request[CreateAclsRequest_v1]):
    """CreateAcls with many bindings in one request (aiokafka's builder sends one)."""

    API_KEY = 30

    def __init__(self, bindings: list[AclBinding]) -> None:
        self.bindings = bindings

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class([(b.resource, b.name, b.pattern, b.principal, _ANY_HOST, b.operation, _ALLOW) for b in self.bindings])


class _DeleteAcls(Request[DeleteAclsRequest_v1]):
    """DeleteAcls with one exact filter per binding."""

    API_KEY = 31

    def __init__(self, bindings: list[AclBinding]) -> None:
        self.bindings = bindings

    def build(self, request_struct_class: type[DeleteAclsRequest_v1]) -> DeleteAclsRequest_v1:
        return request_struct_class([(b.resource, b.name, b.pattern, b.principal, _ANY_HOST, b.operation, _ALLOW) for b in self.bindings])


class _AlterScramResponse(Response):
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "results",
            CompactArray(
                ("user", CompactString("utf-8")),
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _AlterScramStruct(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = _AlterScramResponse
    SCHEMA = Schema(
        ("deletions", CompactArray(("name", CompactString("utf-8")), ("mechanism", Int8), ("tags", TaggedFields))),
        (
            "upsertions",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("mechanism", Int8),
                ("iterations", Int32),
                ("salt", CompactBytes),
                ("salted_password", CompactBytes),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _AlterScram(Request[_AlterScramStruct]):
    """AlterUserScramCredentials v0: upsert SCRAM logins, each on its mechanism (the broker keeps only salted keys).

    It never deletes one: a broker (Kafka 4.1.1) restarted after a SCRAM credential was deleted refused every SCRAM-SHA-512
    login, admin's and every service's included (docs/security/bus.md, "Rotating a login"). A login to retire is
    overwritten with a password nobody holds (`unknowable_password`): refused the same, and no deletion is recorded.
    """

    API_KEY = 51

    def __init__(self, users: Mapping[str, tuple[str, str]]) -> None:
        self.users = users  # name → (mechanism, password)

    def build(self, request_struct_class: type[_AlterScramStruct]) -> _AlterScramStruct:
        upsertions: list[tuple[str, int, int, bytes, bytes, dict[int, bytes]]] = []
        for name, (mechanism, password) in self.users.items():
            salt = secrets.token_bytes(32)
            digest = _SCRAM[mechanism]
            salted = hashlib.pbkdf2_hmac(digest[1], password.encode(), salt, _ITERATIONS)  # RFC 5802 Hi()
            upsertions.append((name, digest[0], _ITERATIONS, salt, salted, {}))
        return request_struct_class([], upsertions, {})


def unknowable_password() -> str:
    """A password to retire a SCRAM login with: set at the broker, kept nowhere, so nobody logs in with it."""
    return secrets.token_urlsafe(32)


async def alter_scram(admin: AIOKafkaAdminClient, users: Mapping[str, tuple[str, str]]) -> None:
    """Set each user's password on its mechanism, as `admin`; raise on a refusal. Never deletes a credential (`_AlterScram`)."""
    response: Any = await admin._send_request(_AlterScram(users))
    _raise_errors(((r[1], r[2]) for r in response.results), "AlterUserScramCredentials")


_QUOTA_ENTITY = Array(("entity_type", String("utf-8")), ("entity_name", String("utf-8")))


class _AlterQuotasResponse(Response):
    API_KEY = 49
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("entries", Array(("error_code", Int16), ("error_message", String("utf-8")), ("entity", _QUOTA_ENTITY))),
    )


class _AlterQuotasStruct(RequestStruct):
    API_KEY = 49
    API_VERSION = 0
    RESPONSE_TYPE = _AlterQuotasResponse
    SCHEMA = Schema(
        ("entries", Array(("entity", _QUOTA_ENTITY), ("ops", Array(("key", String("utf-8")), ("value", Float64), ("remove", Boolean))))),
        ("validate_only", Boolean),
    )


class _AlterQuotas(Request[_AlterQuotasStruct]):
    """AlterClientQuotas v0: each user's `producer_byte_rate` set (a rate) or removed (None)."""

    API_KEY = 49

    def __init__(self, rates: Mapping[str, float | None]) -> None:
        self.rates = rates

    def build(self, request_struct_class: type[_AlterQuotasStruct]) -> _AlterQuotasStruct:
        entries = [
            ([("user", user)], [("producer_byte_rate", float(rate or 0), rate is None)]) for user, rate in sorted(self.rates.items())
        ]
        return request_struct_class(entries, False)


def _raise_errors(pairs: Iterable[tuple[int, str | None]], what: str) -> None:
    for code, message in pairs:
        if code != 0:
            raise for_code(code)(f"{what}: {message}")


async def grant_rights(
    admin: AIOKafkaAdminClient,
    prefix: str,
    tools: Iterable[str] = (),
    *,
    produce_bytes_per_s: int = OUTSIDE_PRODUCE_BYTES_PER_S,
    ops_produce_bytes_per_s: int = OPS_PRODUCE_BYTES_PER_S,
    approval_produce_bytes_per_s: int = APPROVAL_PRODUCE_BYTES_PER_S,
    services_produce_bytes_per_s: int | None = None,
) -> dict[str, tuple[float | None, float | None]]:
    """Create every ACL of deployment `prefix` and the sandboxes' standing ones, remove retired ones; set the produce quotas.

    Idempotent: Kafka ignores a binding it already has. Each outside principal (`agent`, each tool's) may produce
    `produce_bytes_per_s`, `ops` (the writer of `control`) `ops_produce_bytes_per_s`, each writer of `directory`
    (`DIRECTORY_WRITERS`) `approval_produce_bytes_per_s` (0: no quota, one set before removed) (`produce_quotas`); each
    of the other services' (`PLATFORM_PRINCIPALS`) `services_produce_bytes_per_s` (None: their quotas left as they are).

    The sandboxes' rules ride along so that `infra up` and `tidegate topics ensure` bring an existing broker up to date;
    `revoke_rights` leaves them, since they belong to no prefix. Returns each quota it changed, as (was, now) bytes a second
    (None: no quota).
    """
    tools = list(tools)
    bindings = acl_bindings(prefix, tools) + sandbox_bindings()
    response: Any = await admin._send_request(_CreateAcls(bindings))
    errors = [(r[0], r[1]) for r in response.creation_responses]
    if errors and all(code == SecurityDisabled.errno for code, _ in errors):
        log.warning("the broker at %s has no authorizer: no ACLs made for prefix %r", admin._client.hosts, prefix)
        return {}
    _raise_errors(errors, f"CreateAcls for prefix {prefix!r}")
    if retired := retired_bindings(prefix, tools):
        deleted: Any = await admin._send_request(_DeleteAcls(retired))
        _raise_errors(((r[0], r[1]) for r in deleted.filter_responses), f"DeleteAcls of retired rules for prefix {prefix!r}")
    rates = produce_rates(
        tools,
        produce_bytes_per_s=produce_bytes_per_s,
        ops_produce_bytes_per_s=ops_produce_bytes_per_s,
        approval_produce_bytes_per_s=approval_produce_bytes_per_s,
        services_produce_bytes_per_s=services_produce_bytes_per_s,
    )
    changed = await quotas_unlike(admin, rates)
    await produce_quotas(admin, rates)
    return changed


def produce_rates(
    tools: Iterable[str],
    *,
    produce_bytes_per_s: int,
    ops_produce_bytes_per_s: int,
    approval_produce_bytes_per_s: int,
    services_produce_bytes_per_s: int | None,
) -> dict[str, float | None]:
    """Each principal's produce quota as the settings ask (`grant_rights`), bytes a second; None: no quota."""
    rates: dict[str, float | None] = {p: produce_bytes_per_s or None for p in [AGENT, *(tool_principal(t) for t in tools)]}
    rates |= dict.fromkeys(DIRECTORY_WRITERS, approval_produce_bytes_per_s or None)
    if services_produce_bytes_per_s is not None:
        rates |= dict.fromkeys(PLATFORM_PRINCIPALS, services_produce_bytes_per_s or None)
    return rates | {OPS: ops_produce_bytes_per_s or None}


async def quotas_unlike(admin: AIOKafkaAdminClient, rates: Mapping[str, float | None]) -> dict[str, tuple[float | None, float | None]]:
    """Each principal of `rates` whose produce quota on the broker is another: (on the broker, asked), None for none."""
    held = await produce_quotas_set(admin)
    return {p: (held.get(p), rate) for p, rate in rates.items() if held.get(p) != rate}


async def produce_quotas(admin: AIOKafkaAdminClient, rates: Mapping[str, float | None]) -> None:
    """Set each principal's `producer_byte_rate` (bytes a second, all its clients together), or remove it (None)."""
    response: Any = await admin._send_request(_AlterQuotas(rates))
    _raise_errors(((code, message) for code, message, _ in response.entries), "AlterClientQuotas")


async def produce_quotas_set(admin: AIOKafkaAdminClient) -> dict[str, float]:
    """Every user's `producer_byte_rate` the broker holds (DescribeClientQuotas v0, any user)."""
    response: Any = await admin._send_request(DescribeClientQuotasRequest([("user", _MATCH_SPECIFIED, None)], False))
    _raise_errors([(response.error_code, response.error_message)], "DescribeClientQuotas")
    return {
        dict(entity).get("user", ""): value for entity, values in response.entries for name, value in values if name == "producer_byte_rate"
    }


_MATCH_SPECIFIED = 2  # DescribeClientQuotas: every entity of the type that has a name (0: this name, 1: the default entity)


async def revoke_rights(admin: AIOKafkaAdminClient, prefix: str, tools: Iterable[str] = ()) -> int:
    """Delete the ACLs `grant_rights` made for `prefix` (when the prefix goes away), and those earlier versions made; the sandboxes' stay.

    Each binding is deleted by an exact filter, so another prefix's rules are never touched, even one that
    `prefix` begins (`tidegate.` and `tidegate.eu.`). Returns how many bindings were deleted.
    """
    tools = sorted(set(tools))
    response: Any = await admin._send_request(_DeleteAcls(acl_bindings(prefix, tools) + retired_bindings(prefix, tools)))
    if all(r[0] == SecurityDisabled.errno for r in response.filter_responses):
        return 0  # a broker without an authorizer: it has no rules to delete (`grant_rights` made none)
    _raise_errors(((r[0], r[1]) for r in response.filter_responses), f"DeleteAcls for prefix {prefix!r}")
    return sum(len(r[2]) for r in response.filter_responses)


async def granted_prefixes(admin: AIOKafkaAdminClient) -> dict[str, list[str]]:
    """Every deployment prefix that has rights on the broker, with the tools its rights name: what `revoke_rights` takes.

    A prefix is known by the literal rule on its `tasks` topic, which `grant_rights` makes for every prefix,
    and its tools by the literal rules on `<prefix>tools.<tool>.requests`. The sandboxes' standing rules
    belong to no prefix and are not listed.
    """
    return prefixes_of(await held_rules(admin) or [])


def tools_of(topic_names: Iterable[str]) -> list[str]:
    """The tools whose `tools.<tool>.requests|replies` topics are among `topic_names` (catalog names)."""
    return sorted({n.split(".")[1] for n in topic_names if n.startswith("tools.") and n.count(".") == 2})


async def ensure_principals(bootstrap: str, credentials_dir: Path, tools: Iterable[str] = ()) -> list[str]:
    """Give every principal but admin a password file (kept if present) and a SCRAM login; return them.

    Logs in as admin with `<credentials_dir>/admin.properties`, which `infra.sh` writes before formatting.
    """
    credentials_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before any I/O on the bus
    users: dict[str, tuple[str, str]] = {}
    for principal in principal_names(tools):
        if principal == ADMIN:
            continue
        path = credentials_dir / f"{principal}.properties"
        password = read_password(path)
        if password is None:
            password = secrets.token_urlsafe(24)
            write_private(path, client_properties(principal, password, bootstrap))
        users[principal] = (read_mechanism(path), password)  # on the mechanism its file names (a rotation moves it)
    options = kafka_options(KitSettings(kafka_credentials_dir=credentials_dir), ADMIN)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(options | {"request_timeout_ms": 30000}))
    await admin.start()
    try:
        await alter_scram(admin, users)
    finally:
        await admin.close()
    return list(users)
