"""Why a call escalated, in words an approver at 2 a.m. reads: each policy's `@message`, with the request's figures.

Every reason of the default pack had an empty message: the approver saw `needs_human_approval (refund-threshold): ` and
no threshold anywhere. A pack's messages name the request's values; a message naming one that does not exist is refused at load.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from servicekit import REPO_ROOT, ToolCatalog
from services.policy.engine import Controls, decide
from services.policy.facts import Call, History
from services.policy.messages import message_problem, render_message
from services.policy.pack import PackError, PackSource, compile_pack, validate_pack
from services.policy.tenant_settings import TenantSettings

CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
PACK = compile_pack(PackSource.from_dir(REPO_ROOT / "policies" / "default"), CATALOG)
REFUND = {"payee_id": "cus_1", "amount_usd": 900.0, "order_id": "O-1"}


def test_every_policy_of_the_default_pack_says_why_in_words() -> None:
    assert [pid for pid, rule in PACK.rules.items() if not rule.message] == []


def test_an_escalated_refund_names_its_amount_and_the_tenants_threshold() -> None:
    controls = Controls(tenant=TenantSettings(refund_threshold_usd=500, allow_autonomous=True, known_payees=["cus_1"]))
    verdict = decide(PACK, Call("acme", "t", "issue_refund", REFUND, "me", mode="autonomous"), History(), controls)
    [reason] = [r for r in verdict.reasons if r.code == "needs_human_approval"]
    assert reason.message == "900.00 USD is at or over the tenant's threshold of 500.00 USD: a human approves it"
    under = decide(PACK, Call("acme", "t", "issue_refund", REFUND | {"amount_usd": 40.0}, "me", mode="autonomous"), History(), controls)
    assert any(r.message.startswith("40.00 USD is under the tenant's threshold of 500.00 USD") for r in under.reasons)


def test_the_values_are_written_for_people() -> None:
    context = {"facts": {"amount_cents": 123456, "tainted": True}, "settings": {"accept_irreversible": ["write_low", "draft"]}}
    template = "{facts.amount_usd} / {facts.amount_cents} / {facts.tainted} / {settings.accept_irreversible}"
    assert render_message(template, context) == "1,234.56 / 123456 / yes / draft, write_low"


@pytest.mark.parametrize(
    "template", ["{facts.amount_dollars}", "{facts.tainted_usd}", "{nothing}", "{facts.amount_usd", "{Facts.amount_usd}"]
)
def test_a_message_naming_a_value_the_request_does_not_have_is_refused_when_the_pack_loads(template: str) -> None:
    assert message_problem(template) is not None
    text = f'@id("r") @outcome("allow") @reason("read_allowed") @message("{template}")\npermit(principal, action, resource);'
    problems = validate_pack(PackSource(files={"p.cedar": text}, settings={}), CATALOG)
    assert any("@message" in p for p in problems), problems
    with pytest.raises(PackError):
        compile_pack(PackSource(files={"p.cedar": text}, settings={}), CATALOG)


def test_a_pack_whose_message_names_spend_keeps_each_figure_its_own() -> None:
    """A pack remembers Cedar's answers by request; one whose messages show spend must not reuse another spend's sentence."""
    text = (
        '@id("r") @outcome("allow") @reason("read_allowed") @message("spent {facts.spend_tenant_usd} USD")\n'
        'permit(principal, action in Action::"read", resource);'
    )
    pack = compile_pack(PackSource(files={"p.cedar": text}, settings={}), CATALOG)
    assert pack.reads_spend


def test_a_tool_added_after_the_service_loaded_the_catalog_is_denied_saying_a_restart_is_needed(tmp_path: Path) -> None:
    """Governance probe F4: a tool file added to catalog/tools/ was denied `tool ... is not in the catalog` until a restart, unsaid."""
    folder = tmp_path / "tools"
    shutil.copytree(REPO_ROOT / "catalog" / "tools", folder)
    started = ToolCatalog.load(folder)  # what the policy service read at its start
    pack = compile_pack(PackSource.from_dir(REPO_ROOT / "policies" / "default"), started)
    tag = yaml.safe_load((folder / "tag_ticket.yaml").read_text())
    (folder / "tag_ticket_ext.yaml").write_text(yaml.safe_dump(tag | {"name": "tag_ticket_ext"}))  # the operator adds a tool
    controls = Controls(tenant=TenantSettings(allow_autonomous=True))
    call = Call("acme", "t", "tag_ticket_ext", {"ticket_id": "T-1", "tags": ["refund"]}, "me", mode="autonomous")
    [reason] = decide(pack, call, History(), controls).reasons
    assert (reason.code, reason.policy_id) == ("no_permit", "builtin:unknown-tool")
    assert started.loaded_at is not None
    loaded = f"{started.loaded_at:%Y-%m-%d %H:%M:%S} UTC"
    assert f"tool 'tag_ticket_ext' is not in the catalog this service loaded at {loaded} ({len(started)} tools)" in reason.message
    assert "needs the services restarted" in reason.message
    assert "`tidegate restart policy`" in reason.message
    assert "`tidegate topics ensure`" in reason.message
    restarted = compile_pack(PackSource.from_dir(REPO_ROOT / "policies" / "default"), ToolCatalog.load(folder))
    assert "builtin:unknown-tool" not in {r.policy_id for r in decide(restarted, call, History(), controls).reasons}
