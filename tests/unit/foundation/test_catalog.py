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


def test_a_read_tool_must_say_whether_its_output_is_untrusted(tmp_path: Path) -> None:
    read = "name: inbox\ndescription: d\nrisk: read\nkind: topic\nargs_schema: {type: object}\n"
    (tmp_path / "inbox.yaml").write_text(read)
    with pytest.raises(CatalogError, match=r"inbox\.yaml.*tool inbox: a read tool must declare `untrusted_output`"):
        ToolCatalog.load(tmp_path)
    (tmp_path / "inbox.yaml").write_text(read + "untrusted_output: false\n")
    assert not ToolCatalog.load(tmp_path)["inbox"].untrusted_output


@pytest.mark.parametrize(
    ("properties", "undeclared"),
    [
        ("{to: {type: string}, cc: {type: array, items: {type: string}}}", "'cc'"),
        ("{message: {type: object, properties: {bcc: {type: array, items: {type: string}}}}}", "'message.bcc'"),
        ("{hook: {type: string, format: uri}}", "'hook'"),
        ("{people: {type: array, items: {type: object, properties: {email: {type: string}}}}}", "'people.email'"),
        ("{contacts: {type: array, items: {type: string, format: email}}}", "'contacts'"),
    ],
)
def test_a_write_tool_must_declare_every_address_as_a_counterparty(tmp_path: Path, properties: str, undeclared: str) -> None:
    (tmp_path / "send.yaml").write_text(
        "name: send\ndescription: d\nrisk: write_low\nkind: topic\n"
        f"facts: {{counterparties: {{to: email}}}}\nargs_schema: {{type: object, properties: {properties}}}\n"
    )
    with pytest.raises(CatalogError, match=rf"tool send: arg {undeclared} looks like an address but is not a counterparty"):
        ToolCatalog.load(tmp_path)


def test_declared_addresses_and_drafts_load(tmp_path: Path) -> None:
    (tmp_path / "send.yaml").write_text(
        "name: send\ndescription: d\nrisk: write_low\nkind: topic\nfacts: {recipients: to, counterparties: {cc: email, hook: url}}\n"
        "args_schema: {type: object, properties: {to: {type: array}, cc: {type: string}, hook: {type: string, format: uri}}}\n"
    )
    # A draft reaches no one until a person sends it: its recipients need no declaration.
    (tmp_path / "draft.yaml").write_text(
        "name: draft\ndescription: d\nrisk: draft\nkind: topic\nargs_schema: {type: object, properties: {to: {type: string}}}\n"
    )
    assert set(ToolCatalog.load(tmp_path)) == {"send", "draft"}


def test_a_process_reading_the_catalog_again_checks_no_schema_twice_and_reads_yaml_with_libyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    """CI's owner: each service a test starts read all 40 files with PyYAML's pure-Python scanner and checked every schema
    against the 2020-12 meta-schema, ~1.4 s a read on CI's loaded runner (33 reads, 46 of 115 s in two test files)."""
    import jsonschema
    import yaml

    checked: list[object] = []
    check = jsonschema.Draft202012Validator.check_schema
    monkeypatch.setattr(jsonschema.Draft202012Validator, "check_schema", lambda schema: checked.append(schema) or check(schema))
    if yaml.__with_libyaml__:  # PyYAML's wheels are built with it
        monkeypatch.setattr(yaml.scanner.Scanner, "__init__", lambda self: pytest.fail("the pure-Python YAML scanner was used"))
    first = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
    again = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
    assert again == first
    assert len(checked) <= len({repr(spec.args_schema) for spec in first.values()})  # each schema once, whatever the reads


def test_a_schema_found_invalid_is_refused_at_every_read(tmp_path: Path) -> None:
    text = (REPO_ROOT / "catalog" / "tools" / "tag_ticket.yaml").read_text()
    (tmp_path / "bad.yaml").write_text(text.replace("minItems: 1", "minItems: -1", 1))
    for _ in range(2):
        with pytest.raises(CatalogError, match=r"bad\.yaml"):
            ToolCatalog.load(tmp_path)
