"""The default pack names no tool: it loads against a catalog with none of the demo's tools and governs it by risk class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from servicekit import REPO_ROOT, ToolCatalog
from servicekit.catalog_checks import unread_amount_warnings
from services.policy.engine import Controls, decide
from services.policy.facts import Call, History
from services.policy.pack import PackSource, compile_pack
from services.policy.tenant_settings import TenantSettings

PACK_DIR = REPO_ROOT / "policies" / "default"


def _tool(name: str, risk: str, properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"{name} (a bank's tool)",
        "risk": risk,
        "kind": "topic",
        "tenants": ["bank"],
        "args_schema": {"type": "object", "additionalProperties": False, "properties": properties},
        **extra,
    }


BANK_TOOLS = [
    _tool("get_balance", "read", {"account": {"type": "string"}}, untrusted_output=False),
    _tool("label_transaction", "write_low", {"transaction_id": {"type": "string"}, "label": {"type": "string"}}),
    _tool(
        "send_money",
        "financial",
        {"recipient_iban": {"type": "string"}, "amount": {"type": "number"}},
        facts={"amount": "amount", "payee": "recipient_iban"},
    ),
    # As `tidegate mcp import` writes an upstream tool and its integrator marks it `financial`, before filling in `facts`.
    _tool("pay_vendor", "financial", {"vendor": {"type": "string"}, "amount_usd": {"type": "number"}}),
    # A Decimal amount as an MCP server's SDK lists it: a number, or a string the tool parses.
    _tool(
        "pay_invoice",
        "financial",
        {"vendor": {"type": "string"}, "amount_usd": {"anyOf": [{"type": "number"}, {"type": "string"}]}},
        facts={"amount": "amount_usd", "payee": "vendor"},
    ),
    _tool("close_account", "destructive", {"account": {"type": "string"}}),
    _tool("grant_access", "permission_change", {"user": {"type": "string"}, "role": {"type": "string"}}),
    _tool("merge_to_main", "code_change", {"files": {"type": "array", "items": {"type": "string"}}}, facts={"paths": "files"}),
]


@pytest.fixture(scope="module")
def bank_catalog(tmp_path_factory: pytest.TempPathFactory) -> ToolCatalog:
    directory: Path = tmp_path_factory.mktemp("bank-catalog")
    for tool in BANK_TOOLS:
        (directory / f"{tool['name']}.yaml").write_text(yaml.safe_dump(tool))
    return ToolCatalog.load(directory)


def _decide(catalog: ToolCatalog, tool: str, args: dict[str, Any], **settings: Any) -> tuple[str, list[str]]:
    pack = compile_pack(PackSource.from_dir(PACK_DIR), catalog)
    tenant = TenantSettings.model_validate({"allow_autonomous": True, "refund_threshold_usd": 100} | settings)
    call = Call(tenant_id="bank", task_id="t-1", tool=tool, args=args, proposer="agent", mode="autonomous")
    verdict = decide(pack, call, History(), Controls(tenant=tenant))
    return verdict.outcome, verdict.codes


def test_the_default_pack_loads_against_a_catalog_without_the_demo_tools(bank_catalog: ToolCatalog) -> None:
    assert not {"open_pull_request", "push_commit", "issue_refund"} & set(bank_catalog)
    pack = compile_pack(PackSource.from_dir(PACK_DIR), bank_catalog)
    assert pack.rules  # every rule of the default pack compiled against this catalog


@pytest.mark.parametrize(
    ("tool", "args", "settings", "outcome", "reason"),
    [
        ("get_balance", {"account": "a-1"}, {}, "allow", "read_allowed"),
        # label_transaction declares no undo: not known to be reversible, so a human decides unless the tenant accepts the class.
        ("label_transaction", {"transaction_id": "x", "label": "rent"}, {}, "escalate", "no_rollback_path"),
        (
            "label_transaction",
            {"transaction_id": "x", "label": "rent"},
            {"accept_irreversible": ["write_low"]},
            "allow",
            "low_risk_write_allowed",
        ),
        ("send_money", {"recipient_iban": "DE89370400440532013000", "amount": 50}, {}, "deny", "new_payee_blocked"),
        (
            "send_money",
            {"recipient_iban": "DE89370400440532013000", "amount": 50},
            {"known_payees": ["DE89370400440532013000"]},
            "allow",
            "within_threshold",
        ),
        (
            "send_money",
            {"recipient_iban": "DE89370400440532013000", "amount": 150},
            {"known_payees": ["DE89370400440532013000"]},
            "escalate",
            "needs_human_approval",
        ),
        # Its amount is not one policy can read: never 0 USD under the threshold, whatever it pays (it was allowed
        # `within_threshold` for 99,999 USD to anyone).
        ("pay_vendor", {"vendor": "acct_new", "amount_usd": 99_999}, {}, "escalate", "amount_unknown"),
        ("pay_vendor", {"vendor": "acct_new", "amount_usd": 1}, {"refund_threshold_usd": 10**6}, "escalate", "amount_unknown"),
        # The model chooses the amount's type: as a string, policy reads no amount, and no threshold allows it.
        ("pay_invoice", {"vendor": "acct_1", "amount_usd": "99999"}, {"known_payees": ["acct_1"]}, "escalate", "amount_unknown"),
        ("pay_invoice", {"vendor": "acct_1", "amount_usd": 99_999}, {"known_payees": ["acct_1"]}, "escalate", "needs_human_approval"),
        ("pay_invoice", {"vendor": "acct_1", "amount_usd": 50}, {"known_payees": ["acct_1"]}, "allow", "within_threshold"),
        ("close_account", {"account": "a-1"}, {}, "deny", "human_only"),
        ("grant_access", {"user": "eve", "role": "admin"}, {}, "deny", "human_only"),
        (
            "grant_access",
            {"user": "eve", "role": "admin"},
            {"triggers": {"permission_change": {"action": "escalate", "approvers": 2}}},
            "escalate",
            "permission_change_review",
        ),
        ("merge_to_main", {"files": ["src/app.py"]}, {}, "deny", "pull_request_only"),
    ],
)
def test_a_custom_catalog_is_governed_by_class(
    bank_catalog: ToolCatalog, tool: str, args: dict[str, Any], settings: dict[str, Any], outcome: str, reason: str
) -> None:
    got, codes = _decide(bank_catalog, tool, args, **settings)
    assert (got, reason in codes) == (outcome, True), codes


def test_an_escalation_carries_the_approvers_the_tenant_chose(bank_catalog: ToolCatalog) -> None:
    pack = compile_pack(PackSource.from_dir(PACK_DIR), bank_catalog)
    tenant = TenantSettings.model_validate(
        {"allow_autonomous": True, "triggers": {"permission_change": {"action": "escalate", "approvers": 3}}}
    )
    call = Call(
        tenant_id="bank", task_id="t-1", tool="grant_access", args={"user": "eve", "role": "admin"}, proposer="a", mode="autonomous"
    )
    verdict = decide(pack, call, History(), Controls(tenant=tenant))
    assert verdict.facts["approvers_required"] == 3


def test_an_amount_in_fractions_of_a_cent_or_beyond_what_cents_hold_is_refused_whatever_the_tool(bank_catalog: ToolCatalog) -> None:
    # The bank's amount has no bounds in its schema: only the money guard and the pack stand between it and a decision.
    send = {"recipient_iban": "DE89370400440532013000"}
    assert _decide(bank_catalog, "send_money", {**send, "amount": 0.015}) == ("deny", ["invalid_args"])
    assert _decide(bank_catalog, "send_money", {**send, "amount": 10.123456789}) == ("deny", ["invalid_args"])
    assert _decide(bank_catalog, "send_money", {**send, "amount": 99.99}) == ("deny", ["new_payee_blocked"])  # decided by the pack
    # Beyond what 64-bit cents hold: refused for what it is, not failed in the pack (it was `policy_error`).
    assert _decide(bank_catalog, "send_money", {**send, "amount": 1e300}) == ("deny", ["invalid_args"])
    assert _decide(bank_catalog, "send_money", {**send, "amount": 1e12}) == ("deny", ["new_payee_blocked"])


def test_a_financial_tool_without_an_amount_fact_is_named_when_the_catalog_is_checked(bank_catalog: ToolCatalog) -> None:
    """`tidegate policy validate` and the policy service's start say which financial tools policy cannot read the amount of."""
    [warning] = unread_amount_warnings(bank_catalog.tools)
    assert warning.startswith("tool pay_vendor is financial but names no facts.amount")
    assert "amount_unknown" in warning
    assert unread_amount_warnings(ToolCatalog.load(REPO_ROOT / "catalog" / "tools").tools) == []  # the shipped catalog's all name it
