"""A tenant's directory names its own domains; a public suffix there would make every address under it internal.

An admin who adds `com` to `internal_domains` switched the external-recipient rule off for the whole world: an email to
`ceo@rival.com` was allowed without escalation. The approval API and `tidegate tenant` now refuse such an entry.
"""

from __future__ import annotations

import pytest
from fastapi import HTTPException
from typer.testing import CliRunner

from schemas import TenantDirectory
from servicekit.domains import domain_problem, domain_problems
from services.approval.tenants_api import checked
from tidegate.cli import app


@pytest.mark.parametrize("entry", ["acme.example", "mail.acme.co.uk", "ACME.example.", "xn--80ak6aa92e.com", "bücher.example"])
def test_a_registered_domain_or_a_host_under_one_is_taken(entry: str) -> None:
    assert domain_problem(entry) is None


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        ("com", "public suffix"),
        ("co.uk", "public suffix"),
        ("github.io", "public suffix"),  # the list's private section: anyone may own x.github.io
        ("example", "public suffix"),  # a bare top-level name
        ("@acme.example", "not a domain name"),
        ("ceo@acme.example", "not a domain name"),
        ("https://acme.example", "not a domain name"),
        ("acme.example/path", "not a domain name"),
        ("acme .example", "not a domain name"),
        ("-acme.example", "not a domain name"),
        ("", "not a domain name"),
    ],
)
def test_an_entry_that_is_not_a_domain_or_is_a_public_suffix_is_refused_by_name(entry: str, said: str) -> None:
    problem = domain_problem(entry)
    assert problem is not None
    assert said in problem
    assert repr(entry) in problem


def test_only_the_domain_lists_are_checked() -> None:
    lists = {"internal_domains": ["acme.example", "com"], "allowed_sites": ["github.io"], "known_payees": ["com"]}
    assert [p.split(":")[0] for p in domain_problems(lists)] == ["internal_domains", "allowed_sites"]


def test_the_approval_api_refuses_a_public_suffix_with_a_code_naming_the_entry() -> None:
    with pytest.raises(HTTPException) as refused:
        checked(TenantDirectory(internal_domains=["acme.example", "com"]))
    assert refused.value.status_code == 422
    assert refused.value.detail["code"] == "invalid_domain"
    assert "internal_domains: 'com' is a public suffix" in refused.value.detail["message"]
    assert checked(TenantDirectory(internal_domains=["acme.example"])).internal_domains == ["acme.example"]


def test_tidegate_tenant_refuses_it_in_one_line_before_anything_is_published() -> None:
    for command in (["tenant", "add", "newco", "--internal-domain", "com"], ["tenant", "set", "acme", "--site", "co.uk"]):
        refused = CliRunner().invoke(app, command, env={"COLUMNS": "300"})
        assert refused.exit_code == 2, refused.output
        assert refused.output.count("\n") == 1, refused.output
        assert "is a public suffix" in refused.output
