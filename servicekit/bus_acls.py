"""The ACL rules a broker holds, named, and compared with those the table of rights grants (`tidegate topics check`).

aiokafka's admin client has no `describe_acls`: DescribeAcls is sent from aiokafka's own protocol class
(`DescribeAclsRequest`), as `servicekit.bus_admin` sends CreateAcls and DeleteAcls.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import SecurityDisabled, for_code
from aiokafka.protocol.admin import DescribeAclsRequest

from servicekit.bus_auth import kafka_options
from servicekit.bus_rights import ADMIN, SANDBOX_ROOT, AclBinding, Pattern, Resource, acl_bindings, sandbox_bindings
from servicekit.settings import KitSettings

__all__ = ["HeldRule", "RightsCheck", "check_rights", "compare_rights", "held_rules", "prefixes_of"]

_ANY = 1  # DescribeAcls' filter value that matches every resource type, pattern type, operation and permission
_ANY_HOST = "*"
_TASKS = "tasks"  # the catalog topic every deployment prefix's rights name (the planner reads it)
_TOOL_REQUESTS = re.compile(r"tools\.([^.]+)\.requests")

# Kafka's ACL wire codes (AclOperation, ResourceType, PatternType, AclPermissionType) by name, to name what the broker holds
_OPERATION_NAMES = (
    *("UNKNOWN", "ANY", "ALL", "READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE", "CLUSTER_ACTION"),
    *("DESCRIBE_CONFIGS", "ALTER_CONFIGS", "IDEMPOTENT_WRITE", "CREATE_TOKENS", "DESCRIBE_TOKENS"),
)
_RESOURCE_NAMES = ("UNKNOWN", "ANY", "TOPIC", "GROUP", "CLUSTER", "TRANSACTIONAL_ID", "DELEGATION_TOKEN", "USER")
_PATTERN_NAMES = ("UNKNOWN", "ANY", "MATCH", "LITERAL", "PREFIXED")
_PERMISSION_NAMES = ("UNKNOWN", "ANY", "DENY", "ALLOW")


def _named(names: tuple[str, ...], code: int) -> str:
    return names[code] if 0 <= code < len(names) else f"code {code}"


@dataclass(frozen=True, order=True)
class HeldRule:
    """One ACL rule, its Kafka codes named (`READ`, `TOPIC`, `LITERAL`, `ALLOW`): as the broker holds it, or as the table grants it."""

    principal: str
    operation: str
    resource: str
    name: str
    pattern: str
    permission: str = "ALLOW"
    host: str = _ANY_HOST

    @classmethod
    def granted(cls, binding: AclBinding) -> HeldRule:
        """The rule `grant_rights` makes of `binding`: ALLOW from any host."""
        return cls(binding.principal, binding.operation.name, binding.resource.name, binding.name, binding.pattern.name)

    def __str__(self) -> str:
        prefixed = "*" if self.pattern == Pattern.PREFIXED.name else ""
        odd = "" if (self.permission, self.host) == ("ALLOW", _ANY_HOST) else f" ({self.permission} from host {self.host})"
        return f"{self.principal} {self.operation} {self.resource.lower()} {self.name}{prefixed}{odd}"


async def held_rules(admin: AIOKafkaAdminClient) -> list[HeldRule] | None:
    """Every ACL rule the broker holds (one DescribeAcls matching all), or None when it has no authorizer (it keeps none)."""
    response: Any = await admin._send_request(DescribeAclsRequest(_ANY, None, _ANY, None, None, _ANY, _ANY))
    if response.error_code == SecurityDisabled.errno:
        return None
    if response.error_code:
        raise for_code(response.error_code)(f"DescribeAcls: {response.error_message}")
    return [
        HeldRule(
            principal,
            _named(_OPERATION_NAMES, operation),
            _named(_RESOURCE_NAMES, kind),
            name,
            _named(_PATTERN_NAMES, pattern),
            _named(_PERMISSION_NAMES, permission),
            host,
        )
        for kind, name, pattern, acls in response.resources
        for principal, host, operation, permission in acls
    ]


def prefixes_of(rules: Iterable[HeldRule]) -> dict[str, list[str]]:
    """Every deployment prefix `rules` grant rights on, with the tools they name (`servicekit.bus_admin.granted_prefixes`).

    A prefix is known by the literal rule on its `tasks` topic, which `grant_rights` makes for every prefix,
    and its tools by the literal rules on `<prefix>tools.<tool>.requests`.
    """
    literal_topics = sorted({r.name for r in rules if r.resource == Resource.TOPIC.name and r.pattern == Pattern.LITERAL.name})
    prefixes: dict[str, list[str]] = {name.removesuffix(_TASKS): [] for name in literal_topics if name.endswith(_TASKS)}
    for name in literal_topics:
        for prefix, tools in prefixes.items():
            if name.startswith(prefix) and (match := _TOOL_REQUESTS.fullmatch(name.removeprefix(prefix))):
                tools.append(match.group(1))
    return {prefix: sorted(tools) for prefix, tools in sorted(prefixes.items())}


@dataclass(frozen=True)
class RightsCheck:
    """A deployment prefix's ACLs as the broker holds them beside those `grant_rights` makes from the table (`check_rights`)."""

    authorizer: bool  # False: the broker has no authorizer, so it keeps no rules and enforces none (nothing compared)
    granted: int  # rules the table grants the prefix (its own and the sandboxes' standing ones)
    missing: tuple[HeldRule, ...] = ()  # granted by the table, not on the broker: `tidegate topics ensure` makes them
    extra: tuple[HeldRule, ...] = ()  # on the broker, reaching the prefix's or the sandboxes' names, not made by the table

    @property
    def ok(self) -> bool:
        """Every rule the table grants is on the broker (an extra rule is for an operator to judge, not a fault)."""
        return not self.missing


def _reaches(rule: HeldRule, roots: Iterable[str], others: Iterable[str]) -> bool:
    """Whether `rule` applies to a topic or group under one of `roots`, and not only to those of the prefixes `others` (nested)."""
    if rule.resource not in (Resource.TOPIC.name, Resource.GROUP.name):
        return True  # a cluster, transactional-id or user rule is no prefix's: it reaches every one, and the table grants none
    if rule.name == "*":
        return True  # Kafka's wildcard: every topic (or group)
    for root in roots:
        if rule.name.startswith(root) and not any(rule.name.startswith(o) for o in others):
            return True
        if rule.pattern == Pattern.PREFIXED.name and root.startswith(rule.name):
            return True  # a wider prefix: it reaches every name under `root`
    return False


def compare_rights(held: Iterable[HeldRule] | None, prefix: str, tools: Iterable[str] = ()) -> RightsCheck:
    """Compare the rules the broker holds (None: it has no authorizer) with those `grant_rights` makes for `prefix` and `tools`.

    Missing: a rule the table grants (`acl_bindings`, `sandbox_bindings`) that the broker lacks, e.g. a read right a release
    added on a broker no one ran `tidegate topics ensure` on since. Extra: a rule the table does not make that reaches the
    prefix's topics or groups (another deployment's prefix nested under it aside), the sandboxes', or the whole cluster:
    one made by hand, a retired one, a DENY.
    """
    tools = sorted(set(tools))
    expected = {HeldRule.granted(b) for b in acl_bindings(prefix, tools) + sandbox_bindings()}
    if held is None:
        return RightsCheck(authorizer=False, granted=len(expected))
    held = set(held)
    nested = [p for p in prefixes_of(held) if p != prefix and p.startswith(prefix)]
    extra = {r for r in held if r not in expected and _reaches(r, (prefix, SANDBOX_ROOT), nested)}
    return RightsCheck(True, len(expected), tuple(sorted(expected - held)), tuple(sorted(extra)))


async def check_rights(
    bootstrap: str, prefix: str, tools: Iterable[str] = (), *, client_options: Mapping[str, Any] | None = None, timeout_s: float = 30.0
) -> RightsCheck:
    """The ACLs of `prefix` (and of `tools`) on the broker beside the table's (`compare_rights`); nothing is changed.

    Logs in with `client_options` (default: the `admin` principal's local credentials): DescribeAcls needs DESCRIBE on the cluster.
    """
    options = dict(client_options) if client_options is not None else kafka_options(KitSettings(), ADMIN)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(options | {"request_timeout_ms": int(timeout_s * 1000)}))
    await admin.start()
    try:
        held = await held_rules(admin)
    finally:
        await admin.close()
    return compare_rights(held, prefix, tools)
