"""Every shipped tool that names a payee requires it: a call without one would count toward no payee's daily bound (money9 F1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from servicekit import REPO_ROOT, ToolCatalog

CATALOGS = [REPO_ROOT / "catalog" / "tools", REPO_ROOT / "examples" / "integrations" / "catalog"]


def _payee_args(catalog_dir: Path) -> list[tuple[str, str, list[str]]]:
    """(tool, the arg naming its payee, its schema's required args) for each tool of `catalog_dir` that declares a payee."""
    found = []
    for spec in ToolCatalog.load(catalog_dir).values():
        args = [spec.facts.payee] if spec.facts.payee else []
        args += [a for a, kind in spec.facts.counterparties.items() if kind == "payee"]
        found += [(spec.name, arg, list(spec.args_schema.get("required", []))) for arg in args]
    return found


@pytest.mark.parametrize("catalog_dir", CATALOGS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_a_tool_that_names_a_payee_requires_its_arg(catalog_dir: Path) -> None:
    payees = _payee_args(catalog_dir)
    assert payees, "no tool of this catalog names a payee: the test checks nothing"
    assert [(tool, arg) for tool, arg, required in payees if arg.split(".")[0] not in required] == []


def test_a_stripe_refund_without_its_payee_breaks_the_schema_and_one_with_stripes_own_id_does_not() -> None:
    catalog = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
    assert any("payee_id" in e for e in catalog.arg_errors("stripe_refund", {"charge_id": "ch_O5008", "amount_usd": 400}))
    assert catalog.arg_errors("stripe_refund", {"charge_id": "ch_O5008", "amount_usd": 400, "payee_id": "cus_NffrFeUfNV2Hib"}) == []
