"""A tenant calls only the tools the catalog grants it (`tenants`): another tenant's outside tool is denied `tool_not_granted`.

Tools of kinds `topic`, `mcp` and `http` run code outside the deployment (often one tenant's own service): without
`tenants` no tenant may call them (fail closed). A `python` tool is the deployment's own code: every tenant, as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from schemas import ActionDecidedData, ActionProposedData, Reason, ReasonCode, ToolSpec
from servicekit import REPO_ROOT, KitSettings, ToolCatalog
from services.policy.engine import Controls, Verdict, decide
from services.policy.facts import Call, History
from services.policy.pack import CompiledPack, PackSource, compile_pack
from services.policy.tenant_settings import TenantSettings
from tidegate.ops.whatif import evaluate, load_pack

PACK_DIR = REPO_ROOT / "policies" / "default"
NOTE = {"type": "object", "additionalProperties": False, "required": ["ticket_id"], "properties": {"ticket_id": {"type": "string"}}}


def _tool(name: str, kind: str, **extra: Any) -> dict[str, Any]:
    where = {
        "topic": {"reply_key_file": f"tools/{name}.pub"},
        "mcp": {"mcp": {"url": "http://127.0.0.1:9/mcp", "tool": name}},
        "http": {"url": "http://127.0.0.1:9/x"},
        "python": {"entrypoint": "services.executor.systems.tickets:get_ticket"},
    }[kind]
    return {
        "name": name,
        "description": name,
        "risk": "read",
        "kind": kind,
        "args_schema": NOTE,
        "untrusted_output": False,
        **where,
        **extra,
    }


TOOLS = [
    _tool("served_topic", "topic", tenants=["acme"]),  # acme's LangGraph process serves it
    _tool("served_mcp", "mcp", tenants=["acme"]),  # acme's upstream MCP server
    _tool("shared_http", "http", tenants=["*"]),
    _tool("unnamed_topic", "topic"),
    _tool("unnamed_mcp", "mcp"),
    _tool("unnamed_http", "http"),
    _tool("own_python", "python"),
]


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> CompiledPack:
    directory: Path = tmp_path_factory.mktemp("tenants-catalog")
    for tool in TOOLS:
        (directory / f"{tool['name']}.yaml").write_text(yaml.safe_dump(tool))
    return compile_pack(PackSource.from_dir(PACK_DIR), ToolCatalog.load(directory))


def _decide(pack: CompiledPack, tenant: str, tool: str, *, granted: bool = False, args: Any = None) -> Verdict:
    call = Call(tenant_id=tenant, task_id="t-1", tool=tool, args=args or {"ticket_id": "T-9"}, proposer="agent", mode="autonomous")
    settings = TenantSettings(allow_autonomous=True, internal_domains=[f"{tenant}.example"])
    return decide(pack, call, History(), Controls(tenant=settings), approval_granted=granted, approvers={"ann": ["support"]})


@pytest.mark.parametrize("tool", ["served_topic", "served_mcp"])
def test_another_tenant_is_denied_a_tool_granted_to_one_tenant_and_the_message_says_the_fix(pack: CompiledPack, tool: str) -> None:
    verdict = _decide(pack, "initech", tool)
    assert (verdict.outcome, verdict.codes) == ("deny", ["tool_not_granted"])
    [reason] = verdict.reasons
    assert reason.policy_id == "builtin:tool-tenants"
    assert f"tool {tool!r} is not granted to tenant 'initech'" in reason.message
    assert "add it to the entry's `tenants`" in reason.message
    assert "acme" not in reason.message  # the caller, another tenant, learns no other tenant's id


@pytest.mark.parametrize("tool", ["served_topic", "served_mcp"])
def test_the_tenant_named_calls_it(pack: CompiledPack, tool: str) -> None:
    verdict = _decide(pack, "acme", tool)
    assert (verdict.outcome, verdict.codes) == ("allow", ["read_allowed"])


def test_the_other_tenants_own_approver_cannot_grant_it(pack: CompiledPack) -> None:
    """initech's approver approving initech's call of acme's tool: the re-decision after the grant is still a denial."""
    assert _decide(pack, "initech", "served_topic", granted=True).codes == ["tool_not_granted"]


def test_the_denial_comes_before_the_args_are_looked_at(pack: CompiledPack) -> None:
    """Another tenant learns nothing of the tool's args schema from its denial."""
    assert _decide(pack, "initech", "served_topic", args={"nope": 1}).codes == ["tool_not_granted"]


@pytest.mark.parametrize("tenant", ["acme", "initech", "globex"])
def test_a_star_grants_every_tenant(pack: CompiledPack, tenant: str) -> None:
    assert _decide(pack, tenant, "shared_http").outcome == "allow"


@pytest.mark.parametrize("tool", ["unnamed_topic", "unnamed_mcp", "unnamed_http"])
def test_an_outside_tool_without_tenants_is_denied_to_every_tenant_and_the_message_gives_the_line_to_add(
    pack: CompiledPack, tool: str
) -> None:
    verdict = _decide(pack, "acme", tool)
    assert (verdict.outcome, verdict.codes) == ("deny", ["tool_not_granted"])
    assert "names no tenants, so no tenant may call it: add `tenants: [acme]`" in verdict.reasons[0].message


@pytest.mark.parametrize("tenant", ["acme", "initech"])
def test_a_python_tool_without_tenants_is_every_tenants_as_before(pack: CompiledPack, tenant: str) -> None:
    assert _decide(pack, tenant, "own_python").codes == ["read_allowed"]


def test_a_star_is_alone_in_tenants() -> None:
    with pytest.raises(ValidationError, match="either"):
        ToolSpec.model_validate(_tool("mixed", "topic", tenants=["*", "acme"]))


def test_what_if_shows_the_calls_the_grant_now_denies() -> None:
    """Replayed against the repo's catalog (the shipping label names acme and globex), initech's recorded allow flips to a denial."""
    kit = KitSettings()
    args = {"order_id": "O-1001", "service": "standard"}
    proposals = [
        ActionProposedData(
            action_id=f"a-{t}",
            task_id=f"t-{t}",
            tenant_id=t,
            step=1,
            tool="create_shipping_label",
            args=args,
            proposer="agent",
            mode="autonomous",
            confidence=1.0,
        )
        for t in ("acme", "initech")
    ]
    decisions = [
        ActionDecidedData(
            action_id=p.action_id,
            task_id=p.task_id,
            tenant_id=p.tenant_id,
            tool=p.tool,
            args=p.args,
            action_digest="d",
            outcome="allow",
            reasons=[Reason(code=ReasonCode.LOW_RISK_WRITE_ALLOWED, policy_id="x")],
            policy_version="v",
            latency_ms=1.0,
        )
        for p in proposals
    ]
    tenants = {t: TenantSettings(allow_autonomous=True, accept_irreversible=["write_low"]) for t in ("acme", "initech")}
    report = evaluate(load_pack(kit.policy_dir, kit.tools_dir), proposals, decisions, tenants=tenants)
    [flip] = report.flips
    assert (flip.tenant_id, flip.kind, flip.now_reasons) == ("initech", "allow→deny", ["tool_not_granted"])
