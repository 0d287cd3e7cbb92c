"""The tool catalog format: one YAML file per tool, loaded alike by planner, policy and executor."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from schemas.common import Contract, RiskClass

__all__ = [
    "EVERY_TENANT",
    "OUTSIDE_KINDS",
    "ArgSource",
    "BeforeRead",
    "CounterpartyKind",
    "McpUpstream",
    "PolicyFacts",
    "RecordFigures",
    "RetryPolicy",
    "ToolSpec",
    "UndoSpec",
]

EVERY_TENANT = "*"
"""`tenants: ["*"]`: every tenant may call the tool."""
OUTSIDE_KINDS = frozenset({"topic", "mcp", "http"})
"""Tool kinds whose code runs outside the deployment (another team's or tenant's service): callable only by the tenants named."""

CounterpartyKind = Literal["email", "chat_user", "chat_channel", "url", "payee", "organisation", "path", "repository"]
"""What an argument that names a counterparty names: an email address list (RFC 5322), a chat user or
channel, a URL or domain (its host), a payee account (id or IBAN), an organisation, a repository path, or a code
repository (`owner/name`, the tenant's own when its owner is one of the directory's organisations)."""


class RetryPolicy(Contract):
    """How the executor retries a tool's retryable errors (it is the one layer that retries)."""

    max_attempts: int = Field(default=3, ge=1, le=10, description="Attempts in all, the first included.")
    backoff_initial_s: float = Field(default=0.2, ge=0, description="Wait before the second attempt.")
    backoff_max_s: float = Field(default=5.0, ge=0, description="Longest wait between attempts.")
    backoff_multiplier: float = Field(default=2.0, ge=1, description="Growth of the wait per attempt.")


class PolicyFacts(Contract):
    """Which args the policy service reads to compute its facts; each value is a dot path into args."""

    amount: str | None = Field(default=None, description="Arg holding a money amount in USD.", examples=["amount_usd"])
    payee: str | None = Field(default=None, description="Arg naming a payee.", examples=["payee_id"])
    recipients: str | None = Field(
        default=None, description="Arg holding email recipients (shorthand for a `counterparties` entry of kind `email`).", examples=["to"]
    )
    paths: str | None = Field(
        default=None, description="Arg holding file paths (shorthand for a `counterparties` entry of kind `path`).", examples=["files"]
    )
    counterparties: dict[str, CounterpartyKind] = Field(
        default_factory=dict,
        description="Every arg that names a counterparty → its kind; a dot path, lists walked at any depth "
        "(declare each address field: to, cc, bcc, reply_to).",
        examples=[{"to": "email", "cc": "email", "bcc": "email", "attachments.url": "url"}],
    )
    documentation: str | None = Field(default=None, description="Arg referencing supporting documentation.", examples=["order_id"])
    labels: str | None = Field(
        default=None,
        description="Arg holding the tags or labels the call adds (a dot path; a list or one string): one the tenant lists in "
        "`automation_tags` (a tag its helpdesk automations act on) escalates the call.",
        examples=["tags"],
    )
    record: str | None = Field(
        default=None,
        description="Arg naming the system-of-record entry the call acts on (a charge): the policy compares the call's "
        "amount (USD) with the figures a trusted read of that entry earlier in the task recorded (a tool's `records`).",
        examples=["charge_id"],
    )
    reviewed: bool = Field(
        default=False,
        description="The change takes effect only after a review outside Tidegate (a pull request and its CI); "
        "a `code_change` tool without it pushes directly and is refused by the default pack.",
    )
    important: list[str] = Field(
        default_factory=list, description="Args whose taint escalates the call.", examples=[["payee_id", "amount_usd"]]
    )

    def declared_counterparties(self) -> dict[str, CounterpartyKind]:
        """Every counterparty arg with its kind: `counterparties`, plus the `recipients`, `paths` and `payee` shorthands."""
        declared: dict[str, CounterpartyKind] = {}
        if self.recipients:
            declared[self.recipients] = "email"
        if self.paths:
            declared[self.paths] = "path"
        if self.payee:
            declared[self.payee] = "payee"
        return declared | dict(self.counterparties)


class McpUpstream(Contract):
    """An upstream MCP server's tool that the executor calls, for kind `mcp`: over streamable HTTP or a stdio command."""

    url: str | None = Field(default=None, description="Streamable HTTP endpoint of the server.", examples=["http://127.0.0.1:9000/mcp"])
    command: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Command that starts a stdio server (the executor starts it per call).",
        examples=[["uvx", "mcp-server-git"]],
    )
    tool: str = Field(min_length=1, description="The tool's name on the upstream server.", examples=["create_issue"])

    @model_validator(mode="after")
    def _one_transport(self) -> McpUpstream:
        if (self.url is None) == (self.command is None):
            raise ValueError("an mcp upstream needs exactly one of url and command")
        return self


_SOURCE_PATH = r"^(args|result|before)(\.[A-Za-z0-9_]+)+$"
_RESULT_PATH = r"^result(\.[A-Za-z0-9_]+)+$"
SourcePath = Annotated[str, Field(pattern=_SOURCE_PATH)]
"""A dot path rooted at `args`, `result` or `before`."""


class ArgSource(Contract):
    """Where one argument of an undo call comes from: a value of the original call, its result, or the state read before it.

    `from` is a dot path rooted at `args` (the original call's args), `result` (what the tool returned)
    or `before` (what the `before` read returned). `without` removes the items of another list (the tags
    a ticket had already keep their place); `within` keeps only the items that are also in another list.
    """

    from_: str = Field(alias="from", pattern=_SOURCE_PATH, description="Dot path of the value.", examples=["args.tags"])
    without: str | None = Field(
        default=None, pattern=_SOURCE_PATH, description="Dot path of a list whose items are left out.", examples=["before.tags"]
    )
    within: str | None = Field(
        default=None, pattern=_SOURCE_PATH, description="Dot path of a list; only items also in it are kept.", examples=["before.tags"]
    )


class BeforeRead(Contract):
    """A read the executor makes right before the call, so that the undo can restore what was there."""

    tool: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="A `read` tool of the catalog.", examples=["get_ticket"])
    args: dict[str, SourcePath | ArgSource] = Field(
        description="Its args: each a dot path rooted at `args`, or an `ArgSource`.", examples=[{"ticket_id": "args.ticket_id"}]
    )


class UndoSpec(Contract):
    """How a write is undone: another catalogued tool with args computed from the call, or `irreversible` with what a person must do."""

    tool: str | None = Field(
        default=None, pattern=r"^[a-z][a-z0-9_]*$", description="The tool that undoes the call.", examples=["untag_ticket"]
    )
    args: dict[str, SourcePath | ArgSource] = Field(
        default_factory=dict,
        description="Args of the undo call: a dot path rooted at `args`, `result` or `before`, or an `ArgSource`.",
        examples=[{"ticket_id": "args.ticket_id", "note_id": "result.note_id"}],
    )
    before: BeforeRead | None = Field(default=None, description="State to read before the call (what the undo restores).")
    irreversible: str | None = Field(
        default=None,
        min_length=1,
        description="The call cannot be undone by a tool; what a person must do instead.",
        examples=["a refund cannot be taken back: contact the customer and charge again if it was wrong"],
    )

    @model_validator(mode="after")
    def _one_way(self) -> UndoSpec:
        if (self.tool is None) == (self.irreversible is None):
            raise ValueError("undo: give either a tool (with args) or irreversible (what a person must do), not both")
        if self.irreversible is not None and (self.args or self.before):
            raise ValueError("undo: an irreversible call has no undo args nor before read")
        return self

    @property
    def reversible(self) -> bool:
        """Whether a tool undoes the call."""
        return self.tool is not None


class RecordFigures(Contract):
    """What a trusted read tells the policy about an entry of the tenant's system of record (a charge: what is left and its currency).

    Each value is a dot path into what the read returned (rooted at `result`). A later call of the
    same task whose `facts.record` arg names the same entry is decided on these figures.
    """

    key: str = Field(pattern=_RESULT_PATH, description="The entry's id.", examples=["result.charge_id"])
    amount_usd: str = Field(
        pattern=_RESULT_PATH,
        description="The amount a call may still move, in the entry's currency.",
        examples=["result.amount_refundable_usd"],
    )
    currency: str = Field(pattern=_RESULT_PATH, description="The entry's currency (ISO 4217 code).", examples=["result.currency"])


class ToolSpec(Contract):
    """A catalogued tool: what a model sees, what policy checks, and how the executor calls it."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Unique tool name.", examples=["issue_refund"])
    description: str = Field(min_length=1, description="What the tool does (shown to models).")
    args_schema: dict[str, Any] = Field(description="JSON Schema (draft 2020-12) of the args.")
    risk: RiskClass = Field(description="Risk class; the policy rubric keys on it.")
    idempotent: bool = Field(default=False, description="Safe to call twice with the same args.")
    accepts_idempotency_key: bool = Field(default=False, description="The tool deduplicates on the key we pass (the action id).")
    timeout_s: float = Field(default=10.0, gt=0, le=600, description="Per-attempt timeout.")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    cost_usd: float = Field(default=0.0, ge=0, description="Cost per call, USD.")
    credential_scopes: dict[str, str] = Field(
        default_factory=dict,
        description="Tenant → credential scope name; the executor loads the secret for that scope from its environment.",
        examples=[{"acme": "payments:refund"}],
    )
    facts: PolicyFacts = Field(default_factory=PolicyFacts)
    untrusted_output: bool = Field(
        default=False,
        description="Its results hold content from outside the tenant (an inbox, a web page, a ticket, a channel's messages): "
        "the policy service marks any later argument of the same task derived from them as tainted.",
    )
    system_fields: list[str] = Field(
        default_factory=list,
        description="With `untrusted_output`: dot paths of the result that the system sets itself, never the outside content "
        "(the id of the ticket read): not learned as untrusted, so a later call on the entry the read named is not tainted "
        "by the read's own answer. The content (subject, body, comments) stays untrusted.",
        examples=[["ticket_id"]],
    )
    records: RecordFigures | None = Field(
        default=None,
        description="For a `read` of the tenant's system of record (`untrusted_output: false`): the figures of the entry it read, "
        "which bound later calls of the task on that entry (`facts.record`).",
    )
    connector: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9_]*$",
        description="Connector the tool belongs to (a system of record such as `stripe`); the executor then calls it only for "
        "a tenant that enabled the tool and set the connector's credential (`tidegate connectors`), ignoring `credential_scopes`.",
        examples=["stripe"],
    )
    kind: Literal["python", "http", "topic", "mcp"] = Field(description="How the executor reaches the tool.")
    entrypoint: str | None = Field(
        default=None, description="`module:function`, for kind `python`.", examples=["services.executor.systems.payments:issue_refund"]
    )
    url: str | None = Field(default=None, description="Endpoint, for kind `http`.", examples=["http://127.0.0.1:8090/refunds"])
    method: Literal["POST", "PUT", "PATCH", "DELETE", "GET"] = Field(default="POST", description="HTTP method, for kind `http`.")
    mcp: McpUpstream | None = Field(default=None, description="The upstream MCP server and tool, for kind `mcp`.")
    undo: UndoSpec | None = Field(
        default=None,
        description="How to undo a successful call (`tidegate undo`), or `irreversible`; null: not declared (no undo).",
        examples=[
            {"tool": "untag_ticket", "args": {"ticket_id": "args.ticket_id", "tags": {"from": "args.tags", "without": "before.tags"}}}
        ],
    )
    reply_key_file: str | None = Field(
        default=None,
        description="For kind `topic`: the outside tool service's Ed25519 public key (PEM) that must sign its `tool.reply` events; "
        "a path relative to the deployment's keys directory, or absolute. Without it every reply is refused.",
        examples=["tools/update_inventory.pub"],
    )
    tenants: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        default=None,
        description='The tenants that may call the tool; `["*"]`: every tenant. Absent: for kinds `topic`, `mcp` and `http` '
        "(code outside the deployment serves them) no tenant may; for kind `python` (the deployment's own code) every tenant.",
        examples=[["acme"], ["acme", "globex"], ["*"]],
    )

    @model_validator(mode="after")
    def _kind_fields(self) -> ToolSpec:
        if self.kind == "python" and not self.entrypoint:
            raise ValueError(f"tool {self.name}: kind python needs an entrypoint")
        if self.kind == "http" and not self.url:
            raise ValueError(f"tool {self.name}: kind http needs a url")
        if self.connector is not None and self.kind != "python":
            raise ValueError(f"tool {self.name}: connector tools are kind python (the connector's own client calls the API)")
        if self.kind == "mcp" and self.mcp is None:
            raise ValueError(f"tool {self.name}: kind mcp needs an mcp upstream")
        if self.records is not None and (self.risk is not RiskClass.READ or self.untrusted_output):
            raise ValueError(f"tool {self.name}: `records` come from a trusted read (risk read, untrusted_output false)")
        if self.system_fields and not self.untrusted_output:
            raise ValueError(f"tool {self.name}: `system_fields` set apart fields of an untrusted output (untrusted_output true)")
        if self.undo is not None and self.undo.tool is not None and self.risk is RiskClass.READ:
            raise ValueError(f"tool {self.name}: a read changes nothing, so it has no undo")
        if self.tenants is not None and EVERY_TENANT in self.tenants and len(self.tenants) > 1:
            raise ValueError(f'tool {self.name}: tenants is either ["*"] (every tenant) or a list of tenant ids, not both')
        return self

    @property
    def served_outside(self) -> bool:
        """Whether code outside the deployment serves the tool (kinds `topic`, `mcp`, `http`): its entry must name its tenants."""
        return self.kind in OUTSIDE_KINDS

    @property
    def grants(self) -> frozenset[str] | None:
        """The tenants that may call the tool; None: every tenant (`*`, or a `python` tool without `tenants`).

        An outside tool (`served_outside`) without `tenants` serves no tenant: the empty set.
        """
        if self.tenants is None:
            return None if not self.served_outside else frozenset()
        return None if EVERY_TENANT in self.tenants else frozenset(self.tenants)

    def granted_to(self, tenant_id: str) -> bool:
        """Whether `tenant_id` may call the tool (`grants`): its `tenants` name it or `*`; without `tenants`, only a `python` tool."""
        grants = self.grants
        return grants is None or tenant_id in grants

    @property
    def writes(self) -> bool:
        """Whether the tool changes anything (every class but `read`)."""
        return self.risk is not RiskClass.READ
