"""The tool catalog: the shipped YAML loads, a broken file is named, args are validated against the schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from servicekit import REPO_ROOT, CatalogError, ToolCatalog


def test_shipped_catalog_loads_with_every_risk_class() -> None:
    catalog = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
    assert {"issue_refund", "send_email", "delete_customer_data", "tag_ticket", "open_pull_request"} <= set(catalog)
    assert {t.risk.value for t in catalog.values()} >= {"read", "draft", "write_low", "financial", "destructive", "code_change"}


def test_args_are_checked_against_the_tools_schema() -> None:
    catalog = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
    assert catalog.arg_errors("issue_refund", {"payee_id": "cus_1", "amount_usd": 10, "order_id": "O-1"}) == []
    errors = catalog.arg_errors("issue_refund", {"payee_id": "cus_1", "amount_usd": -5, "extra": 1})
    assert any("amount_usd" in e for e in errors)
    assert any("order_id" in e for e in errors)
    assert any("extra" in e for e in errors)
    assert catalog.arg_errors("send_email", {"to": ["not-an-email"], "subject": "s", "body": "b"})


def test_a_broken_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: bad\nrisk: nonsense\nkind: python\n")
    with pytest.raises(CatalogError, match=r"bad\.yaml"):
        ToolCatalog.load(tmp_path)


def test_a_tool_declared_twice_is_refused(tmp_path: Path) -> None:
    text = (REPO_ROOT / "catalog" / "tools" / "tag_ticket.yaml").read_text()
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yaml").write_text(text)
    with pytest.raises(CatalogError, match="declared twice"):
        ToolCatalog.load(tmp_path)


def test_kind_specific_fields_are_required(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("name: x\ndescription: d\nrisk: read\nkind: http\nargs_schema: {type: object}\n")
    with pytest.raises(CatalogError, match="needs a url"):
        ToolCatalog.load(tmp_path)
