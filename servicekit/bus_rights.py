"""Who may do what on the bus: the one table of Kafka principals and their rights, and the ACLs it makes.

Topic and group names here are catalog names, without the deployment's prefix; `acl_bindings` puts
the prefix in front. `*` means every topic of the prefix (a prefixed ACL), `tools.*.requests` and
`tools.*.replies` mean those topics of every tool served over Kafka (one literal ACL per tool). A group
name ending in `*` is a prefixed group ACL (outside clients name their own groups under it).

Sandboxes (replay, `eval workspaces --bus`) run under prefixes of one family, `SANDBOX_ROOT`
(`sandbox.replay-<id>.`, `sandbox.eval-<suite>-<id>.`), on standing rules (`sandbox_bindings`) that the
grant of any deployment prefix makes too: a sandbox needs no ACL change at run time, so it never needs `admin`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "ADMIN",
    "AGENT",
    "OPS",
    "PRINCIPALS",
    "SANDBOX_ROOT",
    "AclBinding",
    "Rights",
    "acl_bindings",
    "principal_names",
    "redrive_principal",
    "retired_bindings",
    "rights_of",
    "rights_table_markdown",
    "sandbox_bindings",
    "tool_principal",
]

ADMIN = "admin"
AGENT = "agent"
OPS = "ops"
EVERY_TOPIC = "*"
SANDBOX_ROOT = "sandbox."  # every sandbox prefix starts with it; no deployment prefix may overlap it (`acl_bindings` refuses)


@dataclass(frozen=True)
class Rights:
    """What one principal may read, write and join, in catalog names."""

    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    sandboxes: bool = False  # may create, use and delete every topic, and join every group, under SANDBOX_ROOT
    purpose: str = ""


PRINCIPALS: dict[str, Rights] = {
    ADMIN: Rights(purpose="super user: infrastructure, topic and ACL administration, test set-up (no ACLs needed)"),
    OPS: Rights(
        reads=(EVERY_TOPIC,),
        writes=("control",),
        groups=("ops*",),
        sandboxes=True,
        purpose=(
            "the CLI's operator commands: publishes control records; reads every topic (replay, what-if, audit tools);"
            " makes, runs and drops the replay and eval sandboxes"
        ),
    ),
    "planner": Rights(
        reads=("tasks", "actions.decided", "approvals", "actions.results"),
        writes=("actions.proposed", "tasks.outcomes", "deadletter"),
        groups=("planner",),
        purpose="the planner service",
    ),
    "policy": Rights(
        # tasks: untrusted input (provenance); actions.decided: its own, at start (`services.policy.restored`)
        reads=("tasks", "actions.proposed", "approvals", "actions.results", "actions.decided", "control", "directory"),
        writes=("actions.decided", "actions.authorized", "deadletter"),
        groups=("policy", "policy.results", "policy.tasks"),  # results and tasks, each on a consumer of its own
        purpose="the policy service: the only writer of decisions and authorizations",
    ),
    "approval": Rights(
        reads=("actions.decided", "actions.results", "approvals", "control", "directory"),  # approvals: its own, at start
        writes=("approvals", "actions.proposed", "directory", "deadletter"),  # actions.proposed: an approver's undo, decided by policy
        groups=("approval",),
        purpose=(
            "the approval service: the only writer of approvals, and of the directories tenant admins keep over its API;"
            " proposes the undos approvers ask for"
        ),
    ),
    "executor": Rights(
        reads=("actions.authorized", "actions.results", "control", "tools.*.replies"),  # actions.results: its own, at start
        writes=("actions.results", "tools.*.requests", "deadletter"),
        groups=("executor",),
        purpose="the executor: the only writer of results and tool requests",
    ),
    "audit": Rights(
        reads=(EVERY_TOPIC,),
        writes=("audit.checkpoints", "deadletter"),
        groups=("audit",),
        purpose="the audit service: reads every topic",
    ),
    AGENT: Rights(
        reads=("actions.decided", "approvals", "actions.results", "tasks.outcomes"),
        writes=("tasks", "actions.proposed"),
        groups=("agent*",),
        purpose="outside agents and clients (and the CLI's submit/propose): submit tasks, propose actions, follow them",
    ),
}

TOOL_PRINCIPAL_PREFIX = "tool-"


def tool_principal(tool: str) -> str:
    """The principal of the outside service that serves `tool` over Kafka."""
    return f"{TOOL_PRINCIPAL_PREFIX}{tool}"


def rights_of(principal: str) -> Rights:
    """The rights of a fixed principal, or of a tool service's (`tool-<tool>`)."""
    if principal in PRINCIPALS:
        return PRINCIPALS[principal]
    if principal.startswith(TOOL_PRINCIPAL_PREFIX):
        tool = principal.removeprefix(TOOL_PRINCIPAL_PREFIX)
        return Rights(
            reads=(f"tools.{tool}.requests",),
            writes=(f"tools.{tool}.replies",),
            # Its own group, or groups under `tool-<tool>.`: a bare prefix would let `tool-refund` join `tool-refund_bulk`'s group.
            groups=(principal, f"{principal}.*"),
            purpose=f"the outside service that serves tool `{tool}`: reads its requests, writes its replies",
        )
    raise KeyError(f"unknown principal {principal!r}")


def principal_names(tools: Iterable[str] = ()) -> list[str]:
    """Every principal: the fixed ones, then one per tool served over Kafka."""
    return list(PRINCIPALS) + [tool_principal(t) for t in sorted(set(tools))]


# Topics whose records are state applied in order (read from the beginning at start): a record sent again would land
# after newer ones and undo them. An operator issues the command again instead of redriving it.
NOT_REDRIVEN = ("control", "directory")


def redrive_principal(topic: str) -> str | None:
    """The login `tidegate dead-letters redrive` sends a record of catalog topic `topic` with, or None when none may.

    The least of the principals that already write the topic (`agent` where it is one of them), so a redrive needs
    no right the broker does not already give someone; never `admin`, never for `NOT_REDRIVEN`, nor for a topic that
    only several services write (`deadletter`) or no one (`tasks.outcomes` is the planner's: it does, once).
    """
    if topic in NOT_REDRIVEN:
        return None
    if topic.startswith("tools.") and topic.endswith(".replies"):
        return tool_principal(topic.removeprefix("tools.").removesuffix(".replies"))
    writers = [name for name, rights in PRINCIPALS.items() if name != ADMIN and topic in rights.writes]
    if AGENT in writers:
        return AGENT
    return writers[0] if len(writers) == 1 else None


class Resource(IntEnum):
    """Kafka's ACL resource types (the wire codes)."""

    TOPIC = 2
    GROUP = 3


class Pattern(IntEnum):
    """Kafka's ACL pattern types."""

    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):
    """Kafka's ACL operations."""

    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6


SANDBOX_OPERATIONS = (Operation.CREATE, Operation.DELETE, Operation.READ, Operation.WRITE)  # READ, WRITE and DELETE imply DESCRIBE


@dataclass(frozen=True, order=True)
class AclBinding:
    """One ALLOW rule: `principal` may `operation` on the resource named `name` (literal or prefix)."""

    resource: Resource
    name: str
    pattern: Pattern
    principal: str
    operation: Operation


def _topics(name: str, prefix: str, tools: list[str]) -> Iterator[tuple[str, Pattern]]:
    if name == EVERY_TOPIC:
        yield prefix, Pattern.PREFIXED
    elif name.startswith("tools.*."):
        end = name.removeprefix("tools.*.")
        for tool in tools:
            yield f"{prefix}tools.{tool}.{end}", Pattern.LITERAL
    else:
        yield prefix + name, Pattern.LITERAL


def acl_bindings(prefix: str, tools: Iterable[str] = ()) -> list[AclBinding]:
    """Every ALLOW rule of deployment `prefix`, for the fixed principals and one per tool in `tools`.

    READ and WRITE imply DESCRIBE in Kafka; WRITE on a topic implies the idempotent producer's rights.
    A `prefix` that overlaps the sandboxes' root is refused: the sandboxes' standing rules would reach its topics.
    """
    if prefix.startswith(SANDBOX_ROOT) or SANDBOX_ROOT.startswith(prefix):
        raise ValueError(
            f"topic prefix {prefix!r} overlaps {SANDBOX_ROOT!r}, the sandboxes' prefix family: choose another (e.g. 'tidegate.')"
        )
    tool_list = sorted(set(tools))
    out: set[AclBinding] = set()
    for principal in principal_names(tool_list):
        rights = rights_of(principal)
        user = f"User:{principal}"
        for op, names in ((Operation.READ, rights.reads), (Operation.WRITE, rights.writes)):
            for name in names:
                for full, pattern in _topics(name, prefix, tool_list):
                    out.add(AclBinding(Resource.TOPIC, full, pattern, user, op))
        for group in rights.groups:
            pattern = Pattern.PREFIXED if group.endswith("*") else Pattern.LITERAL
            out.add(AclBinding(Resource.GROUP, prefix + group.rstrip("*"), pattern, user, Operation.READ))
    return sorted(out)


def sandbox_bindings() -> list[AclBinding]:
    """The standing ALLOW rules of the sandboxes: whoever may run them creates, uses and deletes topics and joins groups under SANDBOX_ROOT.

    No rule for any other principal: a sandbox's services log in as the principal that runs it (`ops`).
    """
    out: set[AclBinding] = set()
    for principal, rights in PRINCIPALS.items():
        if not rights.sandboxes:
            continue
        user = f"User:{principal}"
        out.update(AclBinding(Resource.TOPIC, SANDBOX_ROOT, Pattern.PREFIXED, user, op) for op in SANDBOX_OPERATIONS)
        out.add(AclBinding(Resource.GROUP, SANDBOX_ROOT, Pattern.PREFIXED, user, Operation.READ))
    return sorted(out)


def retired_bindings(prefix: str, tools: Iterable[str] = ()) -> list[AclBinding]:
    """ALLOW rules earlier versions made and this one no longer does (removed when rights are granted again).

    A tool's group used to be a bare prefix `tool-<tool>`, which also matched `tool-<tool>_bulk`'s group.
    """
    return [
        AclBinding(Resource.GROUP, f"{prefix}{tool_principal(tool)}", Pattern.PREFIXED, f"User:{tool_principal(tool)}", Operation.READ)
        for tool in sorted(set(tools))
    ]


def rights_table_markdown() -> str:
    """The principals and their rights as the Markdown table docs/security/bus.md carries (a test compares)."""
    rows = [f"| principal | reads | writes | consumer groups | sandboxes (`{SANDBOX_ROOT}*`) | who |", "|---|---|---|---|---|---|"]
    sandboxes = "create, delete, read, write every topic; every group"

    def cell(names: tuple[str, ...], empty: str = "—") -> str:
        return ", ".join(f"`{n}`" for n in names) or empty

    for principal in [*PRINCIPALS, tool_principal("<tool>")]:
        r = rights_of(principal)
        if principal == ADMIN:
            rows.append(f"| `{principal}` | everything | everything | every group | everything | {r.purpose} |")
            continue
        sandbox = sandboxes if r.sandboxes else "—"
        rows.append(f"| `{principal}` | {cell(r.reads)} | {cell(r.writes)} | {cell(r.groups)} | {sandbox} | {r.purpose} |")
    return "\n".join(rows) + "\n"
